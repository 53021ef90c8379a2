"""Our TLS engine over a connected TCP socket: the TLS 1.3 handshake in records (RFC 8446).

The engine speaks in levels, as for QUIC: its Initial messages go out as plaintext records,
its Handshake messages as records protected with the handshake traffic key, and a message
it sends at the application level (a server's NewSessionTicket, if one was configured) with
the application traffic key. What it leaves behind is what kTLS needs: the application
traffic keys and both sequence numbers (ApplicationKeys).

Reading takes one exact record at a time (header, then body) and stops at the record that
completes the handshake, so application data the peer sent right after its Finished stays
in the socket for kTLS. The socket's blocking mode is never changed: poll() waits, and the
calls themselves are MSG_DONTWAIT (a consumer's fd may be non-blocking, tlshd spec §9.4).
"""
from __future__ import annotations

import errno
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..tls.client import ClientEngine
from ..tls.config import ClientHelloInfo, ServerChoice
from ..tls.constants import AlertDescription, CryptoLevel, Direction
from ..tls.errors import TlsError, unexpected_message
from ..tls.events import ClientHelloReceived, Event, HandshakeComplete, InstallSecret, SendHandshake
from ..tls.messages import MessageBuffer
from ..tls.server import ServerEngine
from ..tls.suites import SuiteInfo
from .record import (
    HEADER_LEN,
    ContentType,
    RecordProtection,
    TrafficKeys,
    alert_payload,
    parse_alert,
    parse_header,
    plaintext_records,
)

__all__ = [
    "ApplicationKeys",
    "HandshakeTimedOut",
    "LocalAlert",
    "PeerAlert",
    "PeerClosed",
    "TcpHandshakeError",
    "TcpTlsHandshake",
]

_INITIAL, _HANDSHAKE, _APP = CryptoLevel.INITIAL, CryptoLevel.HANDSHAKE, CryptoLevel.APP
_CCS_BODY = b"\x01"


class TcpHandshakeError(Exception):
    """A handshake over TCP that did not complete. `status` is the errno tlshd 1.4 reports
    for the same outcome (tlshd-behaviour §3.3): EACCES by default."""

    status = errno.EACCES


class LocalAlert(TcpHandshakeError):
    """We found the fault and sent the peer this alert."""

    def __init__(self, error: TlsError) -> None:
        super().__init__(str(error))
        self.alert = error.alert


class PeerAlert(TcpHandshakeError):
    """The peer sent a fatal alert (or close_notify) during the handshake."""

    def __init__(self, alert: AlertDescription | int) -> None:
        name = alert.name if isinstance(alert, AlertDescription) else f"alert {alert}"
        super().__init__(f"peer sent {name}")
        self.alert = alert


class PeerClosed(TcpHandshakeError):
    """The peer closed the connection mid-handshake: tlshd's "premature termination"."""

    status = errno.ETIMEDOUT


class HandshakeTimedOut(TcpHandshakeError):
    """The deadline passed (GnuTLS's own timeout gives EACCES in tlshd)."""


@dataclass(frozen=True, slots=True)
class ApplicationKeys:
    """What kTLS takes after the handshake: each direction's application traffic key and
    the sequence number of its next record (0 unless records already used the key)."""

    suite: SuiteInfo
    tx: TrafficKeys
    tx_sequence: int
    rx: TrafficKeys
    rx_sequence: int


class TcpTlsHandshake:
    """One handshake on `sock` (connected TCP, either blocking mode) with `engine`; run()
    returns the HandshakeComplete and leaves `keys` for kTLS (or for RecordProtection).

    `choose` answers a server engine's ClientHelloReceived (TlsConfig.pause_at_client_hello):
    the caller picks PSKs by the offered identities, say; a TlsError it raises is sent as
    that alert (LocalAlert)."""

    def __init__(self, sock: socket.socket, engine: ClientEngine | ServerEngine,
                 choose: Callable[[ClientHelloInfo], ServerChoice | None] | None = None) -> None:
        self.sock = sock
        self.engine = engine
        self._choose = choose
        self._writers: dict[CryptoLevel, RecordProtection] = {}
        self._alert_writer: RecordProtection | None = None  # the newest send key
        self._reader: RecordProtection | None = None
        self._read_level = _INITIAL
        self._rx_app: TrafficKeys | None = None
        self._messages = MessageBuffer()
        self._hello_seen = isinstance(engine, ClientEngine)  # §5: CCS only after a ClientHello
        self._outgoing = bytearray()
        self._deadline = 0.0
        self.complete: HandshakeComplete | None = None
        self.keys: ApplicationKeys | None = None
        self.dropped_change_cipher_spec = 0  # a peer in middlebox compatibility mode sends one

    # -- the whole handshake ------------------------------------------------------------

    def run(self, timeout: float) -> HandshakeComplete:
        """The handshake, within `timeout` seconds. TcpHandshakeError when it fails; OSError
        from the socket passes through."""
        self._deadline = time.monotonic() + timeout
        try:
            if isinstance(self.engine, ClientEngine):
                self._apply(self.engine.start())
            self._flush()
            while self.complete is None:
                self._read_record()
                self._flush()
        except TlsError as exc:
            self._send_alert(exc)
            raise LocalAlert(exc) from None
        self.keys = self._application_keys()
        return self.complete

    # -- engine events -> records --------------------------------------------------------

    def _apply(self, events: list[Event]) -> None:
        for event in events:
            if type(event) is SendHandshake:
                self._queue_handshake(event.level, event.data)
            elif type(event) is InstallSecret:
                self._install(event)
            elif type(event) is HandshakeComplete:
                self.complete = event
            elif type(event) is ClientHelloReceived:  # always the last event of its list
                self._apply(self._answer_client_hello(event.info))

    def _answer_client_hello(self, info: ClientHelloInfo) -> list[Event]:
        if not isinstance(self.engine, ServerEngine) or self._choose is None:
            raise TlsError(AlertDescription.internal_error, "ClientHello paused with nobody to answer it")
        return self.engine.choose(self._choose(info))

    def _queue_handshake(self, level: CryptoLevel, data: bytes) -> None:
        if level == _INITIAL:
            self._outgoing += plaintext_records(ContentType.HANDSHAKE, data)
            return
        writer = self._writers.get(level)
        if writer is None:
            raise TlsError(AlertDescription.internal_error, f"no send key at level {level.name}")
        self._outgoing += writer.seal_all(ContentType.HANDSHAKE, data)

    def _install(self, event: InstallSecret) -> None:
        suite = self.engine.suite
        assert suite is not None  # the engine installs a secret only once it has a suite
        keys = TrafficKeys.from_secret(suite, event.secret)
        if event.direction == Direction.SEND:
            writer = RecordProtection(keys)
            self._writers[event.level] = self._alert_writer = writer
        elif event.level == _APP:
            self._rx_app = keys  # read by kTLS, not by us: the handshake ends here
        else:
            if len(self._messages):
                raise unexpected_message("handshake message spans a key change (RFC 8446 §5.1)")
            self._reader = RecordProtection(keys)
            self._read_level = event.level

    def _application_keys(self) -> ApplicationKeys:
        writer, suite = self._writers.get(_APP), self.engine.suite
        if writer is None or self._rx_app is None or suite is None:
            raise TlsError(AlertDescription.internal_error, "handshake complete without application keys")
        return ApplicationKeys(suite, writer.keys, writer.sequence, self._rx_app, 0)

    # -- records -> engine ------------------------------------------------------------------

    def _read_record(self) -> None:
        protected = self._reader is not None
        header_bytes = self._read_exact(HEADER_LEN)
        header = parse_header(header_bytes, protected)
        body = self._read_exact(header.length)
        content_type = header.content_type
        if content_type == ContentType.CHANGE_CIPHER_SPEC:
            self._drop_change_cipher_spec(body)
            return
        if content_type == ContentType.ALERT:
            # A plaintext alert even under keys: a peer that failed before it had ours
            # (on our ServerHello, say) can only send it so. It ends the handshake anyway.
            raise PeerAlert(parse_alert(body))
        if self._reader is not None:
            if content_type != ContentType.APPLICATION_DATA:
                raise unexpected_message(f"plaintext {content_type.name} record after the key change")
            content_type, body = self._reader.open(header_bytes, body)
            if content_type == ContentType.ALERT:
                raise PeerAlert(parse_alert(body))
        if content_type != ContentType.HANDSHAKE:
            raise unexpected_message(f"{content_type.name} record during the handshake")
        self._take_handshake(body)

    def _drop_change_cipher_spec(self, body: bytes) -> None:
        """RFC 8446 §5: a plaintext change_cipher_spec of the one byte 0x01, after the first
        ClientHello and before the peer's Finished, is dropped; any other is an error."""
        if body != _CCS_BODY or not self._hello_seen:
            raise unexpected_message("change_cipher_spec record not allowed here")
        if len(self._messages):
            raise unexpected_message("change_cipher_spec inside a handshake message")
        self.dropped_change_cipher_spec += 1

    def _take_handshake(self, fragment: bytes) -> None:
        if not fragment:
            raise unexpected_message("zero-length handshake record (RFC 8446 §5.1)")
        for message in self._messages.feed(fragment):
            if self.complete is not None:
                raise unexpected_message("handshake data after the handshake completed")
            self._hello_seen = True
            self._apply(self.engine.receive(self._read_level, message))
            if isinstance(self.engine, ServerEngine) and self.engine.flight_pending:
                self._apply(self.engine.continue_flight())

    # -- socket I/O without changing its blocking mode ------------------------------------

    def _wait(self, events: int) -> None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise HandshakeTimedOut("handshake timed out")
        poller = select.poll()
        poller.register(self.sock.fileno(), events)
        if not poller.poll(remaining * 1000):
            raise HandshakeTimedOut("handshake timed out")

    def _read_exact(self, n: int) -> bytes:
        # Each call tries first and polls only when it would block: most records are
        # there already, and a poll() per recv() was a fifth of the handshake's syscalls.
        data = bytearray()
        while len(data) < n:
            if time.monotonic() >= self._deadline:  # a peer that never stops sending, too
                raise HandshakeTimedOut("handshake timed out")
            try:
                chunk = self.sock.recv(n - len(data), socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                self._wait(select.POLLIN)
                continue
            except ConnectionResetError:
                raise PeerClosed("connection reset by the peer during the handshake") from None
            if not chunk:
                raise PeerClosed("peer closed the connection during the handshake")
            data += chunk
        return bytes(data)

    def _flush(self) -> None:
        view = memoryview(bytes(self._outgoing))
        self._outgoing.clear()
        while view:
            try:
                sent = self.sock.send(view, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except (BlockingIOError, InterruptedError):
                self._wait(select.POLLOUT)
                continue
            except (BrokenPipeError, ConnectionResetError):
                raise PeerClosed("peer closed the connection during the handshake") from None
            view = view[sent:]

    def _send_alert(self, error: TlsError) -> None:
        """Best effort: the alert for `error` under our newest send key, or in plaintext."""
        payload = alert_payload(error.alert)
        writer = self._alert_writer
        try:
            if writer is None:
                self._outgoing = bytearray(plaintext_records(ContentType.ALERT, payload))
            else:
                self._outgoing = bytearray(writer.seal(ContentType.ALERT, payload))
            self._flush()
        except (OSError, TcpHandshakeError, TlsError):
            pass  # the peer is gone or slow; our own error is what the caller learns
