"""A FIFO for the few items a connection queues at a time (handshake chunks for recvmsg,
DATAGRAM frames each way, events), where a deque's first block (760 bytes, made
empty) would be most of what a half-open connection holds.

A list with deque's popleft: 56 bytes empty; popleft moves the items left, which for the
handful queued at a time costs less than a deque's block. Only append, popleft, [i], len
and truth are used on it.
"""
from __future__ import annotations

from typing import TypeVar

__all__ = ["SmallQueue"]

_T = TypeVar("_T")


class SmallQueue(list[_T]):
    __slots__ = ()

    def popleft(self) -> _T:
        return self.pop(0)
