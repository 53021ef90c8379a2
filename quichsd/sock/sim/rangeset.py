"""Sets of integers kept as sorted, disjoint half-open ranges [start, end).

Used for received packet numbers (ACK ranges), acknowledged and lost byte ranges of send
buffers. The sets stay small (a handful of ranges), so a sorted list is enough.

Many stay empty for a connection's life (a half-open connection has five), so an empty
set shares one empty tuple for both lists until its first add (112 bytes less each).
"""
from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

__all__ = ["RangeSet"]

_NONE: tuple[int, ...] = ()  # the lists of every empty set (never written: add() replaces it)


class RangeSet:
    __slots__ = ("_starts", "_ends")

    def __init__(self) -> None:
        self._starts: list[int] = _NONE  # type: ignore[assignment]
        self._ends: list[int] = _NONE  # type: ignore[assignment]

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __len__(self) -> int:
        return len(self._starts)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(zip(self._starts, self._ends, strict=True))

    def __repr__(self) -> str:
        return f"RangeSet({list(self)})"

    def __contains__(self, value: int) -> bool:
        i = bisect_left(self._ends, value + 1)
        return i < len(self._starts) and self._starts[i] <= value

    def first(self) -> tuple[int, int]:
        return self._starts[0], self._ends[0]

    def last(self) -> tuple[int, int]:
        return self._starts[-1], self._ends[-1]

    def add(self, start: int, end: int) -> None:
        """Add [start, end), merging with touching or overlapping ranges."""
        if start >= end:
            return
        starts, ends = self._starts, self._ends
        if not starts:
            self._starts, self._ends = [start], [end]
            return
        i = bisect_left(ends, start)  # first range that ends at or after start
        j = i
        while j < len(starts) and starts[j] <= end:
            start = min(start, starts[j])
            end = max(end, ends[j])
            j += 1
        starts[i:j] = [start]
        ends[i:j] = [end]

    def subtract(self, start: int, end: int) -> None:
        """Remove [start, end)."""
        if start >= end or not self._starts:
            return
        starts, ends = self._starts, self._ends
        i = bisect_left(ends, start + 1)  # first range that ends after start
        keep_s: list[int] = []
        keep_e: list[int] = []
        j = i
        while j < len(starts) and starts[j] < end:
            if starts[j] < start:
                keep_s.append(starts[j])
                keep_e.append(start)
            if ends[j] > end:
                keep_s.append(end)
                keep_e.append(ends[j])
            j += 1
        starts[i:j] = keep_s
        ends[i:j] = keep_e

    def covers(self, start: int, end: int) -> bool:
        """True if [start, end) lies inside one range."""
        i = bisect_left(self._ends, start + 1)
        return i < len(self._starts) and self._starts[i] <= start and self._ends[i] >= end

    def trim_to(self, count: int) -> None:
        """Keep only the `count` highest ranges."""
        if len(self._starts) > count:
            del self._starts[: len(self._starts) - count]
            del self._ends[: len(self._ends) - count]

    def ranges_descending(self) -> Iterator[tuple[int, int]]:
        return zip(reversed(self._starts), reversed(self._ends), strict=True)
