"""The connection's clock and the timers that are not loss recovery's: the idle timeout
(RFC 9000 §10.1) and the hold that lets an ACK wait for the handshake agent's answer
(spec kernel-quic-abi §2.3 transmit triggers)."""
from __future__ import annotations

__all__ = ["Timers"]


class Timers:
    """Times in seconds on the caller's clock (`now` arguments); None: not armed."""

    __slots__ = ("now", "idle_timeout", "idle_deadline", "restart_idle_on_send", "last_send", "hold_until")

    def __init__(self, now: float, idle_timeout: float) -> None:
        self.now = now  # the time the latest call brought
        self.idle_timeout = idle_timeout  # 0.0: none negotiated
        self.idle_deadline: float | None = now + idle_timeout if idle_timeout else None
        # The first ack-eliciting packet sent after a receive restarts the idle timer (§10.1).
        self.restart_idle_on_send = True
        self.last_send = now  # the latest ack-eliciting packet (the client's PTO without flight)
        # Handshake data waits for the application: what it would trigger alone (an ACK)
        # waits for the response it will send, so both leave in one datagram as in a stack
        # that runs TLS inline; at the latest at this time (RFC 9000 §13.2.1).
        self.hold_until: float | None = None

    def set_idle_timeout(self, seconds: float) -> None:
        self.idle_timeout = seconds
        self.idle_deadline = self.now + seconds if seconds else None

    def on_packet_received(self, now: float) -> None:
        if self.idle_timeout:
            self.idle_deadline = now + self.idle_timeout
        self.restart_idle_on_send = True

    def on_eliciting_sent(self, now: float) -> None:
        self.last_send = now
        if self.restart_idle_on_send and self.idle_timeout:
            self.idle_deadline = now + self.idle_timeout
            self.restart_idle_on_send = False
