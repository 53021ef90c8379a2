"""Length-prefixed TLS presentation-language codec (RFC 8446 §3).

Reader walks one `bytes` object with an offset (no re-slicing of the tail); every
short read raises TlsError(decode_error). Writer builds into a bytearray.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from .errors import decode_error

T = TypeVar("T")


class Reader:
    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def remaining(self) -> int:
        return self.end - self.pos

    def eof(self) -> bool:
        return self.pos >= self.end

    def expect_end(self, what: str) -> None:
        if self.pos != self.end:
            raise decode_error(f"{self.end - self.pos} trailing bytes in {what}")

    def uint(self, width: int) -> int:
        pos = self.pos
        end = pos + width
        if end > self.end:
            raise decode_error("truncated")
        self.pos = end
        return int.from_bytes(self.data[pos:end], "big")

    def u8(self) -> int:
        if self.pos >= self.end:
            raise decode_error("truncated")
        v = self.data[self.pos]
        self.pos += 1
        return v

    def u16(self) -> int:
        pos = self.pos
        if pos + 2 > self.end:
            raise decode_error("truncated")
        self.pos = pos + 2
        data = self.data
        return (data[pos] << 8) | data[pos + 1]

    def u24(self) -> int:
        return self.uint(3)

    def u32(self) -> int:
        return self.uint(4)

    def vec(self, len_width: int, min_len: int = 0, max_len: int | None = None) -> bytes:
        """An opaque vector <min..max> with a `len_width`-byte length prefix."""
        data, pos = self.data, self.pos
        start = pos + len_width
        if start > self.end:
            raise decode_error("truncated")
        n = int.from_bytes(data[pos:start], "big")
        if n < min_len or (max_len is not None and n > max_len):
            raise decode_error(f"vector length {n} out of range")
        end = start + n
        if end > self.end:
            raise decode_error("truncated")
        self.pos = end
        return data[start:end]

    def sub(self, len_width: int, min_len: int = 0) -> Reader:
        """A Reader over the next length-prefixed vector; the parent skips past it."""
        n = self.uint(len_width)
        if n < min_len:
            raise decode_error(f"vector length {n} below {min_len}")
        start = self.pos
        end = start + n
        if end > self.end:
            raise decode_error("truncated")
        self.pos = end
        return Reader(self.data, start, end)

    def items(self, len_width: int, item: Callable[[Reader], T], min_len: int = 0) -> list[T]:
        """A length-prefixed list whose elements `item` reads one at a time."""
        r = self.sub(len_width, min_len)
        out = []
        while r.pos < r.end:
            out.append(item(r))
        return out

    def u16_list(self, len_width: int, min_len: int = 0) -> list[int]:
        raw = self.vec(len_width, min_len)
        if len(raw) % 2:
            raise decode_error("odd length in a list of 16-bit values")
        return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


class Writer:
    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def getvalue(self) -> bytes:
        return bytes(self.buf)

    def u8(self, v: int) -> None:
        self.buf.append(v)

    def u16(self, v: int) -> None:
        self.buf += v.to_bytes(2, "big")

    def u24(self, v: int) -> None:
        self.buf += v.to_bytes(3, "big")

    def u32(self, v: int) -> None:
        self.buf += v.to_bytes(4, "big")

    def raw(self, data: bytes) -> None:
        self.buf += data

    def vec(self, len_width: int, data: bytes) -> None:
        self.buf += len(data).to_bytes(len_width, "big")
        self.buf += data

    def u16_list(self, len_width: int, values: Iterable[int]) -> None:
        body = b"".join(v.to_bytes(2, "big") for v in values)
        self.vec(len_width, body)


def vec(len_width: int, data: bytes) -> bytes:
    return len(data).to_bytes(len_width, "big") + data
