"""quichsd.daemon.request.handle() over simulated QUIC sockets (spec tlshd-behaviour §1.7, §3, §6, §9.3).

The other end is our own quic_handshake, in a thread. Keys are `user` keys in a fresh
session keyring joined by the test thread (the thread that runs handle()).
"""
from __future__ import annotations

import errno
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding

from quichsd import HandshakeConfig, HandshakeError, QuicSocket, abi, quic_handshake
from quichsd.daemon import keyring as kr
from quichsd.daemon.config import AlpnCredentials, DaemonConfig, DebugSettings, X509Settings
from quichsd.daemon.keyring import MUTUAL_AUTH_PEER_ID, AuthMode
from quichsd.daemon.request import DoneResult, HandshakeRequest, MessageType, handle
from quichsd.tls.config import ClientAuth, ExternalPsk
from quichsd.tls.session import QUIC_MAX_EARLY_DATA, SessionData
from tests.daemon.conftest import needs_keyctl
from tests.pki import make_ca, new_key
from tests.sockets import client_socket, echo_upper

CLIENT, SERVER = MessageType.CLIENTHELLO, MessageType.SERVERHELLO
PSK_KEY = bytes(range(32))


def der_cert(path: str) -> bytes:
    return x509.load_pem_x509_certificate(open(path, "rb").read()).public_bytes(Encoding.DER)


def der_key(path: str) -> bytes:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), None)
    return key.private_bytes(Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def client_config(pki, **kw: Any) -> DaemonConfig:
    return DaemonConfig(client=X509Settings(truststore=pki.ca_file, **kw))


def quic_client(srv, alpn: bytes = b"h3") -> QuicSocket:
    sock = client_socket("sim", srv.address)
    sock.setsockopt(abi.lib.QUIC_SOCKOPT_ALPN, alpn)
    return sock


class Peer:
    """Our quic_handshake as the client of a daemon-side server socket."""

    def __init__(self, alpn: bytes = b"h3", listen_alpn: bytes = b"h3") -> None:
        self.listener = QuicSocket(socket.AF_INET, backend="sim")
        self.listener.setsockopt(abi.lib.QUIC_SOCKOPT_ALPN, listen_alpn)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.client = client_socket("sim", self.listener.getsockname()[:2])
        self.client.setsockopt(abi.lib.QUIC_SOCKOPT_ALPN, alpn)
        self.alpn = alpn
        self.outcome: Any = None

    def reconnect(self) -> None:
        """A new client connection to the same listener (same ticket key), for resumption."""
        self.old_clients = getattr(self, "old_clients", []) + [self.client]
        self.client = client_socket("sim", self.listener.getsockname()[:2])
        self.client.setsockopt(abi.lib.QUIC_SOCKOPT_ALPN, self.alpn)

    def start(self, config: HandshakeConfig) -> QuicSocket:
        def run() -> None:
            try:
                self.outcome = quic_handshake(self.client, config)
            except HandshakeError as exc:
                self.outcome = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        self.listener.settimeout(5)
        conn, _ = self.listener.accept()
        return conn

    def join(self) -> Any:
        self.thread.join(10)
        return self.outcome

    def close(self) -> None:
        for sock in (*getattr(self, "old_clients", ()), self.client):
            sock.close()
        self.listener.close()


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    made: list[Peer] = []
    yield made
    for p in made:
        p.close()


def peer(peers: list[Peer], **kw: Any) -> Peer:
    p = Peer(**kw)
    peers.append(p)
    return p


# ---- client role ----------------------------------------------------------------------------


def test_x509_client_without_client_cert_is_eio(pki, server_factory):
    """As tlshd (spec §6.1): x509 mode needs the client's certificate and key."""
    srv = server_factory("sim", HandshakeConfig(server=True, cert_file=pki.cert_file, key_file=pki.key_file))
    done = handle(HandshakeRequest(quic_client(srv), CLIENT, AuthMode.X509, peername="localhost"),
                  client_config(pki))
    assert done.status == errno.EIO and done.remote_auth == []


@needs_keyctl
def test_x509_client_cert_from_serials(pki, server_factory, session, user_keyring_links):
    srv = server_factory("sim", HandshakeConfig(server=True, cert_file=pki.cert_file, key_file=pki.key_file,
                                                cafile=pki.ca_file, client_auth=ClientAuth.REQUIRED))
    cert = kr.add_key("user", "client cert", der_cert(pki.cert_file), session)
    key = kr.add_key("user", "client key", der_key(pki.key_file), session)
    req = HandshakeRequest(quic_client(srv), CLIENT, AuthMode.X509, certificate=cert, private_key=key,
                           peername="localhost", timeout_ms=5000)
    done = handle(req, client_config(pki))
    user_keyring_links.extend(done.remote_auth)
    assert done.status == 0
    (result,) = srv.wait(1)
    assert len(result.peer_certificates) == 1


def test_x509_client_cert_from_config(pki, server_factory, user_keyring_links):
    srv = server_factory("sim", HandshakeConfig(server=True, cert_file=pki.cert_file, key_file=pki.key_file,
                                                cafile=pki.ca_file, client_auth=ClientAuth.REQUIRED))
    config = client_config(pki, certificate=pki.cert_file, private_key=pki.key_file)
    done = handle(HandshakeRequest(quic_client(srv), CLIENT, AuthMode.X509, peername="localhost"), config)
    user_keyring_links.extend(done.remote_auth)
    assert done.status == 0
    assert len(srv.wait(1)[0].peer_certificates) == 1


def test_unauth_client(pki, server_factory):
    srv = server_factory("sim", HandshakeConfig(server=True, cert_file=pki.cert_file, key_file=pki.key_file))
    done = handle(HandshakeRequest(quic_client(srv), CLIENT, AuthMode.UNAUTH, peername="localhost"),
                  client_config(pki))
    assert done == DoneResult(0, [])


def test_unauth_client_still_verifies_the_server(pki, server_factory, tmp_path):
    """Unlike tlshd's QUIC unauth client, the server's chain is checked: wrong CA -> EACCES."""
    other = tmp_path / "other-ca.pem"
    other.write_bytes(make_ca("another CA").cert.public_bytes(Encoding.PEM))
    srv = server_factory("sim", HandshakeConfig(server=True, cert_file=pki.cert_file, key_file=pki.key_file))
    done = handle(HandshakeRequest(quic_client(srv), CLIENT, AuthMode.UNAUTH, peername="localhost",
                                   timeout_ms=5000),
                  DaemonConfig(client=X509Settings(truststore=str(other))))
    assert done == DoneResult(errno.EACCES, [])


def test_x509_client_wrong_name_is_eacces(pki, server_factory):
    srv = server_factory("sim", HandshakeConfig(server=True, cert_file=pki.cert_file, key_file=pki.key_file))
    config = client_config(pki, certificate=pki.cert_file, private_key=pki.key_file)
    done = handle(HandshakeRequest(quic_client(srv), CLIENT, AuthMode.X509, peername="elsewhere.example",
                                   timeout_ms=5000), config)
    assert done.status == errno.EACCES


@needs_keyctl
def test_psk_client(server_factory, session):
    srv = server_factory("sim", HandshakeConfig(server=True, psks=[ExternalPsk(b"host-1", PSK_KEY)]))
    serial = kr.add_key("user", "host-1", PSK_KEY, session)
    done = handle(HandshakeRequest(quic_client(srv), CLIENT, AuthMode.PSK, peer_identities=(serial,)),
                  DaemonConfig())
    assert done == DoneResult(0, [])  # QUIC PSK client: no remote peer id (§6.4)
    assert srv.wait(1)[0].psk_identity == b"host-1"


@needs_keyctl
def test_psk_client_unknown_to_server_is_ekeyrejected(server_factory, session):
    srv = server_factory("sim", HandshakeConfig(server=True, psks=[ExternalPsk(b"someone-else", PSK_KEY)]))
    serial = kr.add_key("user", "host-1", PSK_KEY, session)
    done = handle(HandshakeRequest(quic_client(srv), CLIENT, AuthMode.PSK, peer_identities=(serial,),
                                   timeout_ms=5000), DaemonConfig())
    assert done == DoneResult(errno.EKEYREJECTED, [])


def test_psk_client_without_identity_is_eio(server_factory):
    srv = server_factory("sim", HandshakeConfig(server=True, psks=[ExternalPsk(b"x", PSK_KEY)]))
    assert handle(HandshakeRequest(quic_client(srv), CLIENT, AuthMode.PSK),
                  DaemonConfig()).status == errno.EIO


def test_silent_peer_is_etimedout():
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    try:
        sock = QuicSocket(socket.AF_INET, backend="sim")
        sock.setsockopt(abi.lib.QUIC_SOCKOPT_ALPN, b"h3")
        sock.connect(sink.getsockname())
        done = handle(HandshakeRequest(sock, CLIENT, AuthMode.UNAUTH, peername="localhost", timeout_ms=300),
                      DaemonConfig())
        assert done == DoneResult(errno.ETIMEDOUT, [])
        sock.close()
    finally:
        sink.close()


# ---- x509.crl (tlshd-behaviour §4.3) ---------------------------------------------------------


def write_crl(tmp_path, revoked_pem_files) -> str:  # noqa: ANN001
    from quichsd.devcerts import make_crl
    from tests.pki import test_ca

    revoked = [x509.load_pem_x509_certificate(Path(f).read_bytes()) for f in revoked_pem_files]
    path = tmp_path / "crl.pem"
    path.write_bytes(make_crl(test_ca(), revoked).public_bytes(Encoding.PEM))
    return str(path)


def test_client_rejects_a_revoked_server_certificate(pki, server_factory, tmp_path):
    srv = server_factory("sim", HandshakeConfig(server=True, cert_file=pki.cert_file, key_file=pki.key_file))
    crl = write_crl(tmp_path, [pki.cert_file])
    req = HandshakeRequest(quic_client(srv), CLIENT, AuthMode.UNAUTH, peername="localhost", timeout_ms=5000)
    assert handle(req, client_config(pki, crl=crl)).status == errno.EACCES
    empty = write_crl(tmp_path / ".." , [])  # a CRL that lists nothing
    req = HandshakeRequest(quic_client(srv), CLIENT, AuthMode.UNAUTH, peername="localhost", timeout_ms=5000)
    assert handle(req, client_config(pki, crl=empty)).status == 0
    req = HandshakeRequest(quic_client(srv), CLIENT, AuthMode.UNAUTH, peername="localhost", timeout_ms=5000)
    assert handle(req, client_config(pki, crl=str(tmp_path / "missing.pem"))).status == 0  # no file: no check


def test_unreadable_crl_is_eio(pki, server_factory, tmp_path):
    srv = server_factory("sim", HandshakeConfig(server=True, cert_file=pki.cert_file, key_file=pki.key_file))
    bad = tmp_path / "crl.pem"
    bad.write_bytes(b"-----BEGIN X509 CRL-----\ngarbage\n-----END X509 CRL-----\n")
    req = HandshakeRequest(quic_client(srv), CLIENT, AuthMode.UNAUTH, peername="localhost", timeout_ms=5000)
    assert handle(req, client_config(pki, crl=str(bad))).status == errno.EIO


def test_server_rejects_a_revoked_client_certificate(pki, peers, tmp_path):
    p = peer(peers)
    conn = p.start(HandshakeConfig(cafile=pki.ca_file, hostname="localhost", cert_file=pki.cert_file,
                                   key_file=pki.key_file, timeout=5))
    conn.setsockopt(abi.lib.QUIC_SOCKOPT_CONFIG, abi.pack_config(certificate_request=2))
    config = DaemonConfig(server=X509Settings(certificate=pki.cert_file, private_key=pki.key_file,
                                              truststore=pki.ca_file,
                                              crl=write_crl(tmp_path, [pki.cert_file])))
    done = handle(HandshakeRequest(conn, SERVER, AuthMode.X509, timeout_ms=5000), config)
    assert done.status == errno.EACCES
    p.join()  # (a TLS 1.3 client is done before the server has judged its certificate)


# ---- session tickets for consumers (kernel-quic-abi §2.6) ----------------------------------


def ticket_server(server_factory, pki):  # noqa: ANN001, ANN201
    return server_factory("sim", HandshakeConfig(server=True, cert_file=pki.cert_file, key_file=pki.key_file))


def consumer_socket(srv, receive_session_ticket: int = 0, session: bytes | None = None) -> QuicSocket:
    """A client socket as a kernel consumer prepares it: ALPN, quic_config, session data."""
    sock = quic_client(srv)
    if receive_session_ticket:
        sock.setsockopt(abi.lib.QUIC_SOCKOPT_CONFIG,
                        abi.pack_config(receive_session_ticket=receive_session_ticket))
    if session is not None:
        sock.setsockopt(abi.lib.QUIC_SOCKOPT_SESSION_TICKET, session)
    return sock


def test_consumer_gets_session_data_and_resumes_with_it(pki, server_factory):
    srv = ticket_server(server_factory, pki)
    first = consumer_socket(srv, receive_session_ticket=3)
    done = handle(HandshakeRequest(first, CLIENT, AuthMode.UNAUTH, peername="localhost", timeout_ms=5000),
                  client_config(pki))
    assert done.status == 0 and not done.resumed
    data = first.getsockopt(abi.lib.QUIC_SOCKOPT_SESSION_TICKET, 4096)  # what the consumer reads back
    assert 64 <= len(data) <= 4096
    assert SessionData.decode(data).alpn == b"h3"
    second = consumer_socket(srv, session=data)
    done = handle(HandshakeRequest(second, CLIENT, AuthMode.UNAUTH, peername="localhost", timeout_ms=5000),
                  client_config(pki))
    assert done.status == 0 and done.resumed
    assert [r.resumed for r in srv.wait(2)] == [False, True]


def test_client_sends_the_consumers_early_data_as_0rtt(pki, server_factory):
    """As tlshd's QUIC client (GNUTLS_ENABLE_EARLY_DATA): with session data whose ticket allows
    early data, the stream data the consumer queued before the upcall leaves as 0-RTT."""
    srv = server_factory("sim", HandshakeConfig(server=True, cert_file=pki.cert_file, key_file=pki.key_file,
                                                early_data=True), after=echo_upper)
    first = consumer_socket(srv, receive_session_ticket=3)
    assert handle(HandshakeRequest(first, CLIENT, AuthMode.UNAUTH, peername="localhost", timeout_ms=5000),
                  client_config(pki)).status == 0
    data = first.getsockopt(abi.lib.QUIC_SOCKOPT_SESSION_TICKET, 4096)
    session = SessionData.decode(data)
    assert session.max_early_data == QUIC_MAX_EARLY_DATA and len(session.transport_parameters) == 56
    # The consumer, as lxin's sample ticket client does: session data and the server's
    # transport parameters set back, early data queued, then the upcall.
    second = consumer_socket(srv, session=data)
    second.setsockopt(abi.lib.QUIC_SOCKOPT_TRANSPORT_PARAM, b"\x01" + session.transport_parameters[1:])
    second.send(b"early", -1, new=True, fin=True)
    done = handle(HandshakeRequest(second, CLIENT, AuthMode.UNAUTH, peername="localhost", timeout_ms=5000),
                  client_config(pki))
    results = srv.wait(2)
    assert results[1].resumed and results[1].early_data_accepted  # the server took it as 0-RTT
    assert done.status == 0 and done.resumed and done.early_data
    second.settimeout(5)
    assert second.recv()[0] == b"EARLY"


def test_client_without_early_data_in_the_ticket_does_not_offer_it(pki, server_factory):
    srv = ticket_server(server_factory, pki)  # its tickets forbid early data
    first = consumer_socket(srv, receive_session_ticket=3)
    handle(HandshakeRequest(first, CLIENT, AuthMode.UNAUTH, peername="localhost", timeout_ms=5000),
           client_config(pki))
    data = first.getsockopt(abi.lib.QUIC_SOCKOPT_SESSION_TICKET, 4096)
    assert SessionData.decode(data).max_early_data == 0
    done = handle(HandshakeRequest(consumer_socket(srv, session=data), CLIENT, AuthMode.UNAUTH,
                                   peername="localhost", timeout_ms=5000), client_config(pki))
    assert done.status == 0 and done.resumed and not done.early_data


def test_server_tickets_allow_early_data_and_it_accepts_0rtt_once(pki, peers):
    """As tlshd's QUIC server: max_early_data_size 0xffffffff (RFC 9001 §4.6.1) in its tickets,
    0-RTT accepted; a second use of the same ticket is refused 0-RTT (single use, RFC 8446
    §8.1) but still resumes."""
    config = DaemonConfig(server=X509Settings(certificate=pki.cert_file, private_key=pki.key_file))
    p = peer(peers)
    conn = p.start(HandshakeConfig(cafile=pki.ca_file, hostname="localhost", ticket_wait=3, timeout=5))
    assert handle(HandshakeRequest(conn, SERVER, AuthMode.X509, timeout_ms=5000), config).status == 0
    first = p.join()
    assert SessionData.decode(first.session_data).max_early_data == QUIC_MAX_EARLY_DATA
    outcomes = []
    for payload in (b"early", b"replayed"):
        p.reconnect()
        conn = p.start(HandshakeConfig(cafile=pki.ca_file, hostname="localhost",
                                       session_data=first.session_data,
                                       early_data=True, early_stream_data=payload, timeout=5))
        done = handle(HandshakeRequest(conn, SERVER, AuthMode.X509, timeout_ms=5000), config)
        result = p.join()
        assert done.status == 0 and done.resumed and result.resumed
        conn.settimeout(5)
        assert conn.recv()[0] == payload  # 0-RTT, or resent in 1-RTT when refused
        outcomes.append((done.early_data, result.early_data_accepted))
    assert outcomes == [(True, True), (False, False)]


def test_no_session_data_unless_the_consumer_asks(pki, server_factory):
    srv = ticket_server(server_factory, pki)
    sock = consumer_socket(srv)
    done = handle(HandshakeRequest(sock, CLIENT, AuthMode.UNAUTH, peername="localhost"), client_config(pki))
    assert done.status == 0
    blob = sock.getsockopt(abi.lib.QUIC_SOCKOPT_SESSION_TICKET, 4096)
    # Nothing, or the kernel's raw capture (a TLS NewSessionTicket message, type 4): never session data.
    assert blob == b"" or blob[0] == 4


def test_foreign_session_data_means_a_full_handshake(pki, server_factory, caplog):
    srv = ticket_server(server_factory, pki)
    sock = consumer_socket(srv, session=b"GnuTLS session data, not ours " * 4)
    with caplog.at_level(logging.INFO, logger="quichsd.daemon.request"):
        done = handle(HandshakeRequest(sock, CLIENT, AuthMode.UNAUTH, peername="localhost"),
                      client_config(pki))
    assert done.status == 0 and not done.resumed
    assert "ignoring session data the consumer set (120 bytes)" in caplog.text


def debug_config(config: DaemonConfig, loglevel: int = 1) -> DaemonConfig:
    return replace(config, debug=DebugSettings(loglevel=loglevel))


def completion_lines(caplog) -> list[tuple[str, str]]:  # noqa: ANN001
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.getMessage().startswith("Handshake ")]


def test_completion_lines_as_tlshd(pki, server_factory, caplog):
    """tlshd 1.4.0 log.c: the peer's address without a port (NI_NUMERICHOST)."""
    srv = ticket_server(server_factory, pki)
    config = debug_config(client_config(pki))
    with caplog.at_level(logging.INFO, logger="quichsd.daemon.request"):
        handle(HandshakeRequest(quic_client(srv), CLIENT, AuthMode.UNAUTH, peername="localhost"), config)
        handle(HandshakeRequest(quic_client(srv), CLIENT, AuthMode.UNAUTH, peername="elsewhere.example",
                                timeout_ms=5000), config)
        done = handle(HandshakeRequest(quic_client(srv), SERVER, AuthMode.UNAUTH), config)
    host, port = srv.address
    assert completion_lines(caplog) == [
        ("INFO", f"Handshake with 'localhost' ({host}) succeeded"),
        ("ERROR", f"Handshake with 'elsewhere.example' ({host}) failed"),
        ("ERROR", "Handshake request failed"),  # no name (a server does not look one up): tlshd's form
    ]
    assert done.address == f"{host}:{port}"  # the statistics keep the port


def test_completion_line_names_a_peer_that_closed_the_connection(pki, server_factory, caplog):
    """The address is read before the handshake, as tlshd does at ACCEPT: once the peer has
    closed the connection (here: its handshake takes no ALPN we offer) getpeername() is ENOTCONN."""
    srv = server_factory("sim", HandshakeConfig(server=True, cert_file=pki.cert_file, key_file=pki.key_file,
                                                alpns=["other"]))
    with caplog.at_level(logging.INFO, logger="quichsd.daemon.request"):
        done = handle(HandshakeRequest(quic_client(srv), CLIENT, AuthMode.UNAUTH, peername="localhost",
                                       timeout_ms=5000), debug_config(client_config(pki)))
    assert done.status == errno.EACCES
    assert completion_lines(caplog) == [("ERROR", f"Handshake with 'localhost' ({srv.address[0]}) failed")]
    assert done.address == f"{srv.address[0]}:{srv.address[1]}"


def test_completion_lines_only_with_debug_loglevel(pki, server_factory, caplog):
    """tlshd 1.4.0 logs completions only when [debug] loglevel is non-zero (any value)."""
    srv = ticket_server(server_factory, pki)
    with caplog.at_level(logging.DEBUG, logger="quichsd.daemon.request"):
        for loglevel in (0, 3):
            handle(HandshakeRequest(quic_client(srv), CLIENT, AuthMode.UNAUTH, peername="localhost"),
                   debug_config(client_config(pki), loglevel))
    assert completion_lines(caplog) == [("INFO", f"Handshake with 'localhost' ({srv.address[0]}) succeeded")]


def test_client_without_peername_takes_the_reverse_dns_name(pki, server_factory, caplog):
    """§9.2.3: no PEERNAME -> reverse lookup (127.0.0.1 is "localhost" in /etc/hosts), and the
    server is verified against that name."""
    import socket as _socket

    try:
        name = _socket.getnameinfo(("127.0.0.1", 0), _socket.NI_NAMEREQD)[0]
    except OSError:
        pytest.skip("127.0.0.1 has no reverse name on this machine (/etc/hosts)")
    if name != "localhost":
        pytest.skip(f"127.0.0.1 reverse-resolves to {name!r}, not the test certificate's localhost")
    srv = ticket_server(server_factory, pki)
    with caplog.at_level(logging.INFO, logger="quichsd.daemon.request"):
        done = handle(HandshakeRequest(quic_client(srv), CLIENT, AuthMode.UNAUTH, timeout_ms=5000),
                      debug_config(client_config(pki)))
    assert done.status == 0 and done.peername == "localhost"
    assert "Handshake with 'localhost' (127.0.0.1) succeeded" in caplog.text


def test_reverse_dns_names_are_kept_for_a_while(monkeypatch):
    """A name found is reused for the same host (any port) for REVERSE_DNS_TTL seconds;
    another host, an expired name and a failed lookup ask again."""
    import socket as _socket

    from quichsd.daemon import request as rq

    asked = []

    def getnameinfo(address, flags):
        asked.append(address)
        if address[0] == "192.0.2.9":
            raise _socket.gaierror(_socket.EAI_NONAME, "Name or service not known")
        return f"host-{address[0]}", "0"

    class Peer:
        def __init__(self, *address):
            self.address = address

        def getpeername(self):
            return self.address

    now = [1000.0]
    monkeypatch.setattr(rq.socket, "getnameinfo", getnameinfo)
    monkeypatch.setattr(rq.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(rq, "_reverse_dns", {})
    assert rq.reverse_lookup(Peer("192.0.2.1", 443)) == "host-192.0.2.1"
    assert rq.reverse_lookup(Peer("192.0.2.1", 444)) == "host-192.0.2.1"
    assert rq.reverse_lookup(Peer("2001:db8::1", 443, 0, 0)) == "host-2001:db8::1"
    assert len(asked) == 2
    now[0] += rq.REVERSE_DNS_TTL - 1
    assert rq.reverse_lookup(Peer("192.0.2.1", 443)) == "host-192.0.2.1" and len(asked) == 2
    now[0] += 2
    assert rq.reverse_lookup(Peer("192.0.2.1", 443)) == "host-192.0.2.1" and len(asked) == 3
    assert rq.reverse_lookup(Peer("192.0.2.9", 443)) is None
    assert rq.reverse_lookup(Peer("192.0.2.9", 443)) is None
    assert len(asked) == 5


@needs_keyctl
def test_bad_key_serials_are_eio(pki, server_factory, session):
    srv = server_factory("sim", HandshakeConfig(server=True, cert_file=pki.cert_file, key_file=pki.key_file))
    junk = kr.add_key("user", "not a certificate", b"junk", session)
    key = kr.add_key("user", "client key", der_key(pki.key_file), session)
    req = HandshakeRequest(quic_client(srv), CLIENT, AuthMode.X509, certificate=junk, private_key=key,
                           peername="localhost")
    assert handle(req, client_config(pki)) == DoneResult(errno.EIO, [])
    ring = kr.add_key("keyring", "not a psk", None, session)
    req = HandshakeRequest(quic_client(srv), CLIENT, AuthMode.PSK, peer_identities=(ring,))
    assert handle(req, DaemonConfig()).status == errno.EIO
    req = HandshakeRequest(quic_client(srv), CLIENT, AuthMode.PSK, peer_identities=(0x7FFFFFF0,))
    assert handle(req, DaemonConfig()).status == errno.EIO


# ---- server role ----------------------------------------------------------------------------


def test_x509_server(pki, peers):
    p = peer(peers)
    conn = p.start(HandshakeConfig(cafile=pki.ca_file, hostname="localhost"))
    config = DaemonConfig(server=X509Settings(certificate=pki.cert_file, private_key=pki.key_file))
    done = handle(HandshakeRequest(conn, SERVER, AuthMode.X509), config)
    assert done == DoneResult(0, [])  # no client certificate requested: no peer id
    assert p.join().alpn == "h3"
    assert conn.getsockopt(abi.lib.QUIC_SOCKOPT_ALPN, 256).rstrip(b"\0") == b"h3"  # written back


@needs_keyctl
def test_x509_server_from_serials_with_client_cert(pki, peers, session):
    p = peer(peers)
    conn = p.start(HandshakeConfig(cafile=pki.ca_file, hostname="localhost",
                                   cert_file=pki.cert_file, key_file=pki.key_file))
    conn.setsockopt(abi.lib.QUIC_SOCKOPT_CONFIG, abi.pack_config(certificate_request=2))
    cert = kr.add_key("user", "server cert", der_cert(pki.cert_file), session)
    key = kr.add_key("user", "server key", der_key(pki.key_file), session)
    config = DaemonConfig(server=X509Settings(truststore=pki.ca_file))
    done = handle(HandshakeRequest(conn, SERVER, AuthMode.X509, certificate=cert, private_key=key), config)
    assert done == DoneResult(0, [MUTUAL_AUTH_PEER_ID])
    assert not isinstance(p.join(), Exception)


def test_x509_server_per_alpn_credentials(pki, peers, tmp_path):
    smb_ca = make_ca("smb CA")
    smb_key = new_key("p256")
    (tmp_path / "ca.pem").write_bytes(smb_ca.cert.public_bytes(Encoding.PEM))
    (tmp_path / "smb.pem").write_bytes(smb_ca.issue("localhost", smb_key).public_bytes(Encoding.PEM))
    (tmp_path / "smb.key").write_bytes(smb_key.private_bytes(
        Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    p = peer(peers, alpn=b"smb", listen_alpn=b"h3,smb")
    conn = p.start(HandshakeConfig(cafile=str(tmp_path / "ca.pem"), hostname="localhost"))
    config = DaemonConfig(
        server=X509Settings(certificate=pki.cert_file, private_key=pki.key_file),
        alpn=(AlpnCredentials(b"smb", certificate=str(tmp_path / "smb.pem"),
                              private_key=str(tmp_path / "smb.key")),),
    )
    assert handle(HandshakeRequest(conn, SERVER, AuthMode.X509), config) == DoneResult(0, [])
    assert p.join().alpn == "smb"
    assert conn.getsockopt(abi.lib.QUIC_SOCKOPT_ALPN, 256).rstrip(b"\0") == b"smb"


def test_key_url_is_eio_with_a_clear_reason(pki, peers, caplog):
    """tlshd HEAD takes GnuTLS key URLs (pkcs11:...); we do not, and say so."""
    p = peer(peers)
    conn = p.start(HandshakeConfig(cafile=pki.ca_file, hostname="localhost", timeout=3))
    config = DaemonConfig(server=X509Settings(certificate=pki.cert_file,
                                              private_key="pkcs11:token=x;object=k"))
    done = handle(HandshakeRequest(conn, SERVER, AuthMode.X509, timeout_ms=3000), config)
    assert done.status == errno.EIO
    assert "is a key URL; only PEM files are supported" in caplog.text


def test_x509_server_without_certificate_is_eio(pki, peers):
    p = peer(peers)
    conn = p.start(HandshakeConfig(cafile=pki.ca_file, hostname="localhost", timeout=5))
    assert handle(HandshakeRequest(conn, SERVER, AuthMode.X509), DaemonConfig()) == DoneResult(errno.EIO, [])
    assert isinstance(p.join(), HandshakeError)


@needs_keyctl
def test_psk_server(peers, session):
    serial = kr.add_key("user", "client-7", PSK_KEY, session)
    p = peer(peers)
    conn = p.start(HandshakeConfig(psks=[ExternalPsk(b"client-7", PSK_KEY)]))
    done = handle(HandshakeRequest(conn, SERVER, AuthMode.PSK), DaemonConfig())
    assert done == DoneResult(0, [serial])
    assert p.join().psk_identity == b"client-7"


@needs_keyctl
def test_psk_server_issues_no_session_ticket(peers, session):
    """As tlshd's QUIC PSK server: no NewSessionTicket (a resumed session would lose the PSK's
    serial in REMOTE_AUTH); the client waiting for one gets none, and the handshake is fine."""
    serial = kr.add_key("user", "client-7", PSK_KEY, session)
    p = peer(peers)
    conn = p.start(HandshakeConfig(psks=[ExternalPsk(b"client-7", PSK_KEY)], ticket_wait=0.5, timeout=5))
    assert handle(HandshakeRequest(conn, SERVER, AuthMode.PSK), DaemonConfig()) == DoneResult(0, [serial])
    result = p.join()
    assert not isinstance(result, HandshakeError) and result.session_data is None


@needs_keyctl
def test_psk_server_unknown_identity_is_ekeyrejected(peers, session):
    kr.add_key("user", "client-7", PSK_KEY, session)
    p = peer(peers)
    conn = p.start(HandshakeConfig(psks=[ExternalPsk(b"stranger", PSK_KEY)], timeout=5))
    assert handle(HandshakeRequest(conn, SERVER, AuthMode.PSK, timeout_ms=5000), DaemonConfig()) == \
        DoneResult(errno.EKEYREJECTED, [])
    assert isinstance(p.join(), HandshakeError)


def test_unauth_server_is_eio(peers):
    p = peer(peers)
    conn = p.start(HandshakeConfig(hostname="localhost", timeout=1))
    done = handle(HandshakeRequest(conn, SERVER, AuthMode.UNAUTH), DaemonConfig())
    assert done == DoneResult(errno.EIO, [])


# ---- dispatch and request validation ---------------------------------------------------------


def test_tcp_socket_goes_to_the_tcp_path():
    # An x509 client without a certificate is EIO there (§6.1): tests/daemon/test_tcp_request.py.
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    try:
        for sock in (client, client.fileno()):
            assert handle(HandshakeRequest(sock, CLIENT, AuthMode.X509, peername="localhost"),
                          DaemonConfig()) == DoneResult(errno.EIO, [])
    finally:
        client.close()
        listener.close()


def test_unix_socketpair_is_eopnotsupp():
    a, b = socket.socketpair()
    with a, b:
        assert handle(HandshakeRequest(a.fileno(), SERVER, AuthMode.PSK),
                      DaemonConfig()).status == errno.EOPNOTSUPP


@pytest.mark.parametrize("message_type, auth_mode",
                         [(0, AuthMode.X509), (3, AuthMode.X509), (CLIENT, 0), (CLIENT, 7)])
def test_unrecognized_type_or_mode_is_eio(message_type, auth_mode):
    with QuicSocket(socket.AF_INET, backend="sim") as sock:
        assert handle(HandshakeRequest(sock, message_type, auth_mode),
                      DaemonConfig()) == DoneResult(errno.EIO, [])


def test_never_raises():
    done = handle(HandshakeRequest(object(), CLIENT, AuthMode.X509), DaemonConfig())
    assert done == DoneResult(errno.EIO, [])
    assert handle(HandshakeRequest(-1, CLIENT, AuthMode.X509), DaemonConfig()).status != 0
