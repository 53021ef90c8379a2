"""accept() of a connection whose peer closed before accept() returned (kernel-quic-abi §9):
the kernel hands it out, and getpeername() on it fails with ENOTCONN. accept() still
returns it with the peer's address, and no server dies of it."""
from __future__ import annotations

import errno
import socket
import threading
import time
from typing import Any

import pytest

from quichsd import HandshakeConfig, HandshakeError, QuicSocket, abi, quic_handshake
from quichsd.sock.kernel import KernelQuicSocket
from quichsd.tls.client import ClientEngine
from quichsd.tls.config import TlsConfig
from quichsd.tls.constants import CryptoLevel
from tests.sockets import BACKENDS, client_socket

per_backend = pytest.mark.parametrize("backend", BACKENDS)
L = abi.lib


def server_config(pki) -> HandshakeConfig:
    return HandshakeConfig(server=True, alpns=["h3"], cert_file=pki.cert_file, key_file=pki.key_file,
                           timeout=5)


def client_config(pki) -> HandshakeConfig:
    return HandshakeConfig(alpns=["h3"], hostname="localhost", cafile=pki.ca_file, timeout=10)


def hello_then_close(backend: str, address: Any, settle: float = 0.5) -> int:
    """A client that sends its ClientHello and closes at once (a CONNECTION_CLOSE at
    Initial level follows); returns its port once both have had time to arrive."""
    with client_socket(backend, address) as sock:
        tp = sock.getsockopt(L.QUIC_SOCKOPT_TRANSPORT_PARAM_EXT, 512)
        (hello,) = ClientEngine(TlsConfig(alpn_protocols=[b"h3"], verify_peer=False,
                                          transport_parameters=tp)).start()
        sock.send_handshake(CryptoLevel.INITIAL, hello.data, 0)
        port = sock.getsockname()[1]
    # A fixed wait, for want of an event: nothing on the listener shows the close arrived
    # without accepting, and accept() must come after it. The kernel parks both packets
    # on a request sock and reads them only inside accept() (spec §1, server flow); the
    # listener polls readable as soon as that exists, at the ClientHello (lxin/quic
    # protocol.c quic_poll); the close left the client in its close() call, seen by no one.
    time.sleep(settle)
    return port


@per_backend
def test_accept_returns_a_connection_the_peer_closed_with_its_address(backend, pki) -> None:
    listener = QuicSocket(socket.AF_INET, backend=backend)
    listener.setsockopt(L.QUIC_SOCKOPT_ALPN, b"h3")
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(5)
    with listener:
        port = hello_then_close(backend, listener.getsockname()[:2])
        conn, peer = listener.accept()
        with conn:
            assert peer is not None and peer[1] == port
            with pytest.raises(OSError) as info:
                conn.getpeername()
            assert info.value.errno == errno.ENOTCONN
            with pytest.raises(HandshakeError):
                quic_handshake(conn, server_config(pki))


def test_kernel_accept_keeps_the_address_the_accept_call_reported() -> None:
    """KernelQuicSocket.accept() reads the peer's address from accept4 itself (what a
    closed QUIC connection still reports, where getpeername() fails); shown on TCP, which
    every kernel has."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as raw, socket.socket() as client:
        listener = KernelQuicSocket(sock=raw)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(5)
        client.connect(listener.getsockname())
        conn = listener.accept()
        with conn:
            assert conn.accepted_peer == client.getsockname()
        listener.settimeout(None)
        with socket.socket() as other:
            other.connect(listener.getsockname())
            with listener.accept() as conn:
                assert conn.accepted_peer == other.getsockname()


class GatedAccept:
    """QuicSocket.accept, held until `open` is set: the client's close is there first."""

    def __init__(self, monkeypatch) -> None:
        self.open = threading.Event()
        real = QuicSocket.accept

        def accept(sock: QuicSocket) -> Any:
            if not self.open.wait(10):
                raise TimeoutError("gate")
            return real(sock)

        monkeypatch.setattr(QuicSocket, "accept", accept)


@per_backend
def test_the_test_server_survives_it(backend, pki, server_factory, monkeypatch) -> None:
    gate = GatedAccept(monkeypatch)
    srv = server_factory(backend, server_config(pki))
    hello_then_close(backend, srv.address)
    gate.open.set()
    (outcome,) = srv.wait()
    assert isinstance(outcome, HandshakeError)
    with client_socket(backend, srv.address) as sock:
        assert quic_handshake(sock, client_config(pki)).alpn == "h3"
    assert len(srv.wait(2)) == 2 and not srv.errors


@per_backend
def test_quichsd_server_survives_it(backend, pki, monkeypatch) -> None:
    from tests.sock.pairs import read_to_fin
    from tests.sock.test_echo import EchoServer

    gate = GatedAccept(monkeypatch)
    srv = EchoServer(backend, pki)
    try:
        hello_then_close(backend, ("127.0.0.1", srv.port))
        gate.open.set()
        with client_socket(backend, ("127.0.0.1", srv.port)) as sock:
            quic_handshake(sock, client_config(pki))
            sock.settimeout(10)
            sock.send(b"still here", 0, new=True, fin=True)
            assert read_to_fin(sock) == (b"still here", 0)
        deadline = time.monotonic() + 5
        while "failed" not in srv.out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "failed" in srv.out.getvalue(), srv.out.getvalue()
        assert not srv.died
    finally:
        srv.close()
