"""What the connection knows of its close (RFC 9000 §10.2): why it closed (as
QUIC_SOCKOPT_CONNECTION_CLOSE reports it, spec §1.5), the CONNECTION_CLOSE frames still to
send, and the datagram that carried them, answered again to a peer that keeps sending."""
from __future__ import annotations

from ...quic import close_text
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
    """The peer's CONNECTION_CLOSE in words (quic/close_text.py), e.g. "peer closed: 0x12a
    (TLS alert bad_certificate)"."""
    return close_text.describe_peer_close(f.error_code, f.reason, app=f.app)
