"""The parts of the TLS 1.3 engine both roles share: per-level message reassembly, the
state table, the transcript, secret events and the fail-once error discipline.

Bytes at a crypto level go in through `receive(level, data, now)`; a list of events comes
out. The engine never does I/O and never reads the clock: `now` (seconds since the epoch)
is passed in and used for certificate validity and ticket ages.
"""
from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import NoReturn

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from . import extensions as ext
from . import keylog as kl
from .config import Credentials, TlsConfig
from .constants import AlertDescription, CryptoLevel, Direction, HandshakeType
from .errors import TlsError, decode_error, illegal_parameter, protocol_violation, unexpected_message
from .events import Event, InstallSecret, KeyLogLine, SendHandshake
from .keyschedule import KeySchedule, finished_verify_data, verify_finished
from .messages import (
    DECODERS,
    MAX_MESSAGE_SIZE,
    Certificate,
    CertificateVerify,
    Decoder,
    Finished,
    HandshakeMessage,
    MessageBuffer,
    encode_certificate_verify,
)
from .signatures import certificate_verify_content, sign, verify
from .suites import SuiteInfo, TranscriptHash

log = logging.getLogger(__name__)

Handler = Callable[["TlsEngine", HandshakeMessage, bytes], None]


class HandshakeState(enum.Enum):
    """What a role's states (ClientState, ServerState) derive from. Identity hash (C)
    instead of Enum's Python __hash__: the state table is looked up with the current state
    for every message. Members compare by identity anyway."""

    __hash__ = object.__hash__

# state -> {message type: crypto level it must arrive at}
StateTable = Mapping[enum.Enum, Mapping[int, CryptoLevel]]
# (state, step) -> next state: every state change of a role, in one table (as h11 keeps
# its own). A step names what happened: a message taken, or a flight sent.
Transitions = Mapping[tuple[enum.Enum, str], enum.Enum]


def next_state(table: Transitions, state: enum.Enum, step: str) -> enum.Enum:
    """The state after `step` in `state`; a step the table does not allow in this state is
    an unexpected_message (RFC 8446 §6.2)."""
    following = table.get((state, step))
    if following is None:
        raise unexpected_message(f"{step} not expected in state {state.name}")
    return following

_INITIAL, _APP = CryptoLevel.INITIAL, CryptoLevel.APP
_EARLY = CryptoLevel.EARLY
_LEVELS = frozenset((_INITIAL, CryptoLevel.HANDSHAKE, _APP))  # those with handshake messages
_HANDSHAKE = CryptoLevel.HANDSHAKE
_SEND, _RECV = Direction.SEND, Direction.RECV


@lru_cache(maxsize=128)
def _parse_certificate(der: bytes) -> x509.Certificate:
    # Peers present the same certificates again and again, so a parsed certificate is kept
    # per exact DER encoding, with the public key it parses on first use (cryptography
    # keeps that on the object). Parsing only: every chain is still verified, and every
    # signature checked, in every handshake. Failures are not cached (lru_cache).
    return x509.load_der_x509_certificate(der)


def load_certificate_chain(cert: Certificate) -> list[x509.Certificate]:
    """RFC 8446 §4.4.2: a peer's chain, leaf first (empty if it sent none)."""
    if cert.context:
        raise illegal_parameter("certificate_request_context must be empty in the handshake")
    entries = cert.entries
    if not entries:
        return []
    for entry in entries:
        if entry.extensions:
            ext.check_entry_extensions(entry.extensions, "Certificate")
    try:
        chain = [_parse_certificate(entry.cert_data) for entry in entries]
        # Parse the leaf's key now: CertificateVerify needs it, and a peer's unknown or
        # malformed key must end as an alert about the certificate, not internal_error.
        chain[0].public_key()
    except UnsupportedAlgorithm as exc:
        raise TlsError(AlertDescription.unsupported_certificate,
                       f"unsupported certificate key: {exc}") from None
    except (ValueError, x509.InvalidVersion) as exc:
        raise TlsError(AlertDescription.bad_certificate, f"unparsable certificate: {exc}") from None
    return chain


class TlsEngine:
    """Base of ClientEngine and ServerEngine. Subclasses define STATES and HANDLERS."""

    STATES: StateTable
    # message type -> name of the method that handles it; resolved per class below.
    HANDLERS: Mapping[int, str]
    _handlers: dict[int, Handler]
    # state -> message type -> (level, decoder, name, handler): STATES, DECODERS and
    # HANDLERS joined, so dispatching a message is one lookup.
    _dispatch: dict[enum.Enum, dict[int, tuple[CryptoLevel, Decoder, str, Handler]]]
    TRANSITIONS: Transitions
    INITIAL_STATE: enum.Enum
    is_client: bool

    # Immutable starting values live on the class: an engine is built per connection,
    # and each one sets only what it changes.
    _error: TlsError | None = None
    _now = 0.0
    suite: SuiteInfo | None = None
    key_schedule: KeySchedule | None = None
    transcript: TranscriptHash | None = None
    client_random = b""
    handshake_complete = False
    peer_scheme: int | None = None
    # Transcript-Hash(..client Finished); the resumption master secret is derived from it
    # on first use, as most connections never issue or receive a ticket.
    _resumption_hash = b""
    _resumption_secret = b""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "HANDLERS" in cls.__dict__ or "STATES" in cls.__dict__:
            # Functions looked up on the class, so a subclass's override is the one called.
            cls._handlers = {t: getattr(cls, name) for t, name in cls.HANDLERS.items()}
            cls._dispatch = {
                state: {t: (level, *DECODERS[t], cls._handlers[t]) for t, level in expected.items()}
                for state, expected in cls.STATES.items()
            }

    def __init__(self, config: TlsConfig) -> None:
        self.config = config
        self.state: enum.Enum = self.INITIAL_STATE
        self._buffers: dict[CryptoLevel, MessageBuffer] = {}  # made on first need, per level
        self._events: list[Event] = []
        self.peer_chain: list[x509.Certificate] = []

    # -- public API --------------------------------------------------------------------

    @property
    def failed(self) -> TlsError | None:
        return self._error

    def receive(self, level: CryptoLevel, data: bytes, now: float | None = None) -> list[Event]:
        """Feed CRYPTO bytes received at `level`; returns the events they cause.

        Raises TlsError (and stays failed) on any protocol violation: the caller closes
        the connection with error `exc.quic_error` (0x100 + alert).
        """
        self._now = time.time() if now is None else now
        # _guard, inlined: this is the path of every flight.
        if self._error is not None:
            raise self._error
        try:
            buffer = self._buffers.get(level)  # keyed by CryptoLevel; a plain int finds it too
            if buffer is not None:
                messages: Sequence[bytes] = buffer.feed(data)
            elif level not in _LEVELS:
                if level == _EARLY:
                    # RFC 9001 §8.3: a CRYPTO frame in a 0-RTT packet is a PROTOCOL_VIOLATION.
                    raise protocol_violation("handshake data in 0-RTT")
                raise unexpected_message(f"handshake data at level {level}")
            elif (
                type(data) is bytes
                and len(data) >= 4
                and ((data[1] << 16) | (data[2] << 8) | data[3]) + 4 == len(data)
                and len(data) <= MAX_MESSAGE_SIZE + 4
            ):
                # The usual chunk: one whole message, and nothing buffered at this level
                # yet. A level gets its buffer when a chunk is anything else.
                messages = (data,)
            else:
                buffer = self._buffers[level] = MessageBuffer()
                messages = buffer.feed(data)
            for message in messages:
                # Dispatch (inlined, it runs for every message): the state must expect
                # this type, at this level; the body must decode and be consumed whole.
                entry = self._dispatch[self.state].get(message[0])
                if entry is None or entry[0] != level:
                    self._reject(level, message[0])
                end = len(message)
                body, pos = entry[1](message, 4, end)
                if pos != end:
                    raise decode_error(f"{end - pos} trailing bytes in {entry[2]}")
                entry[3](self, body, message)
        except TlsError as exc:
            self._fail(exc)
        except Exception as exc:
            self._internal_error(exc)
        events, self._events = self._events, []
        return events

    @property
    def flight_pending(self) -> bool:
        """A server that sent its ServerHello alone has the rest of its flight to give
        (continue_flight, TlsConfig.server_hello_first); never a client."""
        return False

    def continue_flight(self, now: float | None = None) -> list[Event]:
        """The rest of the flight when flight_pending (ServerEngine)."""
        raise RuntimeError("no flight pending")

    # -- machinery ---------------------------------------------------------------------

    def _guard(self, fn: Callable[..., None], *args: object) -> list[Event]:
        if self._error is not None:
            raise self._error
        try:
            fn(*args)
        except TlsError as exc:
            self._fail(exc)
        except Exception as exc:
            self._internal_error(exc)
        events, self._events = self._events, []
        return events

    def _internal_error(self, exc: Exception) -> None:
        """A bug of ours must still end as an alert, not a traceback."""
        log.exception("internal error in the TLS engine")
        self._fail(TlsError(AlertDescription.internal_error, f"{type(exc).__name__}: {exc}"))

    def _fail(self, exc: TlsError) -> None:
        self._error = exc
        self._events = []
        raise exc

    def _reject(self, level: CryptoLevel, msg_type: int) -> NoReturn:
        """The error for a message the current state does not take at `level`."""
        want_level = self.STATES[self.state].get(msg_type)
        if want_level is None:
            if msg_type == HandshakeType.END_OF_EARLY_DATA:
                raise protocol_violation("EndOfEarlyData is not used in QUIC (RFC 9001 §8.3)")
            if msg_type == HandshakeType.KEY_UPDATE:
                # RFC 9001 §6: error 0x10a, i.e. unexpected_message.
                raise unexpected_message("TLS KeyUpdate is forbidden in QUIC")
            raise unexpected_message(
                f"{_type_name(msg_type)} not expected in state {self.state.name}"
            )
        raise unexpected_message(
            f"{_type_name(msg_type)} at level {CryptoLevel(level).name}, expected {want_level.name}"
        )

    def _advance(self, step: str) -> None:
        """The one place the state changes (TRANSITIONS)."""
        self.state = next_state(self.TRANSITIONS, self.state, step)

    def _check_level_drained(self, level: CryptoLevel) -> None:
        """RFC 8446 §5.1: messages must not span a key change (unexpected_message); RFC 9001
        §4.1.3: unconsumed data of a previous level is a PROTOCOL_VIOLATION."""
        buffer = self._buffers.get(level)
        if buffer is not None and buffer.pending:
            raise protocol_violation(f"partial message left at level {level.name} after a key change")

    # -- helpers for subclasses ----------------------------------------------------------

    def _send(self, level: CryptoLevel, *messages: bytes) -> None:
        self._events.append(SendHandshake(level, b"".join(messages)))

    def _install(self, level: CryptoLevel, direction: Direction, secret: bytes, label: str) -> None:
        """The one way a secret leaves the engine: InstallSecret, then its key log line."""
        assert self.suite is not None
        self._events.append(InstallSecret(level, direction, self.suite.kernel_cipher, secret))
        if self.config.keylog:
            self._events.append(KeyLogLine(label, self.client_random, secret))

    def _log_secret(self, label: str, secret: bytes) -> None:
        """A key log line for a secret the kernel does not get (EXPORTER_SECRET)."""
        self._events.append(KeyLogLine(label, self.client_random, secret))

    def _install_pair(self, level: CryptoLevel, client_secret: bytes, server_secret: bytes,
                      client_label: str, server_label: str) -> None:
        """Both keys of a level, send key first, then receive key (spec §2.4)."""
        if self.is_client:
            self._install(level, _SEND, client_secret, client_label)
            self._install(level, _RECV, server_secret, server_label)
        else:
            self._install(level, _SEND, server_secret, server_label)
            self._install(level, _RECV, client_secret, client_label)

    def _install_handshake_secrets(self, client_secret: bytes, server_secret: bytes) -> None:
        self._install_pair(_HANDSHAKE, client_secret, server_secret, kl.CLIENT_HANDSHAKE, kl.SERVER_HANDSHAKE)

    # -- authentication messages both roles send and check (RFC 8446 §4.4) ----------------

    def _on_certificate_verify(self, cv: CertificateVerify, raw: bytes) -> None:
        if cv.scheme not in self.config.signature_schemes:
            raise illegal_parameter("CertificateVerify uses a scheme we did not offer")
        transcript = self.transcript
        assert transcript is not None
        # The peer signed as the other role: a client checks the server's context string.
        content = certificate_verify_content(self.is_client, transcript.digest())
        verify(cv.scheme, self.peer_chain[0].public_key(), content, cv.signature)
        self.peer_scheme = cv.scheme
        transcript.update(raw)
        self._advance("CertificateVerify")

    def _check_peer_finished(self, fin: Finished, base_secret: bytes) -> None:
        suite, transcript = self.suite, self.transcript
        assert suite is not None and transcript is not None
        if len(fin.verify_data) != suite.hash_len:
            raise decode_error("Finished of the wrong length")
        expected = finished_verify_data(suite.hash_name, base_secret, transcript.digest())
        if not verify_finished(expected, fin.verify_data):
            raise TlsError(AlertDescription.decrypt_error, "peer Finished does not verify")

    def _sign_certificate(self, creds: Credentials, scheme: int) -> list[bytes]:
        """Our Certificate and CertificateVerify, added to the transcript."""
        transcript = self.transcript
        assert transcript is not None
        cert = creds.certificate_message
        transcript.update(cert)
        content = certificate_verify_content(not self.is_client, transcript.digest())
        cv = encode_certificate_verify(scheme, sign(scheme, creds.private_key, content))
        transcript.update(cv)
        return [cert, cv]

    def _resumption_master(self) -> bytes:
        secret = self._resumption_secret
        if not secret:
            ks = self.key_schedule
            assert ks is not None and self._resumption_hash
            secret = self._resumption_secret = ks.resumption_master_secret(self._resumption_hash)
        return secret

    def _start_transcript(self, suite: SuiteInfo) -> TranscriptHash:
        self.suite = suite
        self.transcript = suite.new_hash()
        return self.transcript

    def _transcript_hash(self) -> bytes:
        assert self.transcript is not None
        return self.transcript.digest()


def _type_name(msg_type: int) -> str:
    try:
        return HandshakeType(msg_type).name
    except ValueError:
        return f"message type {msg_type}"

