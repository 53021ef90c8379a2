"""Kernel-ABI behaviours (spec kernel-quic-abi §1.4, §2.2-2.7), run against the simulation
here and against a real kernel wherever IPPROTO_QUIC exists (the QEMU tier)."""
from __future__ import annotations

import errno
import socket
import threading

import pytest

from quichsd import HandshakeConfig, QuicSocket, abi, quic_handshake
from quichsd.tls.constants import CryptoLevel
from tests.sockets import BACKENDS, client_socket

pytestmark = pytest.mark.parametrize("backend", BACKENDS)
L = abi.lib


def server_config(pki, **kw) -> HandshakeConfig:
    return HandshakeConfig(server=True, alpns=["h3"], cert_file=pki.cert_file, key_file=pki.key_file,
                           timeout=5, **kw)


def client_config(pki, **kw) -> HandshakeConfig:
    base = dict(alpns=["h3"], hostname="localhost", cafile=pki.ca_file, timeout=5)
    return HandshakeConfig(**{**base, **kw})


def errno_of(fn, *args) -> int:
    with pytest.raises(OSError) as err:
        fn(*args)
    return err.value.errno


def test_send_without_a_key_is_einval(backend) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    with client_socket(backend, listener.getsockname()) as sock:
        assert errno_of(sock.send_handshake, CryptoLevel.HANDSHAKE, b"\x08\x00\x00\x00") == errno.EINVAL
        assert errno_of(sock.send_handshake, CryptoLevel.APP, b"\x04\x00\x00\x00") == errno.EINVAL
        assert errno_of(sock.send_handshake, CryptoLevel.EARLY, b"\x01\x00\x00\x00") == errno.EINVAL
        assert errno_of(sock.send_handshake, CryptoLevel.INITIAL, b"") == errno.EMSGSIZE
        # INITIAL secrets are the kernel's own business.
        secret = abi.pack_crypto_secret(CryptoLevel.INITIAL, True, L.TLS_CIPHER_AES_GCM_128, bytes(32))
        assert errno_of(sock.setsockopt, L.QUIC_SOCKOPT_CRYPTO_SECRET, secret) == errno.EINVAL
    listener.close()


def test_secret_and_transport_params_after_established_are_einval(backend, pki, server_factory) -> None:
    srv = server_factory(backend, server_config(pki))
    with client_socket(backend, srv.address) as sock:
        quic_handshake(sock, client_config(pki))
        secret = abi.pack_crypto_secret(CryptoLevel.APP, True, L.TLS_CIPHER_AES_GCM_128, bytes(32))
        assert errno_of(sock.setsockopt, L.QUIC_SOCKOPT_CRYPTO_SECRET, secret) == errno.EINVAL
        assert errno_of(sock.getsockopt, L.QUIC_SOCKOPT_TRANSPORT_PARAM_EXT, 512) == errno.EINVAL
        assert errno_of(sock.setsockopt, L.QUIC_SOCKOPT_TRANSPORT_PARAM_EXT, b"\x0f\x00") == errno.EINVAL


def test_getpeername_after_our_shutdown_is_enotconn(backend, pki, server_factory) -> None:
    """inet_getname: the peer's name until the connection closes, ENOTCONN after our own
    shutdown() as after the peer's close (the daemon reads it before the handshake)."""
    srv = server_factory(backend, server_config(pki))
    with client_socket(backend, srv.address) as sock:
        quic_handshake(sock, client_config(pki))
        assert sock.getpeername()[:2] == tuple(srv.address)
        sock.shutdown(socket.SHUT_RDWR)
        assert errno_of(sock.getpeername) == errno.ENOTCONN


def test_msg_more_holds_the_flight(backend, pki) -> None:
    """Nothing leaves while MSG_MORE is set; the send without it flushes (spec §2.3)."""
    listener = QuicSocket(socket.AF_INET, backend=backend)
    listener.setsockopt(L.QUIC_SOCKOPT_ALPN, b"h3")
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.5)
    with listener, client_socket(backend, listener.getsockname()[:2]) as sock:
        from quichsd.tls.client import ClientEngine
        from quichsd.tls.config import TlsConfig

        tp = sock.getsockopt(L.QUIC_SOCKOPT_TRANSPORT_PARAM_EXT, 512)
        (hello,) = ClientEngine(TlsConfig(alpn_protocols=[b"h3"], verify_peer=False,
                                          transport_parameters=tp)).start()
        half = len(hello.data) // 2
        sock.send_handshake(CryptoLevel.INITIAL, hello.data[:half], 0x8000)
        with pytest.raises(TimeoutError):
            listener.accept()  # no Initial has left the client
        sock.send_handshake(CryptoLevel.INITIAL, hello.data[half:], 0)
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(2)
            received = b""
            while len(received) < len(hello.data):
                item = conn.recv_item(65536)
                assert item.kind == "HANDSHAKE" and item.level == CryptoLevel.INITIAL
                received += item.data
            assert received == hello.data


def test_client_captures_the_first_ticket(backend, pki, server_factory) -> None:
    srv = server_factory(backend, server_config(pki))
    with client_socket(backend, srv.address) as sock:
        result = quic_handshake(sock, client_config(pki, ticket_wait=3))
        blob = sock.getsockopt(L.QUIC_SOCKOPT_SESSION_TICKET, 4096)
    assert blob[0] == 4  # a raw NewSessionTicket message
    assert int.from_bytes(blob[1:4], "big") + 4 <= len(blob)
    assert result.session_data


def test_alpn_dispatch_between_listeners_on_one_port(backend, pki) -> None:
    """Two listeners share 127.0.0.1:port; the client's ALPN picks one (spec §2.7)."""
    accepted: dict[bytes, list[str]] = {b"alpha": [], b"beta": []}
    listeners = []
    port = 0
    for alpn in (b"alpha", b"beta"):
        lst = QuicSocket(socket.AF_INET, backend=backend)
        lst.setsockopt(L.QUIC_SOCKOPT_ALPN, alpn)
        lst.bind(("127.0.0.1", port))
        lst.listen(4)
        lst.settimeout(5)
        port = lst.getsockname()[1]
        listeners.append((alpn, lst))

    def serve(alpn: bytes, lst: QuicSocket) -> None:
        # The client closes as soon as its handshake returns, maybe before this server has
        # installed its 1-RTT receive key: the result then comes with peer_closed (spec §9).
        try:
            conn, _ = lst.accept()
            with conn:
                result = quic_handshake(conn, HandshakeConfig(server=True, alpns=[alpn.decode()],
                                                              cert_file=pki.cert_file, key_file=pki.key_file,
                                                              timeout=5))
        except Exception as exc:  # shown by the assertion below rather than lost with the thread
            accepted[alpn].append(repr(exc))
            return
        accepted[alpn].append(result.alpn)

    threads = [threading.Thread(target=serve, args=item, daemon=True) for item in listeners]
    for t in threads:
        t.start()
    for alpn in (b"beta", b"alpha"):
        with client_socket(backend, ("127.0.0.1", port)) as sock:
            result = quic_handshake(sock, client_config(pki, alpns=[alpn.decode()]))
            assert result.alpn == alpn.decode()
    for t in threads:
        t.join(5)
    for _, lst in listeners:
        lst.close()
    assert accepted == {b"alpha": ["alpha"], b"beta": ["beta"]}


def test_listen_with_identical_alpn_on_one_port_is_eaddrinuse(backend) -> None:
    first = QuicSocket(socket.AF_INET, backend=backend)
    first.setsockopt(L.QUIC_SOCKOPT_ALPN, b"h3")
    first.bind(("127.0.0.1", 0))
    first.listen(1)
    second = QuicSocket(socket.AF_INET, backend=backend)
    second.setsockopt(L.QUIC_SOCKOPT_ALPN, b"h3")
    second.bind(first.getsockname()[:2])
    with first, second:
        assert errno_of(second.listen, 1) == errno.EADDRINUSE


def test_alpn_option_round_trip(backend) -> None:
    sock = QuicSocket(socket.AF_INET, backend=backend)
    with sock:
        sock.setsockopt(L.QUIC_SOCKOPT_ALPN, b"smb, h3")
        assert sock.getsockopt(L.QUIC_SOCKOPT_ALPN, 64) == b"smb,h3"
        assert errno_of(sock.setsockopt, L.QUIC_SOCKOPT_ALPN, b"x" * 129) == errno.EINVAL
        assert errno_of(sock.getsockopt, 99, 4) == errno.ENOPROTOOPT
