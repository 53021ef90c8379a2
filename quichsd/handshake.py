"""The handshake API: drive the TLS engine over an IPPROTO_QUIC socket (kernel or sim).

One code path for both backends: CRYPTO bytes come from recvmsg with a level cmsg, go to
the engine, and the engine's events become setsockopt(CRYPTO_SECRET), setsockopt(
TRANSPORT_PARAM_EXT) and sendmsg at a level, in the order kernel-quic-abi §2.4 needs.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from . import abi
from .quic.close_text import describe_peer_close
from .quic.errors import QuicErrorCode
from .sock import QuicSocketBackend, SocketLike, as_backend
from .sock.base import RecvItem
from .tls.certs import TrustStore, load_certificates
from .tls.client import ClientEngine
from .tls.config import ClientAuth, ClientHelloInfo, Credentials, ExternalPsk, ServerChoice, TlsConfig
from .tls.constants import AlertDescription, CryptoLevel
from .tls.engine import TlsEngine
from .tls.errors import TlsError
from .tls.events import (
    ClientHelloReceived,
    Event,
    HandshakeComplete,
    InstallSecret,
    KeyLogLine,
    PeerTransportParameters,
    SendHandshake,
    SessionTicketReceived,
)
from .tls.groups import EphemeralKeyPool
from .tls.keylog import KeyLogFile
from .tls.server import ServerEngine
from .tls.session import SessionData

log = logging.getLogger(__name__)
# The process's ephemeral key pool: the engines take their keys from it (TlsConfig), and
# each handshake refills it in its idle time for the next one (tls/groups.py).
_PROCESS_KEYS = EphemeralKeyPool()

DEFAULT_TIMEOUT = 30.0
RECV_BUFFER = 65536
TRANSPORT_PARAM_EXT_MAX = 512  # kernel limit (spec §1.2)
SESSION_TICKET_MAX = 4096
# Send buffer kept free of 0-RTT data for the client's own flights (ClientHello, then its
# Certificate, CertificateVerify and Finished): the kernel queues a flight only where the
# buffer has room (socket.c quic_sendmsg), and early data fills it until acknowledged.
HANDSHAKE_SEND_ROOM = 32768
MSG_MORE = 0x8000
MSG_NOSIGNAL = 0x4000
_EARLY = CryptoLevel.EARLY
# The kernel's level numbers (cmsg) -> CryptoLevel, without an Enum call per message.
_LEVELS: dict[int | None, CryptoLevel] = {int(level): level for level in CryptoLevel}


def _crypto_level(value: int | None) -> CryptoLevel:
    level = _LEVELS.get(value)
    if level is None:  # raised as CryptoLevel(value) would
        raise ValueError(f"{value!r} is not a valid {CryptoLevel.__qualname__}")
    return level


class HandshakeError(OSError):
    """A failed handshake: `errno` as tlshd reports it, `alert` for TLS failures."""

    def __init__(self, err: int, reason: str, alert: AlertDescription | None = None) -> None:
        super().__init__(err, reason)
        self.alert = alert


@dataclass
class HandshakeConfig:
    """Everything a handshake can be told, for either role."""

    server: bool = False
    alpns: Sequence[str | bytes] = ()
    hostname: str | None = None
    # Trust anchors: a PEM file, or certificates; None means the system bundle.
    cafile: str | None = None
    trust: TrustStore | None = None
    verify: bool = True
    cert_file: str | None = None
    key_file: str | None = None
    credentials: Credentials | None = None
    psks: Sequence[ExternalPsk] = ()
    client_auth: ClientAuth = ClientAuth.NONE
    # Client: session data from a previous HandshakeResult to resume (and maybe 0-RTT).
    session_data: bytes | None = None
    early_data: bool = False
    # Client: stream data queued before the handshake on a new bidirectional stream, to
    # leave as 0-RTT when accepted. Only what the server's remembered credit takes is
    # queued (HandshakeResult.early_data_sent), with FIN when that is all of it; the rest
    # is the caller's to send after the handshake, as a short send() leaves it.
    early_stream_data: bytes | None = None
    # Server: issue a NewSessionTicket after the handshake.
    session_tickets: bool = True
    # Client: seconds to wait for the server's ticket after the handshake (0 = don't).
    ticket_wait: float = 0.0
    # Called once, when the handshake has sent its first flight and waits for the peer
    # (the daemon's worker lets another thread listen for requests then).
    on_wait: Any = None
    keylog_file: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    # None keeps the engine's defaults (tls/config.py); the first group gets the key share.
    groups: Sequence[int] | None = None
    cipher_suites: Sequence[int] | None = None
    client_hello_hook: Any = None


@dataclass
class HandshakeResult:
    """What the handshake agreed. `peer_closed`: TLS completed (the peer's Finished
    verified, and for a client its own Finished sent) but the peer had already closed the
    connection when the last socket steps ran (see quic_handshake); the result is valid,
    the socket is not usable for data.

    `early_data_sent`: how many bytes of HandshakeConfig.early_stream_data the socket took
    before the handshake (as 0-RTT if the server accepted it, else resent in 1-RTT), like
    a short send's count: the remembered stream and connection credit (RFC 9000 §7.4.1)
    bounds it. When it is short, the stream is still open without FIN and the rest goes
    with `send(data[early_data_sent:], -1, fin=True)`; 0 means no stream was opened."""

    version: int
    cipher_suite: int
    group: int | None
    alpn: str | None
    peer_certificates: tuple[x509.Certificate, ...]
    psk_identity: bytes | None
    resumed: bool
    early_data_accepted: bool
    session_data: bytes | None = field(default=None, repr=False)
    peer_closed: bool = False
    early_data_sent: int = 0


def read_psk_file(path: str | os.PathLike[str]) -> list[ExternalPsk]:
    """libquic's PSK file format: `identity:hexkey` per line. A file that cannot be read or
    holds no usable PSK raises HandshakeError (EIO, as tlshd's status for unusable keys)."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise _unusable("PSK file", path, exc) from None
    psks = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        identity, sep, key = line.partition(":")
        try:
            if not sep or not identity:
                raise ValueError("expected identity:hexkey")
            psks.append(ExternalPsk(identity.encode(), bytes.fromhex(key.strip())))
        except ValueError as exc:
            raise HandshakeError(errno.EIO, f"PSK file {path}, line {number}: {exc}") from None
    if not psks:
        raise HandshakeError(errno.EIO, f"PSK file {path}: no identity:hexkey line")
    return psks


def _unusable(what: str, path: Any, exc: BaseException) -> HandshakeError:
    """A credential, trust or PSK file that cannot be used: one line naming it and why."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
    return HandshakeError(errno.EIO, f"{what} {path}: {reason}")


def load_credentials(cert_file: str, key_file: str) -> Credentials:
    """The certificate chain and its private key, checked to belong together; HandshakeError
    (EIO) names the file that cannot be used. Loaded again only when a file changes."""
    for what, path in (("certificate file", cert_file), ("private key file", key_file)):
        try:
            os.stat(path)
        except OSError as exc:
            raise _unusable(what, path, exc) from None
    try:
        credentials = Credentials.from_files(cert_file, key_file)
    except Exception as exc:  # OSError, ValueError/TypeError from cryptography's parsers
        which = ("private key file", key_file) if _certificate_loads(cert_file) else ("certificate file",
                                                                                      cert_file)
        raise _unusable(*which, exc) from None
    leaf_key = credentials.chain[0].public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    own_key = credentials.private_key.public_key().public_bytes(Encoding.DER,
                                                                PublicFormat.SubjectPublicKeyInfo)
    if leaf_key != own_key:
        raise HandshakeError(errno.EIO, f"private key file {key_file} does not match certificate {cert_file}")
    return credentials


def _certificate_loads(cert_file: str) -> bool:
    """After Credentials.from_files failed: True when the certificate file itself loads (so
    the key file was the trouble)."""
    try:
        load_certificates(cert_file)
    except Exception:
        return False
    return True


def load_trust(cafile: str) -> TrustStore:
    try:
        store = TrustStore.from_file(cafile)
    except Exception as exc:
        raise _unusable("trust file", cafile, exc) from None
    return store


def _open_keylog(path: str) -> KeyLogFile:
    try:
        return KeyLogFile(path)
    except OSError as exc:
        raise _unusable("key log file", path, exc) from None


def _alpn_list(alpns: str | bytes | Sequence[str | bytes] | None) -> list[bytes]:
    """ALPN protocols from a list, or from one comma-separated string (str or bytes)."""
    if alpns is None:
        return []
    if isinstance(alpns, bytes):
        alpns = alpns.decode()
    if isinstance(alpns, str):
        return [item.strip().encode() for item in alpns.split(",") if item.strip()]
    return [a.encode() if isinstance(a, str) else bytes(a) for a in alpns]


class _Driver:
    """Runs one handshake: engine events out to the socket, socket items in to the engine."""

    def __init__(self, backend: QuicSocketBackend, config: HandshakeConfig) -> None:
        self.sock = backend
        self.config = config
        self.deadline = time.monotonic() + config.timeout
        self.result: HandshakeComplete | None = None
        self.engine: TlsEngine | None = None
        # TLS completed but the peer closed before the last socket steps (quic_handshake).
        self.peer_closed = False
        self.flights_done = False  # the loop ended: all of our handshake flights are out
        self.session: SessionData | None = None
        self.keylog: KeyLogFile | None = None
        # The process's key pool, handed to the engine and refilled while waiting.
        self.keys = _PROCESS_KEYS
        self.sent = False  # a flight has left (config.on_wait is due when the loop waits)
        self.answered = False  # handshake data came from the peer
        self.restarted = False  # a client started over after Version Negotiation
        self.early_data_sent = 0  # bytes of early_stream_data the socket took

    # -- configuration -----------------------------------------------------------------

    def tls_config(self) -> TlsConfig:
        common = self._common_settings()
        return self._server_tls_config(common) if self.config.server else self._client_tls_config(common)

    def _common_settings(self) -> dict[str, Any]:
        """TlsConfig's arguments that do not depend on the role (opens the key log)."""
        cfg = self.config
        alpns = _alpn_list(cfg.alpns) or self._socket_alpns()
        if not alpns:
            raise HandshakeError(errno.EINVAL,
                                 "QUIC needs ALPN (RFC 9001 §8.1): no alpns given or set on the socket")
        credentials = cfg.credentials
        if credentials is None and cfg.cert_file and cfg.key_file:
            credentials = load_credentials(cfg.cert_file, cfg.key_file)
        trust = cfg.trust or (load_trust(cfg.cafile) if cfg.cafile else None)
        if cfg.keylog_file:
            self.keylog = _open_keylog(cfg.keylog_file)
        common: dict[str, Any] = dict(
            alpn_protocols=alpns, credentials=credentials, trust=trust, verify_peer=cfg.verify,
            psks=list(cfg.psks), keylog=self.keylog is not None, ephemeral_keys=self.keys,
        )
        if cfg.groups:
            common["groups"] = list(cfg.groups)
        if cfg.cipher_suites:
            common["cipher_suites"] = list(cfg.cipher_suites)
        return common

    def _server_tls_config(self, common: dict[str, Any]) -> TlsConfig:
        cfg = self.config
        ticket_key = self._ticket_key() if cfg.session_tickets else None
        # On a kernel socket the ServerHello goes out alone, ahead of the rest of the
        # flight (run()): the client works on it while the server computes the rest.
        # (A backend that batches output, the simulation, keeps the one-step flight.)
        return TlsConfig(
            **common, client_auth=cfg.client_auth, session_ticket_key=ticket_key,
            send_session_ticket=ticket_key is not None, enable_early_data=cfg.early_data,
            pause_at_client_hello=True, server_hello_first=not self.sock.batches_output,
        )

    def _client_tls_config(self, common: dict[str, Any]) -> TlsConfig:
        cfg = self.config
        if not cfg.verify:
            log.warning("server certificate verification is OFF for this handshake (verify=False)")
        try:
            session = SessionData.decode(cfg.session_data) if cfg.session_data else None
        except TlsError as exc:
            raise HandshakeError(errno.EINVAL, f"session_data cannot be resumed from: {exc}") from None
        if session is not None and cfg.early_data and len(session.transport_parameters) == 56:
            # spec §2.6: restore the server's parameters so 0-RTT stream data can be queued.
            self.sock.setsockopt(abi.lib.QUIC_SOCKOPT_TRANSPORT_PARAM,
                                 b"\x01" + session.transport_parameters[1:])
            if cfg.early_stream_data:
                self.early_data_sent = self._queue_early_data(cfg.early_stream_data)
        local_params = self.sock.getsockopt(abi.lib.QUIC_SOCKOPT_TRANSPORT_PARAM_EXT, TRANSPORT_PARAM_EXT_MAX)
        return TlsConfig(
            **common, server_name=cfg.hostname, session=session, enable_early_data=cfg.early_data,
            transport_parameters=local_params,
        )

    def _queue_early_data(self, data: bytes) -> int:
        """Queue `data` on a new stream with FIN; returns how much the socket took (the
        FIN goes only with the last byte). MSG_DONTWAIT: credit beyond the remembered
        limits can only come once the handshake this thread drives is done, so a
        blocking send would stall it; the kernel, like the simulation, takes what the
        credit allows and returns the count, or ENOSPC/EAGAIN when that is nothing."""
        room = self._early_send_room()
        queued = data if room is None or room >= len(data) else data[:room]
        flags = abi.lib.MSG_QUIC_STREAM_NEW
        if len(queued) == len(data):
            flags |= abi.lib.MSG_QUIC_STREAM_FIN
        sent = 0
        if queued:
            try:
                sent = self.sock.send_stream(queued, -1, flags, socket.MSG_DONTWAIT)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EAGAIN):
                    raise
        if sent < len(data):
            log.info("0-RTT: %d of %d early bytes queued before the handshake; the rest is "
                     "the caller's to send after it", sent, len(data))
        return sent

    def _early_send_room(self) -> int | None:
        """How much early data a kernel socket's send buffer takes while leaving room for
        our flights; None without a kernel socket (the simulation has no send buffer).
        Early data that filled it kept the ClientHello from being queued: the handshake
        never started and the idle timer closed the socket (QEMU, lxin/quic 03a9c7c on
        loopback, SO_SNDBUF 524056 after connect(), 4 initial congestion windows: 1, 2
        and 4 MiB of early data each ended in EPIPE after 31 s, 200000 bytes went
        through; capped, 4 MiB resumes with 491288 bytes queued)."""
        kernel = self.sock.sock
        if kernel is None:
            return None
        sndbuf = kernel.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        return max(sndbuf - HANDSHAKE_SEND_ROOM, 0)

    def _socket_alpns(self) -> list[bytes]:
        try:
            raw = self.sock.getsockopt(abi.lib.QUIC_SOCKOPT_ALPN, 256)
        except OSError:
            return []
        return _alpn_list(raw)

    def _ticket_key(self) -> bytes | None:
        try:
            key = self.sock.getsockopt(abi.lib.QUIC_SOCKOPT_SESSION_TICKET, SESSION_TICKET_MAX)
        except OSError as exc:
            log.debug("no session ticket key from the socket: %s", exc)
            return None
        return key if len(key) >= 32 else None

    def answer_client_hello(self, info: ClientHelloInfo) -> ServerChoice:
        """spec §2.4 server step 3, between the engine's receive() and choose(): set the
        client's blob, then read ours (it may echo version information only because the
        client sent it); then the caller's HandshakeConfig.client_hello_hook."""
        try:
            self.sock.setsockopt(abi.lib.QUIC_SOCKOPT_TRANSPORT_PARAM_EXT, info.transport_parameters)
        except OSError as exc:  # the client's parameters are invalid (RFC 9000 §7.4): its error, not ours
            code = QuicErrorCode.VERSION_NEGOTIATION_ERROR if exc.errno == errno.EPROTONOSUPPORT \
                else QuicErrorCode.TRANSPORT_PARAMETER_ERROR
            raise TlsError(AlertDescription.illegal_parameter, f"client transport parameters: {exc.strerror}",
                           code) from None
        local = self.sock.getsockopt(abi.lib.QUIC_SOCKOPT_TRANSPORT_PARAM_EXT, TRANSPORT_PARAM_EXT_MAX)
        choice = ServerChoice(transport_parameters=local)
        user = self.config.client_hello_hook
        if user is not None:
            extra = user(info)
            if extra is not None:
                extra.transport_parameters = local
                choice = extra
        return choice

    # -- the loop ----------------------------------------------------------------------

    def run(self, engine: TlsEngine) -> None:
        """The handshake on `engine`; a client starts over once with a new engine when the
        socket asks for it (ERESTART: the simulation followed a Version Negotiation to
        another version, whose ClientHello must name it, RFC 9368 §4; without 0-RTT)."""
        while True:
            try:
                self._drive(engine)
                return
            except OSError as exc:
                if exc.errno != errno.ERESTART or not isinstance(engine, ClientEngine) or self.restarted:
                    raise
                log.info("QUIC handshake restarted after Version Negotiation: %s", exc.strerror)
            self.restarted = True
            self.config = replace(self.config, early_data=False, early_stream_data=None)
            self.early_data_sent = 0  # the old connection's queue went with it
            engine = ClientEngine(self.tls_config())

    def _drive(self, engine: TlsEngine) -> None:
        self.engine = engine
        if isinstance(engine, ClientEngine):
            self.apply(engine.start(time.time()))
        on_wait = self.config.on_wait
        while not engine.handshake_complete:
            # Idle time: what this step had to send is sent and the answer is a round trip
            # away, so make the next handshake's ephemeral key now (tls.groups).
            self.keys.refill()
            if on_wait is not None and self.sent:
                on_wait = None
                try:
                    self.config.on_wait()
                except Exception as exc:  # the caller's; never the handshake's failure
                    log.debug("on_wait: %s", exc)
            item = self.recv()
            if item.kind != "HANDSHAKE":
                continue  # an event interleaved during the handshake (spec §2.2, pitfall 8)
            self.answered = True
            with self.sock.batch():  # the server's transport parameter calls go with the batch
                self.apply(self.receive(engine, item))
            if engine.flight_pending:  # the ServerHello is sent: now the rest of the flight
                self.apply(engine.continue_flight(time.time()))
        self.flights_done = True
        if isinstance(engine, ClientEngine) and self.config.ticket_wait > 0 and not self.peer_closed:
            self.collect_ticket(engine)

    def receive(self, engine: TlsEngine, item: RecvItem) -> list[Event]:
        """engine.receive(); a server's ClientHello pauses it (ClientHelloReceived, always
        the last event): its socket calls run here, then engine.choose() continues."""
        events = engine.receive(_crypto_level(item.level), item.data, time.time())
        if events and type(events[-1]) is ClientHelloReceived:
            assert isinstance(engine, ServerEngine)  # only a server receives a ClientHello
            if len(events) > 1:
                self.apply(events[:-1])
            choice = self.answer_client_hello(events[-1].info)
            events = engine.choose(choice, time.time())
        return events

    def apply(self, events: list[Event]) -> None:
        """libquic's order (spec §2.4, rule of thumb): secrets and transport parameters
        go in as they come, the batch's handshake messages are queued and sent after
        them, each with MSG_MORE but the last, so a flight leaves as one burst (a key
        install is a transmit trigger: interleaved, it would split the flight; spec §2.3,
        pitfall 7). A level's keys always come before its messages, so key-before-data
        holds. The EARLY key is the exception: what was queued before it goes first
        (with MSG_MORE), so the Initial leaves ahead of the 0-RTT packets (spec §2.6)."""
        # A backend that can (the simulation) merges the transmit attempts of the batch's
        # socket calls into one: same datagrams, less work per call.
        with self.sock.batch():
            queued: list[SendHandshake] = []
            for event in events:
                if type(event) is SendHandshake:
                    queued.append(event)
                    continue
                if type(event) is KeyLogLine:
                    self.write_keylog(event)  # a file write, not a socket step: even after a close
                    continue
                if self.peer_closed:
                    self.record(event)  # the socket steps can no longer work; the result can
                    continue
                if type(event) is InstallSecret and event.level == _EARLY:
                    self.send_all(queued, last_flushes=False)
                    queued = []
                try:
                    self.apply_one(event)
                except OSError as exc:
                    if not self._closed_after_completion(exc, "installing the last key"):
                        raise
            if not self.peer_closed:
                self.send_all(queued, last_flushes=True)

    def send_all(self, sends: list[SendHandshake], last_flushes: bool) -> None:
        if sends:
            self.sent = True
        for index, send in enumerate(sends):
            more = index < len(sends) - 1 or not last_flushes
            try:
                self.sock.send_handshake(int(send.level), send.data, MSG_NOSIGNAL | (MSG_MORE if more else 0))
            except OSError as exc:
                if not self._closed_after_completion(exc, "sending a post-handshake message"):
                    raise
                return

    def _closed_after_completion(self, exc: OSError, step: str) -> bool:
        """True (and `peer_closed` set) when `exc` is the peer's close reported by a socket
        step after TLS completed: EPIPE from the server's 1-RTT receive key install (the
        kernel replays the client's buffered CONNECTION_CLOSE in that setsockopt, spec §9)
        or from a post-handshake send (NewSessionTicket). TLS completed means the peer's
        Finished verified and, for a client, its own Finished out (before that, the peer
        has not completed the handshake, so its close is a failure)."""
        engine = self.engine
        if exc.errno != errno.EPIPE or engine is None or not engine.handshake_complete:
            return False
        if not self.config.server and not self.flights_done:
            return False
        self.peer_closed = True
        log.debug("handshake completed, but the peer has closed the connection already (%s: %s)", step, exc)
        return True

    def write_keylog(self, line: KeyLogLine) -> None:
        if self.keylog is not None:
            self.keylog.log(line.label, line.client_random, line.secret)

    def record(self, event: Event) -> None:
        """The result-only part of apply_one: no socket calls."""
        if type(event) is HandshakeComplete:
            self.result = event
        elif type(event) is SessionTicketReceived:
            self.session = event.session

    def apply_one(self, event: Event) -> None:
        if type(event) is InstallSecret:
            self.sock.setsockopt(
                abi.lib.QUIC_SOCKOPT_CRYPTO_SECRET,
                abi.pack_crypto_secret(int(event.level), bool(event.direction), event.cipher_type,
                                       event.secret),
            )
        elif type(event) is PeerTransportParameters:  # a client's: the server's parameters
            self.sock.setsockopt(abi.lib.QUIC_SOCKOPT_TRANSPORT_PARAM_EXT, event.data)
        elif type(event) is HandshakeComplete:
            self.result = event
        elif type(event) is SessionTicketReceived:
            self.session = event.session

    def recv(self) -> RecvItem:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise self.timed_out("handshake timed out")
        self.sock.settimeout(remaining)
        try:
            return self.sock.recv_item(RECV_BUFFER)
        except TimeoutError:
            raise self.timed_out("handshake timed out") from None

    def timed_out(self, what: str) -> HandshakeError:
        """ETIMEDOUT, saying whether the peer ever answered. A client that heard nothing
        names the ALPN it offered: a server (the kernel's ALPN demultiplexer, spec §9) with
        no listener for it drops the ClientHello without a word."""
        if self.answered:
            return HandshakeError(errno.ETIMEDOUT, f"{what}: the peer stopped answering")
        if self.config.server:
            return HandshakeError(errno.ETIMEDOUT, f"{what}: no answer from the client")
        alpns = _alpn_list(self.config.alpns) or self._socket_alpns()
        offered = ",".join(a.decode(errors="replace") for a in alpns)
        return HandshakeError(errno.ETIMEDOUT, f"{what}: no answer from the server (nothing listening there, "
                                               f"or no listener for the offered ALPN {offered or '-'})")

    def collect_ticket(self, engine: ClientEngine) -> None:
        """spec §2.6: the kernel captures the first NewSessionTicket; poll for it."""
        end = min(self.deadline, time.monotonic() + self.config.ticket_wait)
        while time.monotonic() < end:
            try:
                blob = self.sock.getsockopt(abi.lib.QUIC_SOCKOPT_SESSION_TICKET, SESSION_TICKET_MAX)
            except OSError as exc:
                if self._closed_after_completion(exc, "waiting for the session ticket"):
                    break
                raise
            if blob:
                self.apply(engine.receive(CryptoLevel.APP, blob, time.time()))
                break
            time.sleep(0.01)
        if self.session is not None:
            try:
                remote = self.sock.getsockopt(abi.lib.QUIC_SOCKOPT_TRANSPORT_PARAM, b"\x01" + bytes(55))
            except OSError:
                remote = b""
            self.session.transport_parameters = remote

    def closed_error(self, exc: OSError) -> HandshakeError:
        """The error for a connection the peer (or the transport) closed: a peer's TLS
        alert (CONNECTION_CLOSE 0x100+alert, RFC 9001 §4.8) is a TLS failure, EACCES."""
        try:
            info = abi.unpack_connection_close(self.sock.getsockopt(abi.lib.QUIC_SOCKOPT_CONNECTION_CLOSE,
                                                                    72))
        except OSError:
            info = None
        if info is not None and 0x100 <= info.errcode <= 0x1FF:
            try:
                alert = AlertDescription(info.errcode - 0x100)
            except ValueError:
                alert = None
            name = alert.name if alert is not None else f"alert {info.errcode - 0x100}"
            return HandshakeError(errno.EACCES, f"peer closed the connection: {name} (0x{info.errcode:x})",
                                  alert)
        if exc.errno in (errno.ENOTCONN, errno.EPIPE) and info is not None and not any(info):
            # Nobody sent a CONNECTION_CLOSE: the idle timer closed the connection (an
            # all-zero close, spec §1.5, §2.5; a send then meets EPIPE, a recv ENOTCONN),
            # a timeout like our own deadline's. (Its 30 s
            # run from connect(), so it fires just before a 30 s handshake deadline.)
            return self.timed_out("handshake timed out (idle timeout)")
        code = exc.errno or errno.EIO
        if info is not None and info.errcode == QuicErrorCode.VERSION_NEGOTIATION_ERROR:
            code = errno.EPROTONOSUPPORT  # no version in common, as the kernel's select_version
        if info is not None and info.errcode:
            # The close in words once (the socket's own error may name it too); the close
            # info has no application bit, so the code is read in the transport space.
            why = describe_peer_close(info.errcode, info.phrase, app=None)
        else:
            why = exc.strerror or os.strerror(code)
        return HandshakeError(code, f"connection closed during the handshake: {why}")

    def fail(self, exc: TlsError) -> None:
        """Tell the peer why (CONNECTION_CLOSE carries 0x100+alert where the backend can)."""
        try:
            self.sock.setsockopt(
                abi.lib.QUIC_SOCKOPT_CONNECTION_CLOSE,
                abi.pack_connection_close(exc.quic_error, exc.alert.name.encode()[:63]),
            )
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError as err:
            log.debug("closing after a failed handshake: %s", err)


def quic_handshake(sock: SocketLike, config: HandshakeConfig) -> HandshakeResult:
    """Run a handshake on a QUIC socket in ESTABLISHING state; returns what was agreed.

    Failures raise HandshakeError (see the README). One case is not a failure: a handshake
    that completed in TLS (the peer's Finished verified, so the peer is authenticated; for
    a client, its own Finished sent too) and whose peer closed the connection before the
    last socket steps ran. The kernel reports that close as EPIPE from the server's final
    CRYPTO_SECRET setsockopt (its 1-RTT receive key replays the client's buffered
    CONNECTION_CLOSE, kernel-quic-abi §9) or from sending the NewSessionTicket; the result
    is then returned as usual with `peer_closed=True`, and the steps left (the ticket, a
    client's ticket wait) are skipped. Any EPIPE before TLS completed stays an error."""
    driver = _Driver(as_backend(sock), config)
    saved_timeout = driver.sock.gettimeout()
    try:
        tls = driver.tls_config()
        engine: TlsEngine = ServerEngine(tls) if config.server else ClientEngine(tls)
        try:
            driver.run(engine)
        except TlsError as exc:
            driver.fail(exc)
            raise HandshakeError(errno.EACCES, f"TLS handshake failed: {exc}", exc.alert) from None
        except HandshakeError as exc:
            if exc.errno == errno.ETIMEDOUT:
                driver.fail(TlsError(AlertDescription.user_canceled, "handshake timed out"))
            raise
        except OSError as exc:  # the socket failed under us: peer close, idle timeout, ...
            raise driver.closed_error(exc) from None
    except ValueError as exc:
        raise HandshakeError(errno.EINVAL, str(exc)) from None
    finally:
        if driver.keylog is not None:
            driver.keylog.close()
        with contextlib.suppress(OSError):
            driver.sock.settimeout(saved_timeout)  # the handshake's deadline is not the caller's
    done = driver.result
    assert done is not None
    return HandshakeResult(
        version=done.version,
        cipher_suite=done.cipher_suite,
        group=done.group,
        alpn=done.alpn.decode() if done.alpn else None,
        peer_certificates=done.peer_certificates,
        psk_identity=done.psk_identity,
        resumed=done.resumed,
        early_data_accepted=done.early_data_accepted,
        session_data=driver.session.encode() if driver.session else None,
        peer_closed=driver.peer_closed,
        early_data_sent=driver.early_data_sent,
    )


def quic_client_handshake(sock: SocketLike, pkey_file: str | None = None, hostname: str | None = None,
                          alpns: str | Sequence[str] | None = None, **opts: Any) -> HandshakeResult:
    """libquic's quic_client_handshake(): `pkey_file` is a PSK file (identity:hexkey lines)."""
    psks = read_psk_file(pkey_file) if pkey_file else opts.pop("psks", ())
    return quic_handshake(sock, HandshakeConfig(server=False, hostname=hostname, alpns=_alpn_list(alpns),
                                                psks=psks, **opts))


def quic_server_handshake(sock: SocketLike, pkey_file: str, cert_file: str | None = None,
                          alpns: str | Sequence[str] | None = None, **opts: Any) -> HandshakeResult:
    """libquic's quic_server_handshake(): with `cert_file`, `pkey_file` is the private key;
    without, it is a PSK file."""
    if cert_file:
        return quic_handshake(sock, HandshakeConfig(server=True, cert_file=cert_file, key_file=pkey_file,
                                                    alpns=_alpn_list(alpns), **opts))
    return quic_handshake(sock, HandshakeConfig(server=True, psks=read_psk_file(pkey_file),
                                                alpns=_alpn_list(alpns), **opts))
