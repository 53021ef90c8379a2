"""One handshake request: what an ACCEPT reply carries, run to a DONE status (spec tlshd-behaviour
§1.5, §1.7, §3.1-3.4, §6, §9.3).

`handle(request, config)` never raises and returns exactly one `DoneResult` per request:

    status       0, or a positive errno as DONE's STATUS attribute carries it (§9.3):
                 EACCES       a TLS failure (certificate, alert received, no common cipher ...)
                 ETIMEDOUT    the request's timeout (or the configured default) expired
                 EIO          anything before or after the handshake: unknown message type
                              or auth mode, unreadable key serials or credential files, no PSK
                              identity, no ALPN, an unexpected exception
                 EOPNOTSUPP   the socket is neither IPPROTO_QUIC nor IPPROTO_TCP
                 EKEYREJECTED a PSK identity was unknown: we (server) found no key for the
                              client's identity, or the peer answered unknown_psk_identity
                 other errno  a QUIC socket option / send / recv failure, passed through
    remote_auth  DONE's REMOTE_AUTH serials (§6.4), only when status is 0

How the QUIC path is configured (§3.4, §6):

    client x509    trust store [authenticate.client] x509.truststore (None: system), server
                   name = PEERNAME. Client certificate from the CERT/PRIVKEY serials, else
                   from x509.certificate / x509.private_key; with neither it is EIO, as
                   tlshd (spec §6.1: the client certificate and key are required).
    client unauth  no client certificate. DIFFERENCE FROM tlshd: tlshd's QUIC client does no
                   server verification at all in UNAUTH mode (and when the socket's
                   certificate_request is 3); we still verify the server's chain against
                   the client trust store and its name against PEERNAME, as tlshd's TCP
                   unauth client does. Without PEERNAME that is impossible, so it is EIO.
    client psk     the first PEER_IDENTITY only: identity = the key's description, key = its
                   payload (any readable key type). No remote peer id.
    server x509    certificate/key from the serials, else [alpn:...] / [authenticate.server]
                   via config.server_x509(alpn, sni), chosen in the ClientHello hook; client
                   certificates per the socket's certificate_request (0 ignore, 1 request,
                   2 require), verified against the chosen truststore.
    server psk     each offered identity is looked up ("psk" key, then "user" key) from
                   the session keyring; the first found is accepted and its serial is the
                   remote peer id. None found: the handshake fails with EKEYREJECTED.
    server unauth  EIO, as tlshd.
    ALPN           the socket's QUIC_SOCKOPT_ALPN list; the server writes the selected
                   protocol back to the socket from the ClientHello hook, as tlshd does.

Session tickets for consumers (kernel-quic-abi §2.6, tlshd-behaviour §3.4):

    client         SESSION_TICKET read before the handshake is the consumer's session data
                   from an earlier connection: resume with it (data we cannot parse is
                   logged and ignored: a full handshake). After success, when the socket's
                   quic_config.receive_session_ticket is N > 0, wait up to N seconds (within
                   the request's timeout) for the kernel-captured NewSessionTicket and store
                   the resulting session data back with setsockopt(SESSION_TICKET) for the
                   consumer. DIFFERENCE FROM tlshd: tlshd keeps only the lowest bit of N and
                   always waits 1 s; we honour N as the seconds the field means.
    server         x509 mode: the 64-byte ticket key from getsockopt(SESSION_TICKET); one
                   NewSessionTicket after the handshake (the handshake API does both). PSK
                   mode: no tickets, as tlshd (its QUIC PSK server enables none): a session
                   resumed from one would no longer name the PSK's key serial in REMOTE_AUTH,
                   and a ticket per handshake is a seal, a send and the client's receive of
                   work that no consumer of tlshd's PSK mode expects.

0-RTT, as tlshd (GNUTLS_ENABLE_EARLY_DATA in both roles of its QUIC path):

    client         when the consumer's session data allows early data (its ticket carried
                   max_early_data_size), the ClientHello offers it and the EARLY key is
                   installed, which releases the stream data the consumer queued with
                   sendmsg() before the upcall (having restored the server's transport
                   parameters, kernel-quic-abi §2.6). A refused offer still resumes; the
                   kernel then resends that data in 1-RTT.
    server         tickets allow early data (max_early_data_size 0xffffffff, RFC 9001
                   §4.6.1) and 0-RTT is accepted under the engine's anti-replay policy
                   (README "0-RTT anti-replay policy": first PSK, our own ticket, same suite
                   and ALPN, ticket age within 10 s, each ticket once per worker process).

The TCP path (TLS 1.3, then kTLS) is tcp_request.py's; its statuses are the same set.
"""
from __future__ import annotations

import contextlib
import enum
import errno
import functools
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from .. import abi
from ..handshake import HandshakeConfig, HandshakeError, HandshakeResult, quic_handshake
from ..sock import QuicSocketBackend, SocketLike, as_backend
from ..tls.certs import TrustStore
from ..tls.config import ClientAuth, ClientHelloInfo, Credentials, ExternalPsk, ServerChoice
from ..tls.constants import AlertDescription, CipherSuite
from ..tls.errors import TlsError
from ..tls.session import SessionData
from . import keyring as kr
from .config import NOTICE, DaemonConfig, is_key_url
from .keyring import AuthMode
from .preload import FILES

log = logging.getLogger(__name__)

IPPROTO_QUIC = 261
SO_PROTOCOL = getattr(socket, "SO_PROTOCOL", 38)
ALPN_BUFFER = 256
SESSION_TICKET_MAX = 4096
CONFIG_BUFFER = 24
# quic_config.certificate_request on a client socket: no client cert, no verification (§3.4).
CLIENT_NO_VERIFY = 3
# quic_config.payload_cipher_type (TLS_CIPHER_*) -> the suite it restricts the handshake to.
_CIPHERS = {
    51: CipherSuite.AES_128_GCM_SHA256,
    52: CipherSuite.AES_256_GCM_SHA384,
    54: CipherSuite.CHACHA20_POLY1305_SHA256,
}


@functools.lru_cache(maxsize=16)
def _suite_name(suite: int) -> str:
    try:
        return "TLS_" + CipherSuite(suite).name
    except ValueError:
        return f"0x{suite:04x}"


@functools.lru_cache(maxsize=64)
def _parse_alpns(raw: bytes) -> tuple[bytes, ...]:
    """QUIC_SOCKOPT_ALPN's comma-separated list (one parse per distinct value)."""
    return tuple(a for a in (item.lstrip(b" ") for item in raw.rstrip(b"\0").split(b",")) if a)


@functools.lru_cache(maxsize=64)
def _parse_config(raw: bytes) -> tuple[int, int, int]:
    """(payload_cipher_type, certificate_request, receive_session_ticket) of a quic_config
    (one unpack per distinct value: consumers set the same few)."""
    fields = abi.unpack_config(raw)
    return (int(fields.get("payload_cipher_type", 0) or 0), int(fields.get("certificate_request", 0) or 0),
            int(fields.get("receive_session_ticket", 0) or 0))


class MessageType(enum.IntEnum):
    """ACCEPT MESSAGE_TYPE (§1.5)."""

    CLIENTHELLO = 1
    SERVERHELLO = 2


@dataclass(frozen=True)
class HandshakeRequest:
    """The fields of one ACCEPT reply (§1.5). Serials are key serials; 0 means none."""

    sock: SocketLike  # a QuicSocket or backend, a socket.socket, or the fd number from SOCKFD
    message_type: int
    auth_mode: int
    peer_identities: tuple[int, ...] = ()
    certificate: int = 0
    private_key: int = 0
    peername: str | None = None
    timeout_ms: int = 0  # 0 (absent): config.default_timeout
    keyring: int = 0


@dataclass(frozen=True)
class DoneResult:
    """What DONE reports: STATUS and, on success, REMOTE_AUTH (§1.7). The other fields
    never reach the kernel; they feed the completion log line and the statistics."""

    status: int
    remote_auth: list[int] = field(default_factory=list)
    role: str = field(default="", compare=False)
    alpn: str = field(default="", compare=False)
    suite: str = field(default="", compare=False)
    resumed: bool = field(default=False, compare=False)
    early_data: bool = field(default=False, compare=False)  # 0-RTT accepted (server) / by the peer (client)
    peername: str = field(default="", compare=False)  # PEERNAME, or what reverse DNS found
    address: str = field(default="", compare=False)  # the peer's address and port


class _SetupError(Exception):
    """A failure before or after the TLS exchange itself: DONE gets `status` (EIO usually)."""

    def __init__(self, message: str, status: int = errno.EIO) -> None:
        super().__init__(message)
        self.status = status


def handle(request: HandshakeRequest, config: DaemonConfig,
           on_wait: Callable[[], None] | None = None) -> DoneResult:
    """Run `request` to its DONE result and log the outcome as tlshd does. Never raises.
    `on_wait` is called (once) when the request first waits: for the peer's answer, or for
    a reverse DNS lookup (the worker passes the listening on then)."""
    role = "client" if request.message_type == MessageType.CLIENTHELLO else "server"
    backend: QuicSocketBackend | None = None
    owned = False
    host = address = ""
    try:
        backend, owned = _open(request.sock)
        # Before the handshake, as tlshd (at ACCEPT): a failed handshake closes the
        # connection, and the kernel's getpeername() then says ENOTCONN.
        host, address, peer = _peer(backend)
        result = _handle(request, config, backend, address, peer, on_wait)
    except _SetupError as exc:
        log.error("handshake setup failed: %s", exc)
        result = DoneResult(exc.status, role=role)
    except Exception as exc:  # never let a request go without its DONE
        # Type and text only: no traceback locals, no key material.
        log.error("handshake failed unexpectedly: %s: %s", type(exc).__name__, exc)
        log.debug("unexpected handshake failure", exc_info=True)
        result = DoneResult(errno.EIO, role=role)
    finally:
        if owned and backend is not None:
            with contextlib.suppress(OSError):
                backend.close()
    if result.address != address:
        result = replace(result, address=address)
    if config.debug.loglevel:
        _log_completion(request, result, host)
    return result


def _peer(sock: QuicSocketBackend) -> tuple[str, str, Any]:
    """The socket's peer: its host as tlshd logs it (getnameinfo NI_NUMERICHOST: "192.0.2.1",
    "2001:db8::1"), host with port ("192.0.2.1:443", "[2001:db8::1]:443", for the
    statistics) and getpeername()'s answer; ("", "", None) if unknown."""
    try:
        address = sock.getpeername()
    except (OSError, AttributeError, ValueError):
        return "", "", None
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = str(address[0]), address[1]
        return host, f"[{host}]:{port}" if ":" in host else f"{host}:{port}", address
    text = str(address) if address else ""
    return text, text, address


# Reverse DNS names found, per peer address: (expiry on time.monotonic(), name). A client
# request without PEERNAME needs one (tlshd calls getnameinfo per request); kept this long,
# as a name service cache would (nscd keeps hosts an hour), a consumer's reconnections to
# the same server do not each read /etc/hosts or ask DNS. Failures are not kept.
REVERSE_DNS_TTL = 30.0
_REVERSE_DNS_MAX = 256
_reverse_dns: dict[tuple[Any, ...], tuple[float, str]] = {}


def cached_reverse_name(address: Any) -> str | None:
    """The reverse DNS name kept for `address` (getpeername()'s answer), if still fresh."""
    try:
        cached = _reverse_dns.get((address[0], *address[3:4]))
    except (TypeError, IndexError, KeyError):
        return None
    return cached[1] if cached is not None and cached[0] > time.monotonic() else None


def reverse_lookup(sock: Any, address: Any = None) -> str | None:
    """The peer's name by reverse DNS, for a client request without PEERNAME (§9.2.3, as
    tlshd); None when there is no name. Servers do not look up: there it would only name a
    log line, at the price of a DNS query per handshake. A name found is reused for the
    same address for REVERSE_DNS_TTL seconds. `address`: the peer's, if read already."""
    try:
        if address is None:
            address = sock.getpeername()
        key = (address[0], *address[3:4])  # the host (and an IPv6 scope): not the port
        now = time.monotonic()
        cached = _reverse_dns.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        name, _ = socket.getnameinfo(tuple(address[:2]), socket.NI_NAMEREQD)
    except (OSError, AttributeError, ValueError, TypeError, IndexError) as exc:
        log.debug("no reverse DNS name for the peer: %s", exc)
        return None
    if len(_reverse_dns) >= _REVERSE_DNS_MAX:
        _reverse_dns.clear()
    _reverse_dns[key] = (now + REVERSE_DNS_TTL, name)
    log.debug("PEERNAME from reverse DNS: %s", name)
    return name


def _log_completion(request: HandshakeRequest, result: DoneResult, host: str) -> None:
    """tlshd 1.4.0's completion lines (§2.7, log.c tlshd_log_completion), logged only when
    [debug] loglevel is non-zero: INFO on success, ERR on failure; the address without port."""
    outcome = "succeeded" if result.status == 0 else "failed"
    level = logging.INFO if result.status == 0 else logging.ERROR
    name = result.peername or request.peername
    if name and host:
        log.log(level, "Handshake with '%s' (%s) %s", name, host, outcome)
    else:
        log.log(level, "Handshake request %s", outcome)


def _handle(request: HandshakeRequest, config: DaemonConfig, backend: QuicSocketBackend, address: str,
            peer: Any = None, on_wait: Callable[[], None] | None = None) -> DoneResult:
    proto = _transport(backend)
    tcp_sock = backend.sock if proto == socket.IPPROTO_TCP else None
    if proto != IPPROTO_QUIC and tcp_sock is None:
        log.error("Unsupported ip_proto (%d)", proto)
        return DoneResult(errno.EOPNOTSUPP)
    try:
        message_type = MessageType(request.message_type)
    except ValueError:
        raise _SetupError(f"Unrecognized handshake type ({request.message_type})") from None
    try:
        mode = AuthMode(request.auth_mode)
    except ValueError:
        raise _SetupError(f"Unrecognized auth mode ({request.auth_mode})") from None
    # Linked into the session keyring while the request runs, unlinked after (§5).
    with kr.REQUEST_KEYRINGS.linked(request.keyring) if request.keyring else contextlib.nullcontext():
        if tcp_sock is not None:
            from .tcp_request import TcpRequest  # it imports this module's helpers

            return TcpRequest(request, config, tcp_sock, mode, address, peer, on_wait).run(message_type)
        quic = _QuicHandshake(request, config, backend, mode, address, peer, on_wait)
        if message_type is MessageType.CLIENTHELLO:
            return quic.client()
        return quic.server()


def _open(sock: SocketLike) -> tuple[QuicSocketBackend, bool]:
    """The socket object to drive, and whether we opened it: a bare fd or a socket.socket
    is wrapped once, on a dup of its fd (which the worker closes after DONE)."""
    owned = isinstance(sock, (socket.socket, int))
    try:
        return as_backend(sock), owned
    except OSError as exc:
        fd = sock.fileno() if isinstance(sock, socket.socket) else sock
        raise _SetupError(f"socket fd {fd}: {exc}", exc.errno or errno.EIO) from None
    except TypeError:
        raise _SetupError(f"not a socket: {type(sock).__name__}") from None


def _transport(backend: QuicSocketBackend) -> int:
    """SO_PROTOCOL of the socket (§3.1); a backend without a kernel socket (the
    simulation) counts as IPPROTO_QUIC. A socket object made over the fd has read it
    already (Python's constructor asks)."""
    raw = backend.sock
    if raw is None:
        return IPPROTO_QUIC
    if raw.proto:
        return raw.proto
    try:
        return raw.getsockopt(socket.SOL_SOCKET, SO_PROTOCOL)
    except OSError as exc:
        raise _SetupError(f"getsockopt(SO_PROTOCOL) on fd {raw.fileno()}: {exc}",
                          exc.errno or errno.EIO) from None


def _serial_credentials(cert_serial: int, key_serial: int) -> Credentials | None:
    """Credentials from CERT/PRIVKEY serials; None when both are 0; EIO when unreadable."""
    if not cert_serial and not key_serial:
        return None
    if not cert_serial or not key_serial:
        raise _SetupError("x509 needs both a certificate and a private key serial")
    try:
        return Credentials([kr.read_certificate(cert_serial)], kr.read_private_key(key_serial))
    except (OSError, ValueError) as exc:
        raise _SetupError(f"reading x509 credentials from the keyring: {exc}") from None


def _file_credentials(cert_file: str | None, key_file: str | None) -> Credentials | None:
    if not cert_file and not key_file:
        return None
    if not cert_file or not key_file:
        raise _SetupError("x509.certificate and x509.private_key must be set together")
    if is_key_url(key_file):
        raise _SetupError(f"private key {key_file!r} is a key URL; only PEM files are supported "
                          f"(write ./{key_file} for a file of that name)")
    try:
        return FILES.credentials(cert_file, key_file)
    except (OSError, ValueError) as exc:
        raise _SetupError(f"loading {cert_file} / {key_file}: {exc}") from None


def _trust(path: str | None, crl: str | None = None) -> TrustStore | None:
    """The configured trust store; None (the system store) if unset or missing (§4.3). With
    x509.crl naming a file that exists, chains are also checked against its CRLs."""
    try:
        store = FILES.trust(path) if path else None
        crls = FILES.crls(crl) if crl else None
        if crls:
            store = (store or TrustStore.system()).with_crls(crls)
        return store
    except (OSError, ValueError) as exc:
        raise _SetupError(f"loading trust store {path}: {exc}") from None


class _QuicHandshake:
    def __init__(self, request: HandshakeRequest, config: DaemonConfig, sock: QuicSocketBackend,
                 mode: AuthMode,
                 address: str = "", peer: Any = None, on_wait: Callable[[], None] | None = None) -> None:
        self.request = request
        self.on_wait = on_wait
        self.address = address
        self.peer = peer  # getpeername()'s answer, read before the handshake
        self.config = config
        self.sock = sock
        self.mode = mode
        self.timeout = request.timeout_ms / 1000 if request.timeout_ms else config.default_timeout
        # Set by the server's ClientHello hook.
        self.hook_error: _SetupError | None = None
        self.psk_serials: dict[bytes, int] = {}
        self.psk_missing = False
        # quic_config's fields that matter here, from _base().
        self.cipher_type = self.certificate_request = self.receive_session_ticket = 0
        self.peername = request.peername

    # -- socket options ----------------------------------------------------------------

    def _alpns(self) -> tuple[bytes, ...]:
        try:
            raw = self.sock.getsockopt(abi.lib.QUIC_SOCKOPT_ALPN, ALPN_BUFFER)
        except OSError as exc:
            raise _SetupError(f"getsockopt(ALPN): {exc}", exc.errno or errno.EIO) from None
        alpns = _parse_alpns(bytes(raw))
        if not alpns:
            raise _SetupError("no ALPN set on the socket (QUIC needs one, RFC 9001 §8.1)")
        return alpns

    def _quic_config(self) -> None:
        try:
            raw = self.sock.getsockopt(abi.lib.QUIC_SOCKOPT_CONFIG, CONFIG_BUFFER)
        except OSError as exc:
            raise _SetupError(f"getsockopt(CONFIG): {exc}", exc.errno or errno.EIO) from None
        try:
            fields = _parse_config(bytes(raw))
            self.cipher_type, self.certificate_request, self.receive_session_ticket = fields
        except Exception as exc:
            log.debug("unreadable quic_config (%s); using defaults", exc)

    def _base(self, server: bool) -> HandshakeConfig:
        self._quic_config()
        suite = _CIPHERS.get(self.cipher_type)
        # A server's tickets allow 0-RTT and it accepts 0-RTT (tlshd's QUIC path does both);
        # a client offers it only when its session data allows it (client()).
        cfg = HandshakeConfig(
            server=server, alpns=self._alpns(), timeout=self.timeout,
            cipher_suites=[suite] if suite is not None else None, keylog_file=self.config.keylog,
            early_data=server, on_wait=self.on_wait,
        )
        return cfg

    # -- outcome -----------------------------------------------------------------------

    def _run(self, hcfg: HandshakeConfig) -> HandshakeResult | DoneResult:
        try:
            return quic_handshake(self.sock, hcfg)
        except HandshakeError as exc:
            if self.hook_error is not None:
                raise self.hook_error from None
            if self.psk_missing or exc.alert is AlertDescription.unknown_psk_identity:
                log.error("PSK identity rejected: %s", exc.strerror)
                return DoneResult(errno.EKEYREJECTED)
            status = exc.errno or errno.EIO
            if status == errno.EINVAL:  # our own configuration was refused: setup failure
                status = errno.EIO
            log.error("QUIC handshake failed (%s): %s", errno.errorcode.get(status, status), exc.strerror)
            return DoneResult(status)

    # -- client ------------------------------------------------------------------------

    def client(self) -> DoneResult:
        req, mode = self.request, self.mode
        hcfg = self._base(server=False)
        if not req.peername and self.on_wait is not None and cached_reverse_name(self.peer) is None:
            self.on_wait()  # a lookup may take a while
        self.peername = req.peername or reverse_lookup(self.sock, self.peer)
        hcfg.hostname = self.peername
        settings = self.config.client
        no_verify_socket = self.certificate_request == CLIENT_NO_VERIFY
        if mode is AuthMode.PSK:
            if not req.peer_identities:
                raise _SetupError("No key identities")
            serial = req.peer_identities[0]
            try:
                psk = kr.read_psk(serial)
            except (OSError, ValueError) as exc:
                raise _SetupError(f"reading PSK {serial}: {exc}") from None
            hcfg.psks = [ExternalPsk(psk.identity.encode(), psk.key)]
            hcfg.trust = _trust(settings.truststore, settings.crl)
        else:
            if mode is AuthMode.UNAUTH or no_verify_socket:
                mode = AuthMode.UNAUTH
            else:
                creds = _serial_credentials(req.certificate, req.private_key)
                if creds is None:
                    creds = _file_credentials(settings.certificate, settings.private_key)
                if creds is None:
                    raise _SetupError("x509 mode without a client certificate and key (serials or config)")
                hcfg.credentials = creds
            hcfg.trust = _trust(settings.truststore, settings.crl)
            if not self.peername:
                raise _SetupError("no PEERNAME and no reverse DNS name: "
                                  "cannot verify the server's certificate")
        session = self._resumption_data()
        if session is not None:
            hcfg.session_data = session[0]
            # The consumer queued its early data before the upcall (kernel-quic-abi §2.6):
            # offering 0-RTT installs the EARLY key that releases it.
            hcfg.early_data = session[1].max_early_data > 0
        wait = self.receive_session_ticket
        hcfg.ticket_wait = float(wait)
        result = self._run(hcfg)
        if isinstance(result, DoneResult):
            return result
        if wait and result.session_data:
            self._store_session(result.session_data)
        elif wait:
            log.info("no session ticket from the server within %d s", wait)
        chain = [c.public_bytes(Encoding.DER) for c in result.peer_certificates]
        ids = kr.remote_peer_ids(mode, server=False, quic=True, peer_chain=chain, peername=self.peername)
        return self._success(result, ids, "client")

    def _resumption_data(self) -> tuple[bytes, SessionData] | None:
        """The consumer's session data on a client socket, if it is ours to use (§2.6)."""
        try:
            blob = self.sock.getsockopt(abi.lib.QUIC_SOCKOPT_SESSION_TICKET, SESSION_TICKET_MAX)
        except OSError as exc:
            raise _SetupError(f"getsockopt(SESSION_TICKET): {exc}", exc.errno or errno.EIO) from None
        if not blob:
            return None
        try:
            session = SessionData.decode(blob)
        except Exception:
            log.log(NOTICE, "ignoring session data the consumer set (%d bytes): not ours", len(blob))
            return None
        return blob, session

    def _store_session(self, data: bytes) -> None:
        if len(data) > SESSION_TICKET_MAX:
            log.error("session data of %d bytes does not fit SESSION_TICKET; not stored", len(data))
            return
        try:
            self.sock.setsockopt(abi.lib.QUIC_SOCKOPT_SESSION_TICKET, data)
        except OSError as exc:
            raise _SetupError(f"setsockopt(SESSION_TICKET): {exc}", exc.errno or errno.EIO) from None

    def _success(self, result: HandshakeResult, ids: list[int], role: str) -> DoneResult:
        log.debug("QUIC %s handshake: ALPN %r, %s, %s, %s", role, result.alpn or "",
                  _suite_name(result.cipher_suite), "resumed" if result.resumed else "full",
                  "0-RTT accepted" if result.early_data_accepted else "no 0-RTT")
        return DoneResult(0, ids, role=role, alpn=result.alpn or "", suite=_suite_name(result.cipher_suite),
                          resumed=result.resumed, early_data=result.early_data_accepted,
                          peername=self.peername or "", address=self.address)

    # -- server ------------------------------------------------------------------------

    def server(self) -> DoneResult:
        req, mode = self.request, self.mode
        if mode is AuthMode.UNAUTH:
            raise _SetupError("Unrecognized auth mode (unauth server)")
        hcfg = self._base(server=True)
        hcfg.session_tickets = mode is not AuthMode.PSK  # as tlshd; see the module docstring
        alpns = hcfg.alpns
        request_cert = self.certificate_request
        serial_creds = None
        if mode is AuthMode.X509:
            serial_creds = _serial_credentials(req.certificate, req.private_key)
            hcfg.client_auth = ClientAuth(request_cert) if request_cert in (0, 1, 2) else ClientAuth.NONE

        def hook(info: ClientHelloInfo) -> ServerChoice | None:
            try:
                return self._server_choice(info, alpns, serial_creds)
            except _SetupError as exc:
                self.hook_error = exc
                raise TlsError(AlertDescription.access_denied, str(exc)) from None
            except Exception as exc:
                self.hook_error = _SetupError(f"{type(exc).__name__}: {exc}")
                raise TlsError(AlertDescription.internal_error, "server setup failed") from None

        hcfg.client_hello_hook = hook
        result = self._run(hcfg)
        if isinstance(result, DoneResult):
            return result
        psk_serial = self.psk_serials.get(result.psk_identity or b"", 0)
        chain = [c.public_bytes(Encoding.DER) for c in result.peer_certificates]
        ids = kr.remote_peer_ids(mode, server=True, quic=True, peer_chain=chain, psk_serial=psk_serial)
        return self._success(result, ids, "server")

    def _server_choice(self, info: ClientHelloInfo, alpns: Sequence[str | bytes],
                       serial_creds: Credentials | None) -> ServerChoice:
        # The engine picks the client's first protocol that we list; so do we, to write it
        # back (tlshd's post-ClientHello hook) and to pick per-ALPN credentials.
        selected = next((p for p in info.alpn_protocols if p in alpns), None)
        if selected is not None:
            try:
                self.sock.setsockopt(abi.lib.QUIC_SOCKOPT_ALPN, selected)
            except OSError as exc:
                raise _SetupError(f"setsockopt(ALPN, {selected!r}): {exc}", exc.errno or errno.EIO) from None
        choice = ServerChoice()
        if self.mode is AuthMode.PSK:
            psks = []
            for identity in info.psk_identities:
                try:
                    text = identity.decode()
                    psk = kr.find_server_psk(text, quic=True)
                except (UnicodeDecodeError, OSError) as exc:
                    log.debug("no server PSK for identity %r: %s", identity, exc)
                    continue
                self.psk_serials[identity] = psk.serial
                psks.append(ExternalPsk(identity, psk.key))
                break
            if not psks:
                self.psk_missing = True
                log.error("no PSK key for the client's identities %r", list(info.psk_identities))
            choice.psks = psks
            return choice
        settings = self.config.server_x509(selected, info.server_name)
        creds = serial_creds or _file_credentials(settings.certificate, settings.private_key)
        if creds is None:
            raise _SetupError("No usable server certificate/key - check the configuration")
        choice.credentials = creds
        choice.trust = _trust(settings.truststore, settings.crl)
        return choice
