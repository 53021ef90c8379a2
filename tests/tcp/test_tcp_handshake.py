"""Our TLS-over-TCP client against our server on loopback TCP (quichsd/tcp/handshake.py):
every suite, certificates both ways, PSK, HelloRetryRequest; application data through the
application keys; nothing read past the handshake; the alert or status of each failure."""
from __future__ import annotations

import errno
import socket
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quichsd.tcp.handshake import HandshakeTimedOut, LocalAlert, PeerAlert, PeerClosed, TcpTlsHandshake
from quichsd.tcp.record import (
    HEADER_LEN,
    ContentType,
    RecordProtection,
    TrafficKeys,
    parse_header,
    plaintext_records,
)
from quichsd.tls.client import ClientEngine
from quichsd.tls.config import ClientAuth
from quichsd.tls.constants import AlertDescription, CipherSuite, CryptoLevel, Direction, NamedGroup
from quichsd.tls.events import InstallSecret, SendHandshake
from quichsd.tls.server import ServerEngine
from quichsd.tls.suites import SUITES

from .tlstcp import (
    ALL_SUITES,
    PSK_KEY,
    TIMEOUT,
    AppChannel,
    OurServer,
    client_config,
    our_client,
    server_config,
)


def _pair(server_kwargs: dict | None = None, client_kwargs: dict | None = None):  # type: ignore[no-untyped-def]
    server = OurServer(server_config(**(server_kwargs or {})), b"hello from server\n", b"client\n")
    config = client_config(**(client_kwargs or {}))
    client = our_client(server.port, config, b"hello from client\n", b"server\n")
    return client, server.join()


@pytest.mark.parametrize("suite", ALL_SUITES, ids=lambda s: s.name)
def test_certificate_handshake_and_data_both_ways(suite: CipherSuite) -> None:
    client, server = _pair({"suites": [suite]}, {"suites": [suite]})
    assert client.error is None and server.error is None, (client.error, server.error)
    assert client.received == b"hello from server\n" and server.received == b"hello from client\n"
    assert client.complete is not None and client.complete.cipher_suite == suite
    assert client.complete.alpn is None and client.complete.peer_certificates
    assert client.keys is not None and server.keys is not None
    # Fresh application keys: both sequence numbers start at 0 (what kTLS is given).
    assert (client.keys.tx_sequence, client.keys.rx_sequence) == (0, 0)
    assert client.keys.tx.key == server.keys.rx.key and client.keys.rx.iv == server.keys.tx.iv


def test_client_certificate_requested_and_sent() -> None:
    client, server = _pair({"client_auth": ClientAuth.OPTIONAL}, {"with_cert": True})
    assert client.error is None and server.error is None, (client.error, server.error)
    assert server.complete is not None and len(server.complete.peer_certificates) == 1


def test_client_certificate_requested_not_sent_is_fine() -> None:
    # tlshd's x509 server requests but does not require one (spec §6.2).
    client, server = _pair({"client_auth": ClientAuth.OPTIONAL}, {})
    assert client.error is None and server.error is None, (client.error, server.error)
    assert server.complete is not None and server.complete.peer_certificates == ()


@pytest.mark.parametrize("suite", [CipherSuite.AES_128_GCM_SHA256, CipherSuite.CHACHA20_POLY1305_SHA256],
                         ids=lambda s: s.name)
def test_psk(suite: CipherSuite) -> None:
    client, server = _pair({"psk": PSK_KEY, "suites": [suite]}, {"psk": PSK_KEY, "suites": [suite]})
    assert client.error is None and server.error is None, (client.error, server.error)
    assert server.complete is not None and server.complete.psk_identity is not None
    assert server.complete.peer_certificates == ()


def test_hello_retry_request() -> None:
    client, server = _pair({"groups": [NamedGroup.SECP256R1]},
                           {"groups": [NamedGroup.X25519, NamedGroup.SECP256R1]})
    assert client.error is None and server.error is None, (client.error, server.error)
    assert client.complete is not None and client.complete.group == NamedGroup.SECP256R1


def test_untrusted_server_certificate() -> None:
    client, server = _pair({}, {"untrusted": True})
    assert isinstance(client.error, LocalAlert), client.error
    assert client.error.alert in (AlertDescription.unknown_ca, AlertDescription.bad_certificate)
    assert client.error.status == errno.EACCES
    # The server learns it from our (protected) alert.
    assert isinstance(server.error, PeerAlert) and server.error.alert == client.error.alert


def test_wrong_psk() -> None:
    client, server = _pair({"psk": PSK_KEY}, {"psk": bytes(32)})
    assert isinstance(server.error, LocalAlert), server.error
    assert server.error.alert == AlertDescription.decrypt_error  # the binder (RFC 8446 §4.2.11)
    assert isinstance(client.error, PeerAlert) and client.error.alert == AlertDescription.decrypt_error


# -- what the driver reads, and how it fails --------------------------------------------------------


def _serve_by_hand(conn: socket.socket, tail: bytes) -> None:
    """A server that sends its whole first flight and `tail`-bearing application data in one
    write, the way a TLS 1.3 server may send data right after its Finished (0.5-RTT)."""
    engine = ServerEngine(server_config())
    header = _recv_exact(conn, HEADER_LEN)
    hello = _recv_exact(conn, parse_header(header, protected=False).length)
    out = b""
    writers: dict[CryptoLevel, RecordProtection] = {}
    for event in engine.receive(CryptoLevel.INITIAL, hello):
        if isinstance(event, InstallSecret) and event.direction == Direction.SEND:
            assert engine.suite is not None
            writers[event.level] = RecordProtection(TrafficKeys.from_secret(engine.suite, event.secret))
        elif isinstance(event, SendHandshake) and event.level == CryptoLevel.INITIAL:
            out += plaintext_records(ContentType.HANDSHAKE, event.data)
        elif isinstance(event, SendHandshake):
            out += writers[event.level].seal_all(ContentType.HANDSHAKE, event.data)
    out += writers[CryptoLevel.APP].seal(ContentType.APPLICATION_DATA, tail)
    conn.sendall(out)
    conn.recv(65536)  # the client's Finished, then our end closes


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        assert chunk
        data += chunk
    return data


def test_data_right_after_the_servers_finished_stays_in_the_socket() -> None:
    a, b = socket.socketpair()
    with a, b:
        thread = threading.Thread(target=_serve_by_hand, args=(b, b"half-rtt data\n"), daemon=True)
        thread.start()
        hs = TcpTlsHandshake(a, ClientEngine(client_config()))
        hs.run(TIMEOUT)
        assert hs.keys is not None and hs.keys.rx_sequence == 0
        # Not consumed by the handshake: the first record under the server's key is here.
        a.settimeout(TIMEOUT)
        assert AppChannel(a, hs.keys).recv_until(b"\n") == b"half-rtt data\n"
        thread.join(TIMEOUT)


def _client_by_hand(conn: socket.socket, tail: bytes) -> None:
    """A client that sends its Finished and application data in one write."""
    engine = ClientEngine(client_config())
    writers: dict[CryptoLevel, RecordProtection] = {}
    readers: dict[CryptoLevel, RecordProtection] = {}

    def emit(events: list) -> bytes:  # type: ignore[type-arg]
        out = b""
        for event in events:
            if isinstance(event, InstallSecret):
                assert engine.suite is not None
                keys = RecordProtection(TrafficKeys.from_secret(engine.suite, event.secret))
                (writers if event.direction == Direction.SEND else readers)[event.level] = keys
            elif isinstance(event, SendHandshake) and event.level == CryptoLevel.INITIAL:
                out += plaintext_records(ContentType.HANDSHAKE, event.data)
            elif isinstance(event, SendHandshake):
                out += writers[event.level].seal_all(ContentType.HANDSHAKE, event.data)
        return out

    conn.sendall(emit(engine.start()))
    while not engine.handshake_complete:
        header = _recv_exact(conn, HEADER_LEN)
        body = _recv_exact(conn, parse_header(header, protected=True).length)
        reader = readers.get(CryptoLevel.HANDSHAKE)
        content_type, content = reader.open(header, body) if reader else (ContentType.HANDSHAKE, body)
        level = CryptoLevel.HANDSHAKE if reader else CryptoLevel.INITIAL
        if content_type == ContentType.HANDSHAKE:
            flight = emit(engine.receive(level, content))
    conn.sendall(flight + writers[CryptoLevel.APP].seal(ContentType.APPLICATION_DATA, tail))


def test_data_right_after_the_clients_finished_stays_in_the_socket() -> None:
    a, b = socket.socketpair()
    with a, b:
        thread = threading.Thread(target=_client_by_hand, args=(a, b"right after Finished\n"), daemon=True)
        thread.start()
        hs = TcpTlsHandshake(b, ServerEngine(server_config()))
        hs.run(TIMEOUT)
        thread.join(TIMEOUT)
        assert hs.keys is not None and hs.keys.rx_sequence == 0
        b.settimeout(TIMEOUT)  # had the handshake taken the record, this would time out
        assert AppChannel(b, hs.keys).recv_until(b"\n") == b"right after Finished\n"


def _server_on(sock: socket.socket, timeout: float = TIMEOUT) -> BaseException:
    try:
        TcpTlsHandshake(sock, ServerEngine(server_config())).run(timeout)
    except Exception as exc:
        return exc
    raise AssertionError("handshake succeeded")


def test_not_tls_gets_unexpected_message_in_plaintext() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"GET / HTTP/1.1\r\n\r\n")
        error = _server_on(b)
        assert isinstance(error, LocalAlert) and error.alert == AlertDescription.unexpected_message
        assert a.recv(100) == b"\x15\x03\x03\x00\x02\x02\x0a"  # a plaintext fatal alert record


@pytest.mark.parametrize(
    ("records", "alert"),
    [
        # change_cipher_spec before any ClientHello (RFC 8446 §5).
        (plaintext_records(ContentType.CHANGE_CIPHER_SPEC, b"\x01"), AlertDescription.unexpected_message),
        (b"\x16\x03\x03\x40\x01" + bytes(0x4001), AlertDescription.record_overflow),
        (b"\x16\x03\x03\x00\x00", AlertDescription.unexpected_message),  # empty handshake record
        (b"\x17\x03\x03\x00\x05hello", AlertDescription.unexpected_message),  # data before keys
    ],
    ids=["ccs-first", "overflow", "empty", "appdata"],
)
def test_malformed_first_records(records: bytes, alert: AlertDescription) -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(records)
        error = _server_on(b)
        assert isinstance(error, LocalAlert) and error.alert == alert, error


def test_peer_alert_in_plaintext_is_reported() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(plaintext_records(ContentType.ALERT, b"\x02\x28"))
        error = _server_on(b)
        assert isinstance(error, PeerAlert) and error.alert == AlertDescription.handshake_failure
        assert error.status == errno.EACCES


def test_peer_closing_mid_handshake_is_etimedout() -> None:
    a, b = socket.socketpair()
    with b:
        hello = ClientEngine(client_config()).start()[0]
        assert isinstance(hello, SendHandshake)
        a.sendall(plaintext_records(ContentType.HANDSHAKE, hello.data)[:50])
        a.close()
        error = _server_on(b)
        assert isinstance(error, PeerClosed) and error.status == errno.ETIMEDOUT


def test_silent_peer_times_out() -> None:
    a, b = socket.socketpair()
    with a, b:
        error = _server_on(b, timeout=0.2)
        assert isinstance(error, HandshakeTimedOut) and error.status == errno.EACCES


def test_a_non_blocking_socket_stays_non_blocking() -> None:
    client, server = socket.socketpair()
    with client, server:
        server.setblocking(False)
        handshake = TcpTlsHandshake(server, ServerEngine(server_config()))
        thread = threading.Thread(target=handshake.run, args=(TIMEOUT,), daemon=True)
        thread.start()
        TcpTlsHandshake(client, ClientEngine(client_config())).run(TIMEOUT)
        thread.join(TIMEOUT)
        assert server.getblocking() is False


def test_suite_keys_have_the_suites_sizes() -> None:
    for suite in ALL_SUITES:
        keys = TrafficKeys.from_secret(SUITES[suite], bytes(SUITES[suite].hash_len))
        assert (len(keys.key), len(keys.iv)) == (SUITES[suite].key_len, 12)


# -- whatever the peer sends, the driver ends with one of its own errors --------------------------


def _client_flight() -> bytes:
    """A real first flight (ClientHello record) to mutate."""
    hello = ClientEngine(client_config()).start()[0]
    assert isinstance(hello, SendHandshake)
    return plaintext_records(ContentType.HANDSHAKE, hello.data)


FLIGHT = _client_flight()
_DRIVER_ERRORS = (LocalAlert, PeerAlert, PeerClosed)


def _server_error_for(stream: bytes) -> BaseException:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(stream)
        a.shutdown(socket.SHUT_WR)  # then EOF: the driver never waits for more
        return _server_on(b)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_end_in_a_driver_error(stream: bytes) -> None:
    assert isinstance(_server_error_for(stream), _DRIVER_ERRORS)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(FLIGHT) - 1), st.integers(1, 255))
def test_mutated_client_hello_ends_in_a_driver_error(position: int, xor: int) -> None:
    mutated = bytearray(FLIGHT)
    mutated[position] ^= xor
    assert isinstance(_server_error_for(bytes(mutated)), _DRIVER_ERRORS)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_to_our_client_end_in_a_driver_error(stream: bytes) -> None:
    a, b = socket.socketpair()
    with a, b:
        b.sendall(stream)
        b.shutdown(socket.SHUT_WR)
        with pytest.raises(_DRIVER_ERRORS):
            TcpTlsHandshake(a, ClientEngine(client_config())).run(TIMEOUT)
