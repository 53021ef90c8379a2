"""What the connection knows of its close (RFC 9000 §10.2): why it closed (as
QUIC_SOCKOPT_CONNECTION_CLOSE reports it, spec §1.5), the CONNECTION_CLOSE frames still to
send, and the datagram that carried them, answered again to a peer that keeps sending."""
from __future__ import annotations

from ...quic.errors import CRYPTO_ERROR_BASE, QuicErrorCode
from ...tls.constants import AlertDescription
from . import frames as fr

__all__ = ["CloseState", "CLOSE_RESENDS", "describe_peer_close"]

CLOSE_RESENDS = 3  # answers to a peer that keeps sending after our CONNECTION_CLOSE


class CloseState:
    __slots__ = ("info", "peer_close", "frames", "datagram", "resends", "resend_due")

    def __init__(self) -> None:
        self.info: tuple[int, int, bytes] | None = None  # (error code, frame type, phrase)
        # The peer's CONNECTION_CLOSE, once received (`info` does not say whose close it
        # was, nor whether it was an application's).
        self.peer_close: fr.ConnectionClose | None = None
        self.frames: list[tuple[int, fr.ConnectionClose]] = []  # (level, frame) not sent yet
        self.datagram: bytes | None = None  # the close as sent, for the resends
        self.resends = 0
        self.resend_due = False

    def on_datagram_while_closed(self) -> None:
        if self.datagram is not None and self.resends < CLOSE_RESENDS:
            self.resends += 1
            self.resend_due = True

    def on_peer_close(self, f: fr.ConnectionClose) -> None:
        """Draining: nothing more is sent (RFC 9000 §10.2.2)."""
        self.peer_close = f
        self.info = (f.error_code, 0 if f.app else f.frame_type, f.reason[:63])
        self.frames = []
        self.datagram = None


def describe_peer_close(f: fr.ConnectionClose) -> str:
    """The peer's CONNECTION_CLOSE in words, for the error of a call on the connection it
    closed: its code, what the code means (0x100+N is TLS alert N, RFC 9001 §4.8) and its
    reason phrase, e.g. "peer closed: 0x12a (TLS alert bad_certificate: ...)"."""
    code = f.error_code
    if f.app:
        meaning = "application error"
    elif CRYPTO_ERROR_BASE <= code <= CRYPTO_ERROR_BASE + 0xFF:
        alert = code - CRYPTO_ERROR_BASE
        try:
            name = AlertDescription(alert).name
        except ValueError:
            name = str(alert)
        meaning = f"TLS alert {name}"
        if f.reason == name.encode():  # the phrase quichsd's own handshake gives
            return f"peer closed: 0x{code:x} ({meaning})"
    else:
        try:
            meaning = QuicErrorCode(code).name
        except ValueError:
            meaning = "transport error"
    phrase = f.reason[:63].decode("utf-8", "replace")  # the peer's bytes, as the kernel keeps them
    if phrase and not phrase.isprintable():
        phrase = ascii(phrase)
    if phrase:
        meaning = f"{meaning}: {phrase}"
    return f"peer closed: 0x{code:x} ({meaning})"
