"""The events a socket subscribed with QUIC_SOCKOPT_EVENT, queued for recvmsg
(MSG_QUIC_NOTIFICATION, spec §1.5): an event type byte and its payload each."""
from __future__ import annotations

__all__ = ["Notifications"]


class Notifications:
    __slots__ = ("mask", "queue")

    def __init__(self) -> None:
        self.mask = 0  # QUIC_SOCKOPT_EVENT bits
        self.queue: list[bytes] = []  # rare: no deque

    def push(self, event_type: int, payload: bytes) -> None:
        if self.mask & (1 << event_type):
            self.queue.append(bytes((event_type,)) + payload)
