"""The handshake's timeout answers on the real kernel module, as tests/sock/test_handshake_timeouts.py
asserts them on the simulation: a handshake that got no answer is ETIMEDOUT whichever timer
ended it (our deadline, or the kernel's idle timer, which closes the socket with an all-zero
close: recvmsg ENOTCONN); a peer that really closed is reported with its close code and phrase."""
from __future__ import annotations

import errno
import socket
import threading

import pytest

from quichsd import HandshakeConfig, HandshakeError, QuicSocket, abi, quic_handshake

L = abi.lib
TCG_SLACK = 60.0  # Python runs 10-20x slower under TCG than on the host


pytestmark = pytest.mark.usefixtures("quic_module")


def silent_port() -> socket.socket:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    return silent


def kernel_client(idle_seconds: int) -> QuicSocket:
    sock = QuicSocket(socket.AF_INET, backend="kernel")
    assert sock.backend_name == "kernel"
    sock.setsockopt(L.QUIC_SOCKOPT_TRANSPORT_PARAM,
                    abi.pack_transport_param(max_idle_timeout=idle_seconds * 1_000_000))
    return sock


def test_kernel_idle_timer_before_the_deadline_is_a_timeout() -> None:
    with silent_port() as silent, kernel_client(1) as sock:
        sock.connect(silent.getsockname())
        with pytest.raises(HandshakeError) as caught:
            quic_handshake(sock, HandshakeConfig(alpns=["h3"], verify=False, timeout=TCG_SLACK))
        assert caught.value.errno == errno.ETIMEDOUT, caught.value
        assert "idle timeout" in caught.value.strerror, caught.value
        assert "ALPN h3" in caught.value.strerror, caught.value


def test_kernel_deadline_before_the_idle_timer_is_a_timeout() -> None:
    with silent_port() as silent, kernel_client(30) as sock:
        sock.connect(silent.getsockname())
        with pytest.raises(HandshakeError) as caught:
            quic_handshake(sock, HandshakeConfig(alpns=["h3"], verify=False, timeout=1.0))
        assert caught.value.errno == errno.ETIMEDOUT, caught.value
        assert "no answer from the server" in caught.value.strerror, caught.value


def test_kernel_peer_close_keeps_its_close_code(pki) -> None:
    """A kernel listener whose accepted connection asks for PROTOCOL_VIOLATION (0x0a) and
    closes instead of answering: the kernel client's handshake reports the peer's close, not
    a timeout. The code on the wire is the kernel's 0x0c: a close while ESTABLISHING always
    sends APPLICATION_ERROR (kernel-quic-abi §2.8), where the simulation keeps the code asked
    for (a documented difference, README)."""
    listener = QuicSocket(socket.AF_INET, backend="kernel")
    listener.setsockopt(L.QUIC_SOCKOPT_ALPN, b"h3")
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(TCG_SLACK)

    def refuse() -> None:
        conn, _ = listener.accept()
        conn.setsockopt(L.QUIC_SOCKOPT_CONNECTION_CLOSE, abi.pack_connection_close(0x0A, b"go away"))
        conn.shutdown(socket.SHUT_RDWR)
        conn.close()

    thread = threading.Thread(target=refuse, daemon=True)
    thread.start()
    try:
        with kernel_client(30) as sock:
            sock.connect(listener.getsockname()[:2])
            with pytest.raises(HandshakeError) as caught:
                quic_handshake(sock, HandshakeConfig(alpns=["h3"], cafile=pki.ca_file, hostname="localhost",
                                                     timeout=TCG_SLACK))
        assert caught.value.errno != errno.ETIMEDOUT, caught.value
        assert "peer closed: 0xc (APPLICATION_ERROR: go away)" in caught.value.strerror, caught.value
    finally:
        thread.join(10)
        listener.close()
