"""Handing a TCP socket's TLS 1.3 session to the kernel (kTLS), as tlshd does (spec §3.3).

The sequence: TCP_ULP "tls"; TLS_TX_MAX_PAYLOAD_LEN (SOL_TLS option 5) where the kernel
has it (ENOPROTOOPT, from a kernel without the option, is not fatal, unlike in tlshd 1.4);
then TLS_TX and TLS_RX with the crypto_info of the negotiated suite.
The structs come from <linux/tls.h> through cffi (csrc/ktls.cdef, quichsd._ktls).
"""
from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager

from .._ktls import ffi, lib
from ..tls.constants import CipherSuite
from .handshake import ApplicationKeys
from .record import MAX_PLAINTEXT, TrafficKeys

__all__ = ["KtlsError", "crypto_info", "forced_nodelay", "install_ktls"]

# Suite -> (crypto_info struct, TLS_CIPHER_* number); RFC 8446 §B.4 and <linux/tls.h>.
_LAYOUTS: dict[CipherSuite, tuple[str, int]] = {
    CipherSuite.AES_128_GCM_SHA256: ("struct tls12_crypto_info_aes_gcm_128 *", lib.TLS_CIPHER_AES_GCM_128),
    CipherSuite.AES_256_GCM_SHA384: ("struct tls12_crypto_info_aes_gcm_256 *", lib.TLS_CIPHER_AES_GCM_256),
    CipherSuite.CHACHA20_POLY1305_SHA256: (
        "struct tls12_crypto_info_chacha20_poly1305 *", lib.TLS_CIPHER_CHACHA20_POLY1305
    ),
}
_SALT_LEN = 4  # GCM and CCM: the IV's first 4 bytes are the salt, the other 8 the "iv"


class KtlsError(OSError):
    """kTLS could not be installed (tlshd reports EIO for every such failure)."""


def crypto_info(keys: TrafficKeys, sequence: int) -> bytes:
    """The TLS 1.3 crypto_info for one direction: version 0x0304, the cipher number, then
    iv, key, salt and the 8-byte big-endian sequence number of the next record."""
    layout = _LAYOUTS.get(keys.suite.suite)
    if layout is None:
        raise KtlsError(errno.EINVAL, f"no kTLS layout for {keys.suite.suite.name}")
    ctype, cipher = layout
    info = ffi.new(ctype)
    info.info.version = lib.TLS_1_3_VERSION
    info.info.cipher_type = cipher
    iv_field = len(info.iv)
    salt = keys.iv[:len(keys.iv) - iv_field]  # empty for ChaCha20-Poly1305
    if len(salt) not in (0, _SALT_LEN) or len(keys.key) != len(info.key):
        raise KtlsError(errno.EINVAL, "traffic key or IV of the wrong size for kTLS")
    ffi.memmove(info.iv, keys.iv[len(salt):], iv_field)
    ffi.memmove(info.key, keys.key, len(keys.key))
    if salt:
        ffi.memmove(info.salt, salt, len(salt))
    ffi.memmove(info.rec_seq, sequence.to_bytes(8, "big"), 8)
    return bytes(ffi.buffer(info))


def _setsockopt(sock: socket.socket, level: int, option: int, value: bytes | int, what: str) -> None:
    try:
        sock.setsockopt(level, option, value)
    except OSError as exc:
        raise KtlsError(exc.errno or errno.EIO, f"{what}: {_explain(exc)}") from exc


def _explain(exc: OSError) -> str:
    if exc.errno in (errno.EBADF, errno.ENOTSOCK):
        return "socket fd no longer valid"
    if exc.errno == errno.ENOENT:
        return "the kernel has no \"tls\" TCP ULP (module tls not loaded?)"
    if exc.errno in (errno.EINVAL, errno.ENOPROTOOPT):
        return "kernel does not support the requested algorithm"
    return exc.strerror or str(exc)


def install_ktls(sock: socket.socket, keys: ApplicationKeys, max_record: int = MAX_PLAINTEXT) -> bool:
    """Put the session's application keys into the kernel. KtlsError on failure; the socket
    is then in an unknown state and the caller's handshake has failed (EIO). Returns whether
    the kernel took TLS_TX_MAX_PAYLOAD_LEN (6.12 does not have it: ENOPROTOOPT)."""
    tx, rx = crypto_info(keys.tx, keys.tx_sequence), crypto_info(keys.rx, keys.rx_sequence)
    _setsockopt(sock, socket.IPPROTO_TCP, lib.TCP_ULP, b"tls", "TCP_ULP tls")
    # tlshd: the maximum send size minus 1 for TLS 1.3 (the inner content type byte).
    limited = True
    try:
        sock.setsockopt(lib.SOL_TLS, lib.QUICHSD_TLS_TX_MAX_PAYLOAD_LEN, struct.pack("=H", max_record - 1))
    except OSError as exc:
        if exc.errno != errno.ENOPROTOOPT:
            raise KtlsError(exc.errno or errno.EIO, f"TLS_TX_MAX_PAYLOAD_LEN: {_explain(exc)}") from exc
        limited = False
    _setsockopt(sock, lib.SOL_TLS, lib.TLS_TX, tx, "TLS_TX")
    _setsockopt(sock, lib.SOL_TLS, lib.TLS_RX, rx, "TLS_RX")
    return limited


@contextmanager
def forced_nodelay(sock: socket.socket) -> Iterator[None]:
    """TCP_NODELAY on for the handshake, the consumer's value back afterwards (spec §3.3)."""
    saved = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        yield
    finally:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, saved)
