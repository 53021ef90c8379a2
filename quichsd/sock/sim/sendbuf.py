"""The sending half of a byte stream (CRYPTO at one level, or one STREAM): bytes written by
the application stay until acknowledged; lost ranges are sent again before new data.

Offsets are stream offsets. The acknowledged prefix is cut off the buffer in large steps
(never per packet), and a frame's data is one slice of at most a packet's size.
"""
from __future__ import annotations

from .rangeset import RangeSet

__all__ = ["SendBuffer"]

_TRIM_STEP = 16384  # cut the acknowledged prefix once it is at least this long


class SendBuffer:
    __slots__ = ("_data", "_base", "_end", "_next", "_acked", "_lost", "fin", "_fin_sent",
                 "fin_acked")

    def __init__(self) -> None:
        self._data = bytearray()
        self._base = 0  # stream offset of _data[0]
        self._end = 0  # offset after the last byte written
        self._next = 0  # first offset never sent
        self._acked = RangeSet()
        self._lost = RangeSet()  # sent, declared lost and not acked since
        self.fin = False  # the application ended the stream
        self._fin_sent = False
        self.fin_acked = False

    # -- writing -------------------------------------------------------------------------

    @property
    def end(self) -> int:
        return self._end

    @property
    def sent_end(self) -> int:
        return self._next

    def write(self, data: bytes, fin: bool = False) -> None:
        if self.fin:
            raise ValueError("write after FIN")
        self._data += data
        self._end += len(data)
        self.fin = fin

    # -- sending -------------------------------------------------------------------------

    def has_pending(self, limit: int | None = None) -> bool:
        if self._lost:
            return True
        if self.fin and not self._fin_sent and self._next == self._end:
            return True
        top = self._end if limit is None else min(self._end, limit)
        return self._next < top

    def next_chunk(self, max_len: int, limit: int | None = None) -> tuple[int, bytes, bool] | None:
        """(offset, data, fin) of the next frame, at most `max_len` data bytes; lost data
        first. `limit` caps new data (flow control), never retransmissions."""
        if max_len < 0:
            return None
        if self._lost:
            start, end = self._lost.first()
            end = min(end, start + max_len)
            if end <= start:
                return None
            self._lost.subtract(start, end)
            fin = self.fin and end == self._end and not self.fin_acked
            if fin:
                self._fin_sent = True
            return start, bytes(self._data[start - self._base:end - self._base]), fin
        start = self._next
        top = self._end if limit is None else min(self._end, max(limit, start))
        end = min(top, start + max_len)
        fin = self.fin and end == self._end and not self._fin_sent
        if end == start and not fin:
            return None
        self._next = end
        if fin:
            self._fin_sent = True
        return start, bytes(self._data[start - self._base:end - self._base]), fin

    # -- feedback ------------------------------------------------------------------------

    def on_acked(self, start: int, end: int, fin: bool) -> None:
        self._acked.add(start, end)
        self._lost.subtract(start, end)
        if fin:
            self.fin_acked = True
        a_start, a_end = self._acked.first() if self._acked else (0, 0)
        if a_start <= self._base < a_end:
            cut = a_end - self._base
            if cut >= _TRIM_STEP or a_end == self._end:
                del self._data[:cut]
                self._base = a_end

    def on_lost(self, start: int, end: int, fin: bool) -> None:
        if end > start:
            self._lost.add(max(start, self._base), end)
            for a_start, a_end in list(self._acked):
                if a_start < end and a_end > start:
                    self._lost.subtract(a_start, a_end)
        if fin and not self.fin_acked:
            self._fin_sent = False
            if not self._lost and self._next == self._end:
                pass  # next_chunk sends an empty FIN frame

    def retransmit_all(self) -> None:
        """PTO probe: everything sent and not acknowledged is sent again."""
        self.on_lost(self._base, self._next, self._fin_sent and not self.fin_acked)

    @property
    def all_acked(self) -> bool:
        return self.fin and self.fin_acked and (self._end == 0 or self._acked.covers(0, self._end))

    @property
    def unacked(self) -> bool:
        """Something was sent and is not acknowledged yet."""
        if self._fin_sent and not self.fin_acked:
            return True
        return self._next > self._base and not self._acked.covers(self._base, self._next)

    def reset(self) -> None:
        """Abandon everything (RESET_STREAM sent, or keys discarded)."""
        self._data = bytearray()
        self._base = self._next = self._end
        self._lost = RangeSet()
