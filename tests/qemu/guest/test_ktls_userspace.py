"""kTLS on the real kernel (QEMU guest), userspace end to end: a client and a server on one
loopback TCP connection do our TLS 1.3 handshake (quichsd/tcp/handshake.py), install kTLS
on both sockets (quichsd/tcp/ktls.py), then send data both ways with plain send/recv
through the kernel's record layer, for each AEAD. Also: how this kernel's kTLS hands over a
post-handshake message (a NewSessionTicket after install, a KeyUpdate) to the reader.
"""
from __future__ import annotations

import errno
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from quichsd._ktls import lib
from quichsd.hkdf import hkdf_expand_label
from quichsd.tcp.handshake import ApplicationKeys, TcpTlsHandshake
from quichsd.tcp.ktls import forced_nodelay, install_ktls
from quichsd.tcp.record import ContentType, RecordProtection, TrafficKeys
from quichsd.tls.client import ClientEngine
from quichsd.tls.config import TlsConfig
from quichsd.tls.constants import CipherSuite, CryptoLevel, Direction
from quichsd.tls.events import InstallSecret
from quichsd.tls.server import ServerEngine
from tests.qemu.guest.kernel import modprobe
from tests.tcp.tlstcp import ALL_SUITES, client_config, server_config

DATA = 256 * 1024  # many 16 KiB records each way
TIMEOUT = 20.0
HANDSHAKE_RECORD = 22


@pytest.fixture(scope="module", autouse=True)
def tls_module() -> None:
    try:
        modprobe("tls")
    except Exception as exc:  # the guest's modprobe helper failed: say so
        pytest.skip(f"modprobe tls failed: {exc}")


@dataclass
class Pair:
    client: socket.socket
    server: socket.socket
    client_keys: ApplicationKeys
    server_keys: ApplicationKeys


@pytest.fixture
def pair_factory() -> Iterator[object]:
    sockets: list[socket.socket] = []

    def make(server_cfg: TlsConfig, client_cfg: TlsConfig) -> Pair:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            client = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
            server, _ = listener.accept()
        sockets.extend((client, server))
        result: dict[str, object] = {}

        def serve() -> None:
            try:
                with forced_nodelay(server):
                    hs = TcpTlsHandshake(server, ServerEngine(server_cfg))
                    hs.run(TIMEOUT)
                result["keys"] = hs.keys
            except Exception as exc:
                result["error"] = exc

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with forced_nodelay(client):
            hs = TcpTlsHandshake(client, ClientEngine(client_cfg))
            hs.run(TIMEOUT)
        thread.join(TIMEOUT)
        assert "error" not in result, result.get("error")
        server_keys = result["keys"]
        assert isinstance(server_keys, ApplicationKeys) and hs.keys is not None
        return Pair(client, server, hs.keys, server_keys)

    yield make
    for sock in sockets:
        sock.close()


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks: list[bytes] = []
    got = 0
    while got < n:
        chunk = sock.recv(min(65536, n - got))
        if not chunk:
            raise EOFError(f"EOF after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _both_ways(a: socket.socket, b: socket.socket, n: int = DATA) -> None:
    """n random bytes from a to b and n others from b to a at once, checked intact."""
    to_b, to_a = os.urandom(n), os.urandom(n)
    got: dict[str, bytes | BaseException] = {}

    def reader(name: str, sock: socket.socket) -> None:
        try:
            got[name] = _recv_exactly(sock, n)
        except BaseException as exc:
            got[name] = exc

    threads = [threading.Thread(target=reader, args=("b", b), daemon=True),
               threading.Thread(target=reader, args=("a", a), daemon=True)]
    for t in threads:
        t.start()
    a.sendall(to_b)
    b.sendall(to_a)
    for t in threads:
        t.join(TIMEOUT)
    assert got.get("b") == to_b, "client -> server data not intact"
    assert got.get("a") == to_a, "server -> client data not intact"


def _ulp(sock: socket.socket) -> bytes:
    return sock.getsockopt(socket.IPPROTO_TCP, lib.TCP_ULP, 16).rstrip(b"\0")


@pytest.mark.parametrize("suite", ALL_SUITES, ids=lambda s: s.name)
def test_ktls_both_ways(pair_factory, suite: CipherSuite) -> None:  # type: ignore[no-untyped-def]
    pair = pair_factory(server_config(suites=[suite]), client_config(suites=[suite]))
    assert pair.client_keys.suite.suite == suite
    limited = install_ktls(pair.client, pair.client_keys)
    if os.uname().release.startswith("6.12."):
        assert limited is False  # no TLS_TX_MAX_PAYLOAD_LEN (SOL_TLS 5) yet: ENOPROTOOPT, not fatal
    install_ktls(pair.server, pair.server_keys)
    assert _ulp(pair.client) == _ulp(pair.server) == b"tls"
    _both_ways(pair.client, pair.server)


def test_ktls_psk(pair_factory) -> None:  # type: ignore[no-untyped-def]
    from tests.tcp.tlstcp import PSK_KEY

    pair = pair_factory(server_config(psk=PSK_KEY), client_config(psk=PSK_KEY))
    install_ktls(pair.client, pair.client_keys)
    install_ktls(pair.server, pair.server_keys)
    _both_ways(pair.client, pair.server)


def _recv_record_type(sock: socket.socket) -> tuple[int | None, bytes]:
    data, ancdata, _flags, _addr = sock.recvmsg(65536, socket.CMSG_SPACE(1))
    types = [c[2][0] for c in ancdata if c[0] == lib.SOL_TLS and c[1] == lib.TLS_GET_RECORD_TYPE]
    return (types[0] if types else None), data


def test_new_session_ticket_after_install_reaches_the_reader_as_a_handshake_record(pair_factory) -> None:  # type: ignore[no-untyped-def]
    # Our server issues a ticket right after the client's Finished, under its application
    # key: the server's kTLS TX starts at sequence 1, the client's RX at 0 (the ticket).
    pair = pair_factory(server_config(session_ticket_key=os.urandom(64)), client_config())
    assert (pair.server_keys.tx_sequence, pair.client_keys.rx_sequence) == (1, 0)
    install_ktls(pair.client, pair.client_keys)
    install_ktls(pair.server, pair.server_keys)
    pair.server.sendall(b"after the ticket")
    # A plain recv does not return a non-data record: EIO (Documentation/networking/tls.rst).
    with pytest.raises(OSError) as exc:
        pair.client.recv(65536)
    assert exc.value.errno == errno.EIO
    record_type, body = _recv_record_type(pair.client)
    assert record_type == HANDSHAKE_RECORD and body[:1] == b"\x04"  # NewSessionTicket
    # The next record decrypts under sequence 1: data flows on.
    assert _recv_exactly(pair.client, 16) == b"after the ticket"
    _both_ways(pair.client, pair.server, 64 * 1024)


def test_key_update_is_handed_to_the_reader_not_acted_on(pair_factory) -> None:  # type: ignore[no-untyped-def]
    pair = pair_factory(server_config(), client_config())
    install_ktls(pair.client, pair.client_keys)
    install_ktls(pair.server, pair.server_keys)
    key_update = b"\x18\x00\x00\x01\x00"  # KeyUpdate(update_not_requested), RFC 8446 §4.6.3
    pair.server.sendmsg([key_update], [(lib.SOL_TLS, lib.TLS_SET_RECORD_TYPE, bytes((HANDSHAKE_RECORD,)))])
    pair.server.sendall(b"same keys still")
    record_type, body = _recv_record_type(pair.client)
    assert (record_type, body) == (HANDSHAKE_RECORD, key_update)
    # The server's kernel did not change its key: the next record opens under the old one.
    assert _recv_exactly(pair.client, 15) == b"same keys still"


class SecretKeeper(TcpTlsHandshake):
    """The handshake driver, keeping the application send secret (for a KeyUpdate)."""

    app_send_secret = b""

    def _install(self, event: InstallSecret) -> None:
        if event.level == CryptoLevel.APP and event.direction == Direction.SEND:
            self.app_send_secret = event.secret
        super()._install(event)


def test_a_real_key_update_from_the_peer(tls_module: None) -> None:
    """The server (userspace records) sends KeyUpdate, then data under its next key
    (RFC 8446 §7.2); the client reads through kTLS, which on 6.12 has no rekey support."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
        server, _ = listener.accept()
    with client, server:
        keeper = SecretKeeper(server, ServerEngine(server_config()))
        thread = threading.Thread(target=keeper.run, args=(TIMEOUT,), daemon=True)
        thread.start()
        hs = TcpTlsHandshake(client, ClientEngine(client_config()))
        hs.run(TIMEOUT)
        thread.join(TIMEOUT)
        assert hs.keys is not None and keeper.keys is not None and keeper.app_send_secret
        install_ktls(client, hs.keys)
        suite = keeper.keys.suite
        old = RecordProtection(keeper.keys.tx, keeper.keys.tx_sequence)
        server.sendall(old.seal(ContentType.APPLICATION_DATA, b"before"))
        server.sendall(old.seal(ContentType.HANDSHAKE, b"\x18\x00\x00\x01\x00"))
        next_secret = hkdf_expand_label(suite.hash_algorithm, keeper.app_send_secret, b"traffic upd", b"",
                                        suite.hash_len)
        new = RecordProtection(TrafficKeys.from_secret(suite, next_secret))
        server.sendall(new.seal(ContentType.APPLICATION_DATA, b"after"))
        assert _recv_exactly(client, 6) == b"before"
        record_type, body = _recv_record_type(client)
        assert (record_type, body) == (HANDSHAKE_RECORD, b"\x18\x00\x00\x01\x00")
        with pytest.raises(OSError) as exc:
            client.recv(100)
        # 6.12: the kernel kept the old key, so the record under the new one fails.
        assert exc.value.errno == errno.EBADMSG, f"{exc.value!r}"
