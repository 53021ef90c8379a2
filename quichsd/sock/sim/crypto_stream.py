"""CRYPTO streams, one per encryption level (RFC 9000 §19.6, spec §2.2-2.3).

Receiving: frames are reassembled in order; duplicates and overlaps are trimmed,
out-of-order frames parked. Every frame that becomes in order yields one *chunk*, and
chunks are never merged: the socket queues one entry per chunk, as the kernel does.
Sending: a SendBuffer per level; the kernel tracks offsets, userspace only appends.
"""
from __future__ import annotations

from ...quic.errors import QuicError, QuicErrorCode
from .sendbuf import SendBuffer

__all__ = ["Reassembly", "CryptoStream", "CryptoStreams", "CRYPTO_PARK_LIMIT"]

# Out-of-order CRYPTO bytes held per level before CRYPTO_BUFFER_EXCEEDED (the kernel
# allows 3/4 of SO_RCVBUF; a ClientHello and a certificate chain fit many times over).
CRYPTO_PARK_LIMIT = 256 * 1024


class Reassembly:
    """In-order delivery of a byte stream received as (offset, data) pieces."""

    __slots__ = ("offset", "_parked", "_parked_bytes", "_limit", "_error")

    def __init__(self, limit: int | None = None,
                 error: QuicErrorCode = QuicErrorCode.CRYPTO_BUFFER_EXCEEDED) -> None:
        self.offset = 0  # everything below has been delivered
        self._parked: dict[int, bytes] = {}
        self._parked_bytes = 0
        self._limit = limit
        self._error = error

    @property
    def parked(self) -> int:
        return self._parked_bytes

    def feed(self, offset: int, data: bytes) -> list[bytes]:
        """The chunks that became in order, one per frame (possibly none)."""
        end = offset + len(data)
        if end <= self.offset:
            return []  # a duplicate
        if offset > self.offset:
            self._park(offset, data)
            return []
        chunks = [data[self.offset - offset:] if offset < self.offset else data]
        self.offset = end
        while self._parked:
            first = min(self._parked)
            if first > self.offset:
                break
            piece = self._parked.pop(first)
            self._parked_bytes -= len(piece)
            piece_end = first + len(piece)
            if piece_end > self.offset:
                chunks.append(piece[self.offset - first:])
                self.offset = piece_end
        return chunks

    def _park(self, offset: int, data: bytes) -> None:
        old = self._parked.get(offset)
        if old is not None:
            if len(old) >= len(data):
                return
            self._parked_bytes -= len(old)
        self._parked[offset] = data
        self._parked_bytes += len(data)
        if self._limit is not None and self._parked_bytes > self._limit:
            raise QuicError(self._error, "too much out-of-order data buffered")


class CryptoStream:
    """Both directions of one level's CRYPTO stream."""

    __slots__ = ("send", "recv")

    def __init__(self) -> None:
        self.send = SendBuffer()
        self.recv = Reassembly(CRYPTO_PARK_LIMIT)


class CryptoStreams(dict[int, CryptoStream]):
    """A connection's CRYPTO streams by level, each made at its first use: a half-open
    server connection (an Initial and nothing more) only ever touches Initial's."""

    def __missing__(self, level: int) -> CryptoStream:
        stream = self[level] = CryptoStream()
        return stream
