"""CRYPTO data between the peer and the handshake agent (spec §2.2, §2.3): the CRYPTO streams
per level, the chunks that wait for recvmsg, and the client's capture of the first
NewSessionTicket from 1-RTT CRYPTO data (spec §2.6)."""
from __future__ import annotations

from .crypto_stream import CryptoStreams
from .small_queue import SmallQueue

__all__ = ["HandshakeData", "QueuedChunk", "TicketCapture", "TICKET_MAX"]

TICKET_MAX = 4096


class QueuedChunk:
    """One in-order CRYPTO chunk for recvmsg, read `pos` bytes so far (the kernel queues one
    entry per frame and never merges them)."""

    __slots__ = ("level", "data", "pos")

    def __init__(self, level: int, data: bytes) -> None:
        self.level = level
        self.data = data
        self.pos = 0


class HandshakeData:
    __slots__ = ("streams", "queue", "app_started")

    def __init__(self, app_started: bool) -> None:
        self.streams = CryptoStreams()  # by level, made at first use
        self.queue: SmallQueue[QueuedChunk] = SmallQueue()
        # The application has read handshake data: its handshake runs (idle_work derives
        # keys for it). A client's always does.
        self.app_started = app_started

    def deliver(self, level: int, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.queue.append(QueuedChunk(level, chunk))

    def read(self, max_len: int) -> tuple[int, bytes, bool] | None:
        """(level, data, whole chunk read) of the first queued chunk, or None."""
        self.app_started = True
        if not self.queue:
            return None
        entry = self.queue[0]
        chunk = entry.data
        end = min(len(chunk), entry.pos + max(0, max_len))
        data = chunk[entry.pos:end]
        if end >= len(chunk):
            self.queue.popleft()
            return entry.level, data, True
        entry.pos = end
        return entry.level, data, False


class TicketCapture:
    """Client side of spec §2.6: the first NewSessionTicket, from APP CRYPTO offset 0, kept
    for QUIC_SOCKOPT_SESSION_TICKET."""

    __slots__ = ("blob", "ready", "open")

    def __init__(self) -> None:
        self.blob = bytearray()
        self.ready = False
        self.open = True

    def capture(self, chunk: bytes) -> None:
        if self.ready or not self.open:
            return
        if len(self.blob) + len(chunk) > TICKET_MAX:
            self.open = False
            return
        self.blob += chunk
        if len(self.blob) >= 4 and len(self.blob) >= 4 + int.from_bytes(self.blob[1:4], "big"):
            self.ready = True

    def ticket(self) -> bytes:
        return bytes(self.blob) if self.ready else b""

    def replace(self, blob: bytes) -> None:
        self.blob = bytearray(blob)
        self.open = False
