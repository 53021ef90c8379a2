"""Path validation for a peer's new address (RFC 9000 §8.2, §9.3): a server that gets a
1-RTT packet with the highest packet number so far from another address probes that address
with PATH_CHALLENGE and moves there only once the matching PATH_RESPONSE arrives, as the
kernel does (packet.c quic_packet_path_alt_process, frame.c quic_frame_path_response_process:
then a CONNECTION_MIGRATION event whose payload byte says whether our own address changed).
Until then everything else keeps going to the validated address, so a spoofed or replayed
source address cannot move the connection (§9.3.2, §9.3.3)."""
from __future__ import annotations

import hmac
import os
from typing import Any

__all__ = ["PathProbe", "CHALLENGE_DATAGRAM"]

CHALLENGE_DATAGRAM = 1200  # §8.2.1: a datagram with PATH_CHALLENGE is expanded to this size


class PathProbe:
    """The one alternative peer address being validated (the kernel keeps one, path[1])."""

    __slots__ = ("alt_addr", "entropy", "received", "sent", "challenge_due", "moved_to")

    def __init__(self) -> None:
        self.alt_addr: Any = None
        self.entropy = b""
        self.received = 0  # bytes from alt_addr: its anti-amplification credit (§8.1, §9.3)
        self.sent = 0
        self.challenge_due = False
        self.moved_to: Any = None  # the last address validated and moved to: getpeername's

    def on_packet(self, addr: Any, size: int) -> None:
        """A non-duplicate 1-RTT packet with the highest number so far came from `addr`, not
        from the validated address: probe it (again, if the last challenge went unanswered)."""
        if addr != self.alt_addr:
            self.alt_addr, self.entropy = addr, os.urandom(8)
            self.received = self.sent = 0
        self.received += size
        self.challenge_due = True

    def budget(self) -> int:
        """What may be sent to the unvalidated address: three times what came from it."""
        return max(0, 3 * self.received - self.sent)

    def on_response(self, data: bytes) -> Any:
        """A PATH_RESPONSE: the validated new address if it answers our challenge, else None
        (a stale or forged response is ignored, §8.2.3)."""
        if self.alt_addr is None or not hmac.compare_digest(data, self.entropy):
            return None
        self.moved_to, self.alt_addr, self.entropy, self.challenge_due = self.alt_addr, None, b"", False
        return self.moved_to
