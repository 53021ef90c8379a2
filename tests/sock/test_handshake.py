"""Our client against our server over real sockets (the simulation here; the kernel in QEMU)."""
from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
import time
from typing import Any

import pytest

from quichsd import (
    HandshakeConfig,
    HandshakeError,
    HandshakeResult,
    QuicSocket,
    abi,
    quic_client_handshake,
    quic_handshake,
)
from quichsd.handshake import read_psk_file
from quichsd.sock import QuicSocketBackend
from quichsd.tls.config import ClientAuth, Credentials
from quichsd.tls.constants import CryptoLevel, NamedGroup
from tests.pki import leaf
from tests.sockets import BACKENDS, client_socket, echo_upper

pytestmark = pytest.mark.parametrize("backend", BACKENDS)


def server_config(pki, **kw) -> HandshakeConfig:
    base = dict(server=True, alpns=["h3"], cert_file=pki.cert_file, key_file=pki.key_file, timeout=5)
    base.update(kw)
    return HandshakeConfig(**base)


def client_config(pki, **kw) -> HandshakeConfig:
    base = dict(alpns=["h3"], hostname="localhost", cafile=pki.ca_file, timeout=5)
    base.update(kw)
    return HandshakeConfig(**base)


def completed(outcome: Any) -> HandshakeResult:
    """A server's handshake outcome that must be a result. A client that closes right after
    its handshake may have closed before the server installed its 1-RTT receive key (the
    kernel then reports EPIPE there, spec §9): the result still comes, maybe peer_closed."""
    assert isinstance(outcome, HandshakeResult), f"the server's handshake failed: {outcome!r}"
    return outcome


class HoldsTheClientFlight:
    """A server connection whose handshake reads the client's Handshake-level flight (its
    Finished) only after `release` is set and `settle` seconds more: the client's
    CONNECTION_CLOSE has arrived by then and waits for the 1-RTT receive key."""

    def __init__(self, conn: QuicSocket, release: threading.Event, settle: float = 0.5) -> None:
        self._conn, self._release, self._settle = conn, release, settle
        self._held = False

    def recv_item(self, bufsize: int, flags: int = 0) -> Any:
        item = self._conn.recv_item(bufsize, flags)
        if item.kind == "HANDSHAKE" and item.level == CryptoLevel.HANDSHAKE and not self._held:
            self._held = True
            assert self._release.wait(5)
            time.sleep(self._settle)
        return item

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


QuicSocketBackend.register(HoldsTheClientFlight)  # a backend by delegation


def test_full_handshake_and_data(backend, pki, server_factory) -> None:
    srv = server_factory(backend, server_config(pki), after=echo_upper)
    with client_socket(backend, srv.address) as sock:
        result = quic_handshake(sock, client_config(pki))
        assert result.alpn == "h3" and not result.resumed
        assert result.peer_certificates[0].subject.rfc4514_string() == "CN=localhost"
        sock.settimeout(5)
        sock.send(b"hello", -1, new=True, fin=True)
        data, _, fin = sock.recv()
        assert data == b"HELLO" and fin
    (server_result,) = srv.wait()
    assert server_result.alpn == "h3"


def test_libquic_style_call_with_psk_file(backend, tmp_path, server_factory) -> None:
    psk = tmp_path / "psk.txt"
    psk.write_text("client1:" + os.urandom(32).hex() + "\n")
    config = HandshakeConfig(server=True, alpns=["smb"], psks=read_psk_file(psk), timeout=5)
    srv = server_factory(backend, config, alpn=b"smb")
    with client_socket(backend, srv.address) as sock:
        result = quic_client_handshake(sock, str(psk), None, "smb", timeout=5)
    assert result.psk_identity == b"client1" and not result.peer_closed
    assert completed(srv.wait()[0]).psk_identity == b"client1"


@pytest.mark.parametrize("auth", ["psk", "certificate"])
def test_server_keeps_a_completed_handshake_whose_client_closed_at_once(backend, pki, tmp_path,
                                                                        server_factory, auth) -> None:
    """The client closes as soon as its handshake returns, before the server has installed
    its 1-RTT receive key: that install replays the client's CONNECTION_CLOSE and fails with
    EPIPE (spec §9). TLS had completed (the client's Finished verified), so the server gets
    its result, with peer_closed, and what it learnt about the client."""
    closed = threading.Event()
    if auth == "psk":
        psk = tmp_path / "psk.txt"
        psk.write_text("client1:" + os.urandom(32).hex() + "\n")
        # No ticket to send: the key install is the one step left to report the close.
        server = HandshakeConfig(server=True, alpns=["smb"], psks=read_psk_file(psk), session_tickets=False,
                                 timeout=10)
        client = HandshakeConfig(alpns=["smb"], psks=read_psk_file(psk), timeout=10)
    else:
        ccert, ckey = leaf("ed25519", "client")
        server = server_config(pki, alpns=["smb"], client_auth=ClientAuth.REQUIRED, cafile=pki.ca_file,
                               timeout=10)
        client = client_config(pki, alpns=["smb"], credentials=Credentials([ccert], ckey), timeout=10)
    srv = server_factory(backend, server, alpn=b"smb", wrap=lambda conn: HoldsTheClientFlight(conn, closed))
    with client_socket(backend, srv.address) as sock:
        mine = quic_handshake(sock, client)
    closed.set()  # its CONNECTION_CLOSE has left
    assert mine.alpn == "smb" and not mine.peer_closed
    (theirs,) = srv.wait(timeout=15)
    theirs = completed(theirs)
    assert theirs.peer_closed and theirs.alpn == "smb"
    if auth == "psk":
        assert theirs.psk_identity == b"client1" and not theirs.peer_certificates
    else:
        assert theirs.peer_certificates[0].subject.rfc4514_string() == "CN=client"
    assert not srv.errors


class KernelStyleServer:
    """A server connection driven as on a kernel socket (batch() a no-op), with its
    handshake sends recorded: (level, MSG_MORE set)."""

    batches_output = False

    def __init__(self, conn: QuicSocket) -> None:
        self._conn = conn
        self.sends: list[tuple[int, bool]] = []

    def send_handshake(self, level: int, data: bytes, flags: int = 0) -> int:
        self.sends.append((level, bool(flags & 0x8000)))
        return self._conn.send_handshake(level, data, flags)

    def batch(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


QuicSocketBackend.register(KernelStyleServer)  # a backend by delegation


@pytest.mark.parametrize("auth", ["psk", "certificate"])
def test_kernel_style_server_sends_its_server_hello_first(backend, pki, tmp_path, server_factory,
                                                          auth) -> None:
    """On a kernel socket the server's ServerHello goes out on its own (flushed), ahead of
    the rest of its flight (TlsConfig.server_hello_first), so the client can work on it
    meanwhile; the handshake completes as before."""
    wrapped: list[KernelStyleServer] = []

    def wrap(conn: QuicSocket) -> KernelStyleServer:
        wrapped.append(KernelStyleServer(conn))
        return wrapped[-1]

    if auth == "psk":
        psk = tmp_path / "psk.txt"
        psk.write_text("client1:" + os.urandom(32).hex() + "\n")
        server = HandshakeConfig(server=True, alpns=["h3"], psks=read_psk_file(psk), timeout=5)
        client = HandshakeConfig(alpns=["h3"], psks=read_psk_file(psk), timeout=5)
    else:
        server, client = server_config(pki), client_config(pki)
    srv = server_factory(backend, server, wrap=wrap)
    with client_socket(backend, srv.address) as sock:
        mine = quic_handshake(sock, client)
    theirs = completed(srv.wait()[0])
    assert mine.cipher_suite == theirs.cipher_suite and not srv.errors
    assert wrapped[0].sends[:2] == [(int(CryptoLevel.INITIAL), False), (int(CryptoLevel.HANDSHAKE), False)]


def test_on_wait_is_called_once_when_the_first_flight_is_out(backend, pki, server_factory) -> None:
    """HandshakeConfig.on_wait: once, after the first flight left and before the handshake
    waits for the peer (a client: after its ClientHello; a server: after its flight)."""
    server_calls: list[int] = []
    srv = server_factory(backend, server_config(pki, on_wait=lambda: server_calls.append(1)))
    client_calls: list[int] = []
    with client_socket(backend, srv.address) as sock:
        quic_handshake(sock, client_config(pki, on_wait=lambda: client_calls.append(1)))
    completed(srv.wait()[0])
    assert client_calls == [1] and server_calls == [1]


def test_hello_retry_request(backend, pki, server_factory) -> None:
    """The client's one key share is x25519; a P-384-only server asks again."""
    srv = server_factory(backend, server_config(pki, groups=[NamedGroup.SECP384R1]))
    with client_socket(backend, srv.address) as sock:
        result = quic_handshake(sock, client_config(pki))
    assert result.group == NamedGroup.SECP384R1


def test_resumption_with_0rtt_accepted(backend, pki, server_factory) -> None:
    srv = server_factory(backend, server_config(pki, early_data=True), after=echo_upper)
    with client_socket(backend, srv.address) as sock:
        first = quic_handshake(sock, client_config(pki, ticket_wait=3))
    assert first.session_data
    with client_socket(backend, srv.address) as sock:
        second = quic_handshake(sock, client_config(pki, session_data=first.session_data, early_data=True,
                                                    early_stream_data=b"early"))
        assert second.resumed and second.early_data_accepted
        sock.settimeout(5)
        data, _, _ = sock.recv()
        assert data == b"EARLY"


def test_0rtt_replay_refused_on_a_later_connection(backend, pki, server_factory) -> None:
    """RFC 8446 §8.1: one ticket, two resumptions offering 0-RTT; only the first gets it,
    though the driver builds a TlsConfig per handshake."""
    srv = server_factory(backend, server_config(pki, early_data=True), after=echo_upper)
    with client_socket(backend, srv.address) as sock:
        first = quic_handshake(sock, client_config(pki, ticket_wait=3))
    accepted = []
    for payload in (b"once", b"twice"):
        with client_socket(backend, srv.address) as sock:
            again = quic_handshake(sock, client_config(pki, session_data=first.session_data, early_data=True,
                                                       early_stream_data=payload))
            assert again.resumed
            accepted.append(again.early_data_accepted)
            sock.settimeout(5)
            data, _, _ = sock.recv()  # refused early data is retransmitted in 1-RTT
            assert data == payload.upper()
    assert accepted == [True, False]


def test_0rtt_rejected_still_resumes(backend, pki, server_factory) -> None:
    srv = server_factory(backend, server_config(pki, early_data=False), after=echo_upper)
    with client_socket(backend, srv.address) as sock:
        first = quic_handshake(sock, client_config(pki, ticket_wait=3))
    with client_socket(backend, srv.address) as sock:
        second = quic_handshake(sock, client_config(pki, session_data=first.session_data, early_data=True,
                                                    early_stream_data=b"again"))
        assert second.resumed and not second.early_data_accepted
        sock.settimeout(5)
        data, _, _ = sock.recv()  # the early data is retransmitted in 1-RTT
        assert data == b"AGAIN"


def test_alpn_mismatch_closes_with_no_application_protocol(backend, pki, server_factory) -> None:
    srv = server_factory(backend, server_config(pki, alpns=["h3"]))
    with client_socket(backend, srv.address) as sock:
        # The listener takes h3 only; the server's handshake offers h3 only, the client smb.
        sock.setsockopt(abi.lib.QUIC_SOCKOPT_ALPN, b"smb")
        with pytest.raises(HandshakeError) as err:
            quic_handshake(sock, client_config(pki, alpns=["smb"], timeout=2))
    if backend == "kernel":
        # spec §2.7, §9: no listener offers smb, so the hello is dropped without a word.
        assert err.value.errno == errno.ETIMEDOUT
    else:
        # The simulation's endpoint refuses it statelessly: no_application_protocol (README).
        assert err.value.errno == errno.EACCES and err.value.alert.name == "no_application_protocol"
        assert "0x178" in str(err.value)


def test_server_side_alpn_failure_is_0x178_on_the_wire(backend, pki, server_factory) -> None:
    srv = server_factory(backend, server_config(pki, alpns=["other"]))
    with client_socket(backend, srv.address) as sock:
        with pytest.raises(HandshakeError) as err:
            quic_handshake(sock, client_config(pki, timeout=3))
        info = abi.unpack_connection_close(sock.getsockopt(abi.lib.QUIC_SOCKOPT_CONNECTION_CLOSE, 72))
    if backend == "kernel":
        assert info.errcode == 0x0C  # the kernel always closes a handshake with APPLICATION_ERROR
    else:
        assert info.errcode == 0x100 + 120  # no_application_protocol
        assert err.value.errno == errno.EACCES and err.value.alert.name == "no_application_protocol"
    (server_err,) = srv.wait()
    assert server_err.alert.name == "no_application_protocol"


def test_unknown_ca_fails_with_eacces(backend, pki, server_factory, tmp_path) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    from tests.pki import make_ca

    other = tmp_path / "other.pem"
    other.write_bytes(make_ca("another CA").cert.public_bytes(Encoding.PEM))
    srv = server_factory(backend, server_config(pki))
    with client_socket(backend, srv.address) as sock, pytest.raises(HandshakeError) as err:
        quic_handshake(sock, client_config(pki, cafile=str(other)))
    assert err.value.errno == errno.EACCES and err.value.alert.name == "unknown_ca"
    server_err = srv.wait()[0]
    assert isinstance(server_err, HandshakeError)


def test_client_certificate_required(backend, pki, server_factory) -> None:
    ccert, ckey = leaf("ed25519", "client")
    srv = server_factory(backend, server_config(pki, client_auth=ClientAuth.REQUIRED, cafile=pki.ca_file))
    with client_socket(backend, srv.address) as sock:
        quic_handshake(sock, client_config(pki, credentials=Credentials([ccert], ckey)))
    assert completed(srv.wait()[0]).peer_certificates[0].subject.rfc4514_string() == "CN=client"


def test_silent_peer_times_out(backend, pki) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        with client_socket(backend, silent.getsockname()) as sock:
            start = time.monotonic()
            with pytest.raises(HandshakeError) as err:
                quic_handshake(sock, client_config(pki, timeout=1.0))
            assert time.monotonic() - start < 3
        assert err.value.errno == errno.ETIMEDOUT
    finally:
        silent.close()


def test_v2(backend, pki, server_factory) -> None:
    srv = server_factory(backend, server_config(pki))
    sock = QuicSocket(socket.AF_INET, backend=backend)
    sock.setsockopt(abi.lib.QUIC_SOCKOPT_CONFIG, abi.pack_config(version=abi.lib.QUIC_VERSION_V2))
    sock.connect(srv.address)
    with sock:
        quic_handshake(sock, client_config(pki))
    assert completed(srv.wait()[0]).alpn == "h3"


def test_asyncio_form(backend, pki, server_factory) -> None:
    import asyncio

    from quichsd import aio

    srv = server_factory(backend, server_config(pki))

    async def main():
        with client_socket(backend, srv.address) as sock:
            # Another task keeps running while the handshake is awaited.
            ticks = 0

            async def ticker():
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.001)

            task = asyncio.create_task(ticker())
            result = await aio.client_handshake(sock, None, "localhost", "h3", cafile=pki.ca_file, timeout=5)
            task.cancel()
            return result, ticks

    result, ticks = asyncio.run(main())
    assert result.alpn == "h3" and ticks > 0


def test_the_callers_timeout_is_left_as_it_was(backend, pki, server_factory) -> None:
    srv = server_factory(backend, server_config(pki))
    with client_socket(backend, srv.address) as sock:
        sock.settimeout(42.0)
        quic_handshake(sock, client_config(pki))
        assert sock.gettimeout() == 42.0


def test_key_log_files_are_written_by_the_driver(backend, pki, server_factory, tmp_path) -> None:
    """keylog_file: the engine emits the lines as events and the driver writes them to a
    0600 file; both ends log the same five secrets of a full handshake."""
    server_log, client_log = tmp_path / "server.keys", tmp_path / "client.keys"
    srv = server_factory(backend, server_config(pki, keylog_file=str(server_log)))
    with client_socket(backend, srv.address) as sock:
        quic_handshake(sock, client_config(pki, keylog_file=str(client_log)))
    completed(srv.wait()[0])
    client_lines = client_log.read_text().splitlines()
    assert [line.split()[0] for line in client_lines] == [
        "CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
        "EXPORTER_SECRET", "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0",
    ]
    assert sorted(server_log.read_text().splitlines()) == sorted(client_lines)
    for path in (server_log, client_log):
        assert os.stat(path).st_mode & 0o777 == 0o600
