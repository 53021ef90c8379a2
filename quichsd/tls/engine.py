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
from collections.abc import Callable, Mapping

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from . import extensions as ext
from . import keylog as kl
from .config import Credentials, TlsConfig
from .constants import AlertDescription, CryptoLevel, Direction, HandshakeType
from .errors import TlsError, decode_error, illegal_parameter, protocol_violation, unexpected_message
from .events import Event, InstallSecret, SendHandshake
from .keyschedule import KeySchedule, finished_verify_data, verify_finished
from .messages import Certificate, CertificateVerify, Finished, HandshakeMessage, MessageBuffer, decode_body
from .signatures import certificate_verify_content, sign, verify
from .suites import SuiteInfo, TranscriptHash

log = logging.getLogger(__name__)

Handler = Callable[[HandshakeMessage, bytes], None]
# state -> {message type: crypto level it must arrive at}
StateTable = Mapping[enum.Enum, Mapping[HandshakeType, CryptoLevel]]

_RECEIVE_LEVELS = (CryptoLevel.INITIAL, CryptoLevel.HANDSHAKE, CryptoLevel.APP)


def load_certificate_chain(cert: Certificate) -> list[x509.Certificate]:
    """RFC 8446 §4.4.2: a peer's chain, leaf first (empty if it sent none)."""
    if cert.context:
        raise illegal_parameter("certificate_request_context must be empty in the handshake")
    if not cert.entries:
        return []
    for entry in cert.entries:
        ext.check_entry_extensions(entry.extensions, "Certificate")
    entries = [entry.cert_data for entry in cert.entries]
    try:
        chain = [x509.load_der_x509_certificate(der) for der in entries]
        # Parse the leaf's key now: CertificateVerify needs it, and a peer's unknown or
        # malformed key must end as an alert about the certificate, not internal_error.
        chain[0].public_key()
    except UnsupportedAlgorithm as exc:
        raise TlsError(AlertDescription.unsupported_certificate, f"unsupported certificate key: {exc}") from None
    except (ValueError, x509.InvalidVersion) as exc:
        raise TlsError(AlertDescription.bad_certificate, f"unparsable certificate: {exc}") from None
    return chain


class TlsEngine:
    """Base of ClientEngine and ServerEngine. Subclasses define STATES and handlers."""

    STATES: StateTable
    AFTER_CERTIFICATE_VERIFY: enum.Enum
    is_client: bool

    def __init__(self, config: TlsConfig) -> None:
        self.config = config
        self.state: enum.Enum
        self._buffers = {level: MessageBuffer() for level in _RECEIVE_LEVELS}
        self._events: list[Event] = []
        self._error: TlsError | None = None
        self._now = 0.0
        self.suite: SuiteInfo | None = None
        self.key_schedule: KeySchedule | None = None
        self.transcript: TranscriptHash | None = None
        self.client_random = b""
        self.handshake_complete = False
        self.peer_chain: list[x509.Certificate] = []
        self.peer_scheme: int | None = None
        self._handlers: dict[HandshakeType, Handler] = {}

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
        return self._guard(self._receive, level, data)

    # -- machinery ---------------------------------------------------------------------

    def _guard(self, fn: Callable[..., None], *args: object) -> list[Event]:
        if self._error is not None:
            raise self._error
        try:
            fn(*args)
        except TlsError as exc:
            self._fail(exc)
        except Exception as exc:  # a bug of ours must still end as an alert, not a traceback
            log.exception("internal error in the TLS engine")
            self._fail(TlsError(AlertDescription.internal_error, f"{type(exc).__name__}: {exc}"))
        events, self._events = self._events, []
        return events

    def _fail(self, exc: TlsError) -> None:
        self._error = exc
        self._events = []
        raise exc

    def _receive(self, level: CryptoLevel, data: bytes) -> None:
        if level == CryptoLevel.EARLY:
            # RFC 9001 §8.3: a CRYPTO frame in a 0-RTT packet is a PROTOCOL_VIOLATION.
            raise protocol_violation("handshake data in 0-RTT")
        buffer = self._buffers.get(level)  # keyed by CryptoLevel; a plain int finds it too
        if buffer is None:
            raise unexpected_message(f"handshake data at level {level}")
        for message in buffer.feed(data):
            self._dispatch(level, message)

    def _dispatch(self, level: CryptoLevel, message: bytes) -> None:
        msg_type = message[0]
        expected = self.STATES[self.state]
        want_level = expected.get(msg_type)  # type: ignore[call-overload]
        if want_level is None:
            if msg_type == HandshakeType.END_OF_EARLY_DATA:
                raise protocol_violation("EndOfEarlyData is not used in QUIC (RFC 9001 §8.3)")
            if msg_type == HandshakeType.KEY_UPDATE:
                # RFC 9001 §6: error 0x10a, i.e. unexpected_message.
                raise unexpected_message("TLS KeyUpdate is forbidden in QUIC")
            raise unexpected_message(
                f"{_type_name(msg_type)} not expected in state {self.state.name}"
            )
        if level != want_level:
            raise unexpected_message(
                f"{_type_name(msg_type)} at level {CryptoLevel(level).name}, expected {want_level.name}"
            )
        body = decode_body(msg_type, message[4:])
        self._handlers[msg_type](body, message)  # type: ignore[index]

    def _check_level_drained(self, level: CryptoLevel) -> None:
        """RFC 8446 §5.1: messages must not span a key change (unexpected_message); RFC 9001
        §4.1.3: unconsumed data of a previous level is a PROTOCOL_VIOLATION."""
        if len(self._buffers[level]):
            raise protocol_violation(f"partial message left at level {level.name} after a key change")

    # -- helpers for subclasses ----------------------------------------------------------

    def _send(self, level: CryptoLevel, *messages: bytes) -> None:
        self._events.append(SendHandshake(level, b"".join(messages)))

    def _install(self, level: CryptoLevel, direction: Direction, secret: bytes, label: str | None) -> None:
        assert self.suite is not None
        self._events.append(InstallSecret(level, direction, self.suite.kernel_cipher, secret))
        if label is not None and self.config.keylog is not None:
            self.config.keylog.log(label, self.client_random, secret)

    def _install_handshake_secrets(self, client_secret: bytes, server_secret: bytes) -> None:
        """Send key first, then receive key (spec §2.4)."""
        mine, theirs = (client_secret, server_secret) if self.is_client else (server_secret, client_secret)
        labels = (kl.CLIENT_HANDSHAKE, kl.SERVER_HANDSHAKE)
        mine_label, theirs_label = labels if self.is_client else labels[::-1]
        self._install(CryptoLevel.HANDSHAKE, Direction.SEND, mine, mine_label)
        self._install(CryptoLevel.HANDSHAKE, Direction.RECV, theirs, theirs_label)

    # -- authentication messages both roles send and check (RFC 8446 §4.4) ----------------

    def _on_certificate_verify(self, cv: CertificateVerify, raw: bytes) -> None:
        if cv.scheme not in self.config.signature_schemes:
            raise illegal_parameter("CertificateVerify uses a scheme we did not offer")
        # The peer signed as the other role: a client checks the server's context string.
        content = certificate_verify_content(self.is_client, self._transcript_hash())
        verify(cv.scheme, self.peer_chain[0].public_key(), content, cv.signature)
        self.peer_scheme = cv.scheme
        assert self.transcript is not None
        self.transcript.update(raw)
        self.state = self.AFTER_CERTIFICATE_VERIFY

    def _check_peer_finished(self, fin: Finished, base_secret: bytes) -> None:
        suite, transcript = self.suite, self.transcript
        assert suite is not None and transcript is not None
        if len(fin.verify_data) != suite.hash_len:
            raise decode_error("Finished of the wrong length")
        expected = finished_verify_data(suite.hash_name, base_secret, transcript.copy().digest())
        if not verify_finished(expected, fin.verify_data):
            raise TlsError(AlertDescription.decrypt_error, "peer Finished does not verify")

    def _sign_certificate(self, creds: Credentials, scheme: int) -> list[bytes]:
        """Our Certificate and CertificateVerify, added to the transcript."""
        assert self.transcript is not None
        cert = creds.certificate_message
        self.transcript.update(cert)
        content = certificate_verify_content(not self.is_client, self.transcript.copy().digest())
        cv = CertificateVerify(scheme, sign(scheme, creds.private_key, content)).encode()
        self.transcript.update(cv)
        return [cert, cv]

    def _start_transcript(self, suite: SuiteInfo) -> TranscriptHash:
        self.suite = suite
        self.transcript = suite.new_hash()
        return self.transcript

    def _transcript_hash(self) -> bytes:
        assert self.transcript is not None
        return self.transcript.copy().digest()


def _type_name(msg_type: int) -> str:
    try:
        return HandshakeType(msg_type).name
    except ValueError:
        return f"message type {msg_type}"

