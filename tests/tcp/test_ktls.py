"""kTLS install (quichsd/tcp/ktls.py): the TLS 1.3 crypto_info layouts as compiled from
<linux/tls.h> (quichsd._ktls), the bytes we fill in, TCP_NODELAY handling, and the error
on a kernel without the "tls" ULP (this host; the real install runs in the QEMU guest)."""
from __future__ import annotations

import errno
import socket
import struct
from pathlib import Path

import pytest

from quichsd._ktls import ffi, lib
from quichsd.tcp.handshake import ApplicationKeys
from quichsd.tcp.ktls import KtlsError, crypto_info, forced_nodelay, install_ktls
from quichsd.tcp.record import TrafficKeys
from quichsd.tls.constants import CipherSuite
from quichsd.tls.suites import SUITES

# struct name -> (size, cipher number), as <linux/tls.h> and tlshd-behaviour §3.3 give them.
LAYOUTS = {
    "aes_gcm_128": (40, 51),
    "aes_gcm_256": (56, 52),
    "aes_ccm_128": (40, 53),
    "chacha20_poly1305": (56, 54),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_struct_sizes_and_cipher_numbers(name: str) -> None:
    size, number = LAYOUTS[name]
    assert ffi.sizeof(f"struct tls12_crypto_info_{name}") == size
    assert getattr(lib, f"TLS_CIPHER_{name.upper()}") == number


def test_constants() -> None:
    assert (lib.TLS_1_3_VERSION, lib.SOL_TLS, lib.TCP_ULP, lib.TLS_TX, lib.TLS_RX) == (0x0304, 282, 31, 1, 2)
    assert lib.QUICHSD_TLS_TX_MAX_PAYLOAD_LEN == 5
    assert (lib.TLS_SET_RECORD_TYPE, lib.TLS_GET_RECORD_TYPE) == (1, 2)


def _keys(suite: CipherSuite) -> TrafficKeys:
    info = SUITES[suite]
    return TrafficKeys(info, bytes(range(1, info.key_len + 1)), bytes(range(0xA0, 0xAC)))


@pytest.mark.parametrize(
    ("suite", "cipher", "key_len"),
    [(CipherSuite.AES_128_GCM_SHA256, 51, 16), (CipherSuite.AES_256_GCM_SHA384, 52, 32)],
)
def test_gcm_info_splits_the_iv_into_salt_and_iv(suite: CipherSuite, cipher: int, key_len: int) -> None:
    keys = _keys(suite)
    raw = crypto_info(keys, 0x0102030405060708)
    version, number = struct.unpack_from("=HH", raw)
    assert (version, number) == (0x0304, cipher)
    # iv (8) = the IV's last 8 bytes, key, salt (4) = the IV's first 4 bytes, rec_seq big-endian.
    assert raw[4:12] == keys.iv[4:]
    assert raw[12:12 + key_len] == keys.key
    assert raw[12 + key_len:16 + key_len] == keys.iv[:4]
    assert raw[16 + key_len:] == bytes.fromhex("0102030405060708")


def test_chacha_info_has_the_whole_iv_and_no_salt() -> None:
    keys = _keys(CipherSuite.CHACHA20_POLY1305_SHA256)
    raw = crypto_info(keys, 0)
    assert len(raw) == 56 and struct.unpack_from("=HH", raw) == (0x0304, 54)
    assert raw[4:16] == keys.iv and raw[16:48] == keys.key and raw[48:] == bytes(8)


def _connected_tcp() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


def test_nodelay_is_forced_then_restored() -> None:
    client, server = _connected_tcp()
    with client, server:
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        with forced_nodelay(client):
            assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0


def _tls_ulp_available() -> bool:
    try:
        return "tls" in Path("/proc/sys/net/ipv4/tcp_available_ulp").read_text().split()
    except OSError:
        return False


@pytest.mark.skipif(_tls_ulp_available(), reason="this kernel has the tls ULP: the guest test covers install")
def test_install_without_the_tls_ulp_is_a_clear_error() -> None:
    keys = _keys(CipherSuite.AES_128_GCM_SHA256)
    client, server = _connected_tcp()
    with client, server:
        with pytest.raises(KtlsError) as exc:
            install_ktls(client, ApplicationKeys(keys.suite, keys, 0, keys, 0))
        assert exc.value.errno == errno.ENOENT
        assert "TCP_ULP tls" in str(exc.value) and "no \"tls\" TCP ULP" in str(exc.value)
