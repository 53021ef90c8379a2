"""A handshake that got no answer is ETIMEDOUT, whichever timer ended it (our deadline or the
transport's idle timer, kernel-quic-abi §2.5: a dead peer is seen only when the idle timer
closes the socket, ENOTCONN with an all-zero close); a peer that really closed keeps its
error."""
from __future__ import annotations

import errno
import socket
import threading

import pytest

from quichsd import HandshakeConfig, HandshakeError, QuicSocket, abi, quic_handshake


def silent_port() -> socket.socket:
    """A UDP socket that takes the client's datagrams and never answers."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    return silent


def client(idle_seconds: int) -> QuicSocket:
    sock = QuicSocket(socket.AF_INET, backend="sim")
    sock.setsockopt(abi.lib.QUIC_SOCKOPT_TRANSPORT_PARAM,
                    abi.pack_transport_param(max_idle_timeout=idle_seconds * 1_000_000))
    return sock


def test_the_idle_timer_before_the_deadline_is_a_timeout() -> None:
    """The idle timer (1 s) fires long before the handshake's deadline (60 s): the socket
    reports ENOTCONN, the handshake ETIMEDOUT, naming the ALPN it offered."""
    with silent_port() as silent, client(1) as sock:
        sock.connect(silent.getsockname())
        with pytest.raises(HandshakeError) as caught:
            quic_handshake(sock, HandshakeConfig(alpns=["h3", "smb"], verify=False, timeout=60))
        assert caught.value.errno == errno.ETIMEDOUT, caught.value
        assert "idle timeout" in caught.value.strerror
        assert "no answer from the server" in caught.value.strerror and "ALPN h3,smb" in caught.value.strerror


def test_the_deadline_before_the_idle_timer_is_a_timeout() -> None:
    with silent_port() as silent, client(30) as sock:
        sock.connect(silent.getsockname())
        with pytest.raises(HandshakeError) as caught:
            quic_handshake(sock, HandshakeConfig(alpns=["h3"], verify=False, timeout=0.5))
        assert caught.value.errno == errno.ETIMEDOUT
        assert "no answer from the server" in caught.value.strerror


def test_a_peer_that_closes_keeps_its_close_code(pki) -> None:
    """The server closes with PROTOCOL_VIOLATION (0x0a) instead of answering: that is the
    peer's close, reported with its code, not a timeout."""
    listener = QuicSocket(socket.AF_INET, backend="sim")
    listener.setsockopt(abi.lib.QUIC_SOCKOPT_ALPN, b"h3")
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(10)

    def refuse() -> None:
        conn, _ = listener.accept()
        conn.setsockopt(abi.lib.QUIC_SOCKOPT_CONNECTION_CLOSE, abi.pack_connection_close(0x0A, b"go away"))
        conn.shutdown(socket.SHUT_RDWR)
        conn.close()

    thread = threading.Thread(target=refuse, daemon=True)
    thread.start()
    try:
        with client(30) as sock:
            sock.connect(listener.getsockname()[:2])
            with pytest.raises(HandshakeError) as caught:
                quic_handshake(sock, HandshakeConfig(alpns=["h3"], cafile=pki.ca_file, hostname="localhost",
                                                     timeout=10))
        assert caught.value.errno != errno.ETIMEDOUT, caught.value
        assert "peer closed: 0xa (PROTOCOL_VIOLATION: go away)" in caught.value.strerror, caught.value
    finally:
        thread.join(10)
        listener.close()
