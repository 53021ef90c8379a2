"""TLS-over-TCP requests (quichsd/daemon/tcp_request.py, spec tlshd-behaviour §3.2, §3.3, §6,
§9.3) on real loopback TCP connections; the other end is our own TcpTlsHandshake in a thread.

The host has no kTLS: through request.handle() the install fails and the status is EIO
(test_handle_installs_ktls_or_says_eio). The handshake statuses are checked through
TcpRequest with the kTLS install replaced by `Installed`, which takes the keys the kernel
would get and carries data both ways with them in userspace: what kTLS would do.
"""
from __future__ import annotations

import errno
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from quichsd.daemon import keyring as kr
from quichsd.daemon.config import DaemonConfig, X509Settings
from quichsd.daemon.keyring import MUTUAL_AUTH_PEER_ID, AuthMode, KeyringError
from quichsd.daemon.request import DoneResult, HandshakeRequest, MessageType, handle
from quichsd.daemon.tcp_request import TcpRequest, psk_profile
from quichsd.tcp.handshake import ApplicationKeys, LocalAlert, PeerAlert, TcpTlsHandshake
from quichsd.tls.client import ClientEngine
from quichsd.tls.config import ClientAuth, Credentials
from quichsd.tls.constants import AlertDescription, CipherSuite, PskKeyExchangeMode
from quichsd.tls.server import ServerEngine
from tests.daemon.conftest import needs_keyctl
from tests.pki import make_ca, new_key
from tests.tcp.tlstcp import PSK_KEY, AppChannel, client_config, server_config

CLIENT, SERVER = MessageType.CLIENTHELLO, MessageType.SERVERHELLO
TIMEOUT_MS = 5000
TO_PEER, TO_DAEMON = b"from the daemon's socket\n", b"from the peer\n"


@dataclass
class Installed:
    """The kTLS install seam: keeps the keys and checks them with data both ways."""

    keys: ApplicationKeys | None = None
    received: bytes = b""
    nodelay: int = -1

    def __call__(self, sock: socket.socket, keys: ApplicationKeys) -> None:
        self.keys = keys
        self.nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        channel = AppChannel(sock, keys)
        channel.send(TO_PEER)
        self.received = channel.recv_until(b"\n")


@dataclass
class PeerEnd:
    """The other end of the connection: our handshake as `engine` does it, then one line
    each way; what went wrong in `error`."""

    sock: socket.socket
    engine: ClientEngine | ServerEngine
    error: BaseException | None = None
    received: bytes = b""
    peer_certificates: tuple[Any, ...] = ()
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            handshake = TcpTlsHandshake(self.sock, self.engine)
            complete = handshake.run(TIMEOUT_MS / 1000)
            self.peer_certificates = complete.peer_certificates
            assert handshake.keys is not None
            channel = AppChannel(self.sock, handshake.keys)
            channel.send(TO_DAEMON)
            self.received = channel.recv_until(b"\n")
        except Exception as exc:
            self.error = exc
        finally:
            self.sock.close()

    def join(self) -> PeerEnd:
        self.thread.join(TIMEOUT_MS / 1000 + 5)
        assert not self.thread.is_alive()
        return self


@pytest.fixture
def connection() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(daemon's end, peer's end) of one loopback TCP connection."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        peer = socket.create_connection(listener.getsockname())
        mine, _ = listener.accept()
    with mine, peer:
        yield mine, peer


def daemon_config(pki: Any, *, client_trust: str | None = None, server_cert: bool = True) -> DaemonConfig:
    cert = pki.cert_file if server_cert else None
    key = pki.key_file if server_cert else None
    return DaemonConfig(
        client=X509Settings(truststore=client_trust or pki.ca_file, certificate=pki.cert_file,
                            private_key=pki.key_file),
        server=X509Settings(truststore=pki.ca_file, certificate=cert, private_key=key))


def served(sock: socket.socket, mode: AuthMode) -> HandshakeRequest:
    return HandshakeRequest(sock, SERVER, mode, timeout_ms=TIMEOUT_MS)


def asked(sock: socket.socket, mode: AuthMode, **kwargs: Any) -> HandshakeRequest:
    return HandshakeRequest(sock, CLIENT, mode, timeout_ms=TIMEOUT_MS, **kwargs)


def run(request: HandshakeRequest, config: DaemonConfig, install: Callable[..., object],
        mode: AuthMode | None = None) -> DoneResult:
    assert isinstance(request.sock, socket.socket)
    return TcpRequest(request, config, request.sock, mode or AuthMode(request.auth_mode),
                      install=install).run(MessageType(request.message_type))


def ktls_available() -> bool:
    with socket.create_server(("127.0.0.1", 0)) as listener, \
            socket.create_connection(listener.getsockname()) as probe:
        try:
            probe.setsockopt(socket.IPPROTO_TCP, 31, b"tls")  # TCP_ULP
        except OSError:
            return False
    return True


# -- through request.handle(): the dispatch and the real kTLS install -------------------------------


def test_handle_installs_ktls_or_says_eio(connection, pki) -> None:
    mine, theirs = connection
    peer = PeerEnd(theirs, ServerEngine(server_config()))
    done = handle(HandshakeRequest(mine, CLIENT, AuthMode.UNAUTH, peername="localhost",
                                   timeout_ms=TIMEOUT_MS), daemon_config(pki))
    # One DoneResult: 0 where the kernel took the session, EIO where it has no kTLS (this host).
    assert done.status == (0 if ktls_available() else errno.EIO)
    assert done.role == "client"
    mine.shutdown(socket.SHUT_RDWR)
    peer.join()
    assert not isinstance(peer.error, (LocalAlert, PeerAlert))  # its handshake completed


def test_handle_server_unauth_is_eio(connection, pki) -> None:
    mine, _ = connection
    done = handle(served(mine, AuthMode.UNAUTH), daemon_config(pki))
    assert done == DoneResult(errno.EIO)


def test_handle_unknown_message_type_is_eio(connection, pki) -> None:
    mine, _ = connection
    assert handle(HandshakeRequest(mine, 7, AuthMode.X509), daemon_config(pki)).status == errno.EIO


def test_handle_udp_socket_is_eopnotsupp(pki) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.connect(("127.0.0.1", 9))
        done = handle(HandshakeRequest(udp, CLIENT, AuthMode.UNAUTH), daemon_config(pki))
    assert done.status == errno.EOPNOTSUPP


# -- clients (§6.1) ---------------------------------------------------------------------------------


def test_anonymous_client_verifies_the_server_and_carries_data(connection, pki) -> None:
    mine, theirs = connection
    mine.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
    peer = PeerEnd(theirs, ServerEngine(server_config()))
    installed = Installed()
    done = run(asked(mine, AuthMode.UNAUTH, peername="localhost"),
               daemon_config(pki), installed)
    peer.join()
    assert done.status == 0 and done.remote_auth == [], done
    assert (installed.received, peer.received) == (TO_DAEMON, TO_PEER)
    assert installed.keys is not None and installed.keys.tx_sequence == installed.keys.rx_sequence == 0
    assert peer.peer_certificates == ()  # no client certificate in unauth mode
    # TCP_NODELAY forced for the handshake, the consumer's 0 back before kTLS (§3.3).
    assert installed.nodelay == 0 and mine.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0


def test_anonymous_client_checks_the_peername(connection, pki) -> None:
    mine, theirs = connection
    peer = PeerEnd(theirs, ServerEngine(server_config()))
    installed = Installed()
    done = run(asked(mine, AuthMode.UNAUTH, peername="other.example"),
               daemon_config(pki), installed)
    peer.join()
    assert done.status == errno.EACCES and installed.keys is None
    assert isinstance(peer.error, PeerAlert)  # our client said why


def test_anonymous_client_untrusted_server_is_eacces(connection, pki, tmp_path) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    other = tmp_path / "other-ca.pem"
    other.write_bytes(make_ca("nobody trusts this").cert.public_bytes(Encoding.PEM))
    mine, theirs = connection
    peer = PeerEnd(theirs, ServerEngine(server_config()))
    done = run(asked(mine, AuthMode.UNAUTH, peername="localhost"),
               daemon_config(pki, client_trust=str(other)), Installed())
    peer.join()
    assert done.status == errno.EACCES
    assert isinstance(peer.error, PeerAlert)
    assert peer.error.alert in (AlertDescription.unknown_ca, AlertDescription.bad_certificate)


def test_client_without_peername_uses_reverse_dns(connection, pki) -> None:
    mine, theirs = connection
    try:
        name = socket.getnameinfo(mine.getpeername(), socket.NI_NAMEREQD)[0]
    except OSError:
        pytest.skip("127.0.0.1 has no reverse DNS name here (add 'localhost' to /etc/hosts)")
    if name != "localhost":
        pytest.skip(f"127.0.0.1 reverse-resolves to {name!r}, not the test certificate's localhost")
    peer = PeerEnd(theirs, ServerEngine(server_config()))
    done = TcpRequest(asked(mine, AuthMode.UNAUTH), daemon_config(pki), mine, AuthMode.UNAUTH,
                      peer=mine.getpeername(), install=Installed()).run(CLIENT)
    peer.join()
    assert (done.status, done.peername) == (0, "localhost")


def test_client_without_any_peer_name_is_eio_not_a_crash(pki) -> None:
    # tlshd 1.4's child dies in strlen(NULL) here and sends no DONE (§9.5).
    with socket.create_server(("127.0.0.2", 0)) as listener:
        try:
            socket.getnameinfo(listener.getsockname(), socket.NI_NAMEREQD)
            pytest.skip("127.0.0.2 has a reverse DNS name here")
        except OSError:
            pass
        with socket.create_connection(listener.getsockname()) as mine:
            theirs, _ = listener.accept()
            with theirs:
                done = handle(HandshakeRequest(mine, CLIENT, AuthMode.UNAUTH, timeout_ms=TIMEOUT_MS),
                              daemon_config(pki))
    assert done.status == errno.EIO


@needs_keyctl
def test_x509_client_sends_its_certificate(connection, pki, user_keyring_links) -> None:
    mine, theirs = connection
    peer = PeerEnd(theirs, ServerEngine(server_config(client_auth=ClientAuth.REQUIRED)))
    done = run(asked(mine, AuthMode.X509, peername="localhost"),
               daemon_config(pki), Installed())
    user_keyring_links.extend(done.remote_auth)
    peer.join()
    assert done.status == 0 and peer.error is None and len(peer.peer_certificates) == 1
    assert len(done.remote_auth) == 1  # one "TLS x509 localhost" key per server certificate (§6.4)


def test_x509_client_without_credentials_is_eio(connection, pki) -> None:
    mine, _ = connection
    config = DaemonConfig(client=X509Settings(truststore=pki.ca_file))
    done = run(asked(mine, AuthMode.X509, peername="localhost"),
               config, Installed())
    assert done.status == errno.EIO


@needs_keyctl
def test_psk_client(connection, pki, session) -> None:
    mine, theirs = connection
    serial = kr.add_key("user", "quichsd-test", PSK_KEY, session)
    peer = PeerEnd(theirs, ServerEngine(server_config(psk=PSK_KEY)))
    installed = Installed()
    done = run(HandshakeRequest(mine, CLIENT, AuthMode.PSK, peer_identities=(serial,), timeout_ms=TIMEOUT_MS),
               daemon_config(pki), installed)
    peer.join()
    assert done == DoneResult(0, [serial])  # the local PSK's own serial (§6.4)
    assert (installed.received, peer.received) == (TO_DAEMON, TO_PEER)
    assert done.suite in ("TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256")


@needs_keyctl
def test_psk_client_wrong_key_is_eacces(connection, pki, session) -> None:
    mine, theirs = connection
    serial = kr.add_key("user", "quichsd-test", bytes(32), session)
    peer = PeerEnd(theirs, ServerEngine(server_config(psk=PSK_KEY)))
    done = run(HandshakeRequest(mine, CLIENT, AuthMode.PSK, peer_identities=(serial,), timeout_ms=TIMEOUT_MS),
               daemon_config(pki), Installed())
    peer.join()
    assert done.status == errno.EACCES
    assert isinstance(peer.error, LocalAlert) and peer.error.alert == AlertDescription.decrypt_error


@needs_keyctl
def test_psk_client_unknown_identity_is_ekeyrejected_and_not_retried(connection, pki, session) -> None:
    mine, theirs = connection
    unknown = kr.add_key("user", "nobody-knows-me", PSK_KEY, session)
    known = kr.add_key("user", "quichsd-test", PSK_KEY, session)
    peer = PeerEnd(theirs, ServerEngine(server_config(psk=PSK_KEY)))
    done = run(HandshakeRequest(mine, CLIENT, AuthMode.PSK, peer_identities=(unknown, known),
                                timeout_ms=TIMEOUT_MS), daemon_config(pki), Installed())
    peer.join()
    # tlshd HEAD: the alert unknown_psk_identity gives EKEYREJECTED; only EACCES tries the next.
    assert done.status == errno.EKEYREJECTED


def test_psk_client_without_identities_is_eio(connection, pki) -> None:
    mine, _ = connection
    assert run(asked(mine, AuthMode.PSK), daemon_config(pki), Installed()).status == errno.EIO


@pytest.mark.parametrize(("identity", "length", "expected"), [
    ("host-1", 32, ("sha256", (CipherSuite.AES_128_GCM_SHA256, CipherSuite.CHACHA20_POLY1305_SHA256), True)),
    ("host-1", 48, ("sha384", (CipherSuite.AES_256_GCM_SHA384,), True)),
    ("host-1", 20, ("sha256", (CipherSuite.AES_128_GCM_SHA256, CipherSuite.AES_256_GCM_SHA384,
                               CipherSuite.CHACHA20_POLY1305_SHA256), False)),
    ("NVMe0R01 hostnqn subnqn", 32, ("sha256", (CipherSuite.AES_128_GCM_SHA256,
                                                CipherSuite.CHACHA20_POLY1305_SHA256), True)),
    ("NVMe1R02 hostnqn subnqn", 48, ("sha384", (CipherSuite.AES_256_GCM_SHA384,), True)),
])
def test_psk_profile_follows_tlshds_priority_caches(identity, length, expected) -> None:
    hash_name, suites, modes = psk_profile(identity, bytes(length))
    dhe_only = modes == (PskKeyExchangeMode.PSK_DHE_KE,)
    assert (hash_name, suites, dhe_only) == expected


def test_psk_profile_refuses_an_nvme_identity_with_another_hash() -> None:
    from quichsd.daemon.request import _SetupError

    with pytest.raises(_SetupError, match="invalid key identity"):
        psk_profile("NVMe0R03 hostnqn subnqn", bytes(32))


# -- servers (§6.2) ---------------------------------------------------------------------------------


def test_x509_server_with_client_certificate(connection, pki) -> None:
    mine, theirs = connection
    peer = PeerEnd(theirs, ClientEngine(client_config(with_cert=True)))
    installed = Installed()
    done = run(served(mine, AuthMode.X509), daemon_config(pki), installed)
    peer.join()
    assert done == DoneResult(0, [MUTUAL_AUTH_PEER_ID])  # tlshd 1.4's sentinel per certificate
    assert (installed.received, peer.received) == (TO_DAEMON, TO_PEER)


def test_x509_server_client_certificate_not_required(connection, pki) -> None:
    mine, theirs = connection
    peer = PeerEnd(theirs, ClientEngine(client_config()))
    done = run(served(mine, AuthMode.X509), daemon_config(pki), Installed())
    peer.join()
    assert done == DoneResult(0, []) and peer.error is None


def test_x509_server_untrusted_client_certificate_is_eacces(connection, pki) -> None:
    mine, theirs = connection
    stranger_key = new_key("p256")
    stranger = Credentials([make_ca("a stranger's CA").issue("client", stranger_key)], stranger_key)
    peer = PeerEnd(theirs, ClientEngine(client_config(credentials=stranger)))
    done = run(served(mine, AuthMode.X509), daemon_config(pki), Installed())
    peer.join()
    assert done.status == errno.EACCES
    # A TLS 1.3 client is done before the server checks its certificate: it reads the alert
    # where it expected application data.
    assert isinstance(peer.error, EOFError) and "unknown_ca" in str(peer.error)


def test_x509_server_without_certificate_sends_access_denied_and_is_eio(connection, pki) -> None:
    mine, theirs = connection
    peer = PeerEnd(theirs, ClientEngine(client_config()))
    done = run(served(mine, AuthMode.X509),
               daemon_config(pki, server_cert=False), Installed())
    peer.join()
    assert done.status == errno.EIO
    assert isinstance(peer.error, PeerAlert) and peer.error.alert == AlertDescription.access_denied


@needs_keyctl
def test_psk_server_takes_no_user_key(connection, pki, session) -> None:
    """tlshd's TCP server looks for "psk" keys only (§5); a "user" key of the identity is not
    found: the client is told unknown_psk_identity and the status is EACCES."""
    mine, theirs = connection
    kr.add_key("user", "quichsd-test", PSK_KEY, session)
    peer = PeerEnd(theirs, ClientEngine(client_config(psk=PSK_KEY)))
    done = run(served(mine, AuthMode.PSK), daemon_config(pki), Installed())
    peer.join()
    assert done.status == errno.EACCES
    assert isinstance(peer.error, PeerAlert) and peer.error.alert == AlertDescription.unknown_psk_identity


@needs_keyctl
def test_psk_server(connection, pki, session) -> None:
    try:
        serial = kr.add_key("psk", "quichsd-test", PSK_KEY, session)
    except KeyringError as exc:
        pytest.skip(f"no 'psk' key type here ({exc}): it comes with the nvme-keyring module "
                    "(the QEMU tier's test_kernel_ktls runs this case)")
    mine, theirs = connection
    peer = PeerEnd(theirs, ClientEngine(client_config(psk=PSK_KEY)))
    installed = Installed()
    done = run(served(mine, AuthMode.PSK), daemon_config(pki), installed)
    peer.join()
    assert done == DoneResult(0, [serial])
    assert (installed.received, peer.received) == (TO_DAEMON, TO_PEER)


# -- the connection itself ------------------------------------------------------------------------


def test_peer_closing_mid_handshake_is_etimedout(connection, pki) -> None:
    mine, theirs = connection
    theirs.close()  # tlshd: "premature termination", the kernel consumer retries
    done = run(served(mine, AuthMode.X509), daemon_config(pki), Installed())
    assert done.status == errno.ETIMEDOUT


def test_silent_peer_is_eacces_at_the_timeout(connection, pki) -> None:
    mine, _ = connection
    done = run(HandshakeRequest(mine, SERVER, AuthMode.X509, timeout_ms=200), daemon_config(pki), Installed())
    assert done.status == errno.EACCES  # GnuTLS's own timeout is a fatal error (§3.3)


def test_nonblocking_consumer_fd_stays_nonblocking(connection, pki) -> None:
    mine, theirs = connection
    os.set_blocking(mine.fileno(), False)  # SunRPC's sockets are O_NONBLOCK (§1.6)
    peer = PeerEnd(theirs, ClientEngine(client_config()))
    blocking: list[bool] = []
    installed = Installed()

    def install(sock: socket.socket, keys: ApplicationKeys) -> None:
        blocking.append(os.get_blocking(sock.fileno()))
        os.set_blocking(sock.fileno(), True)  # for the userspace records of Installed
        installed(sock, keys)

    done = run(served(mine, AuthMode.X509), daemon_config(pki), install)
    peer.join()
    assert done.status == 0 and blocking == [False]
    assert (installed.received, peer.received) == (TO_DAEMON, TO_PEER)


def test_handle_closes_nothing_of_the_consumers(connection, pki) -> None:
    mine, _ = connection
    handle(HandshakeRequest(mine, SERVER, AuthMode.X509, timeout_ms=100), daemon_config(pki))
    assert mine.fileno() >= 0 and mine.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM

