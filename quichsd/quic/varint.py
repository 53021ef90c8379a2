"""QUIC variable-length integers (RFC 9000 §16).

The two most significant bits of the first byte give the length (1, 2, 4 or 8 bytes);
the rest, big-endian, is the value. Decoders accept any length (RFC 9000 §16: only frame
types must be minimal, which is the frame parser's business); encoders are minimal unless
a length is forced.
"""
from __future__ import annotations

__all__ = [
    "MAX_VARINT",
    "VarintError",
    "VarintTruncated",
    "decode_varint",
    "decode_varint_exact",
    "encode_varint",
    "encode_varint_fixed",
    "varint_size",
]

MAX_VARINT = (1 << 62) - 1


class VarintError(ValueError):
    """A value that cannot be encoded as a QUIC varint (in the requested length)."""


class VarintTruncated(VarintError):
    """The input ended inside a varint."""


def varint_size(value: int) -> int:
    """Length of the minimal encoding of `value`."""
    if value < 0x40:
        if value < 0:
            raise VarintError(f"negative varint {value}")
        return 1
    if value < 0x4000:
        return 2
    if value < 0x4000_0000:
        return 4
    if value <= MAX_VARINT:
        return 8
    raise VarintError(f"varint {value} exceeds 2^62-1")


_ONE_BYTE = tuple(bytes((v,)) for v in range(0x40))
_FLAG = {1: 0, 2: 0x4000, 4: 0x8000_0000, 8: 0xC000_0000_0000_0000}


def encode_varint(value: int) -> bytes:
    """Minimal encoding of `value` (on the send path of every frame: one branch per length,
    no helper calls)."""
    if value < 0x40:
        if value < 0:
            raise VarintError(f"negative varint {value}")
        return _ONE_BYTE[value]
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 0x4000_0000:
        return (value | 0x8000_0000).to_bytes(4, "big")
    if value <= MAX_VARINT:
        return (value | 0xC000_0000_0000_0000).to_bytes(8, "big")
    raise VarintError(f"varint {value} exceeds 2^62-1")


def encode_varint_fixed(value: int, length: int) -> bytes:
    """Encoding of `value` on exactly `length` bytes (1, 2, 4 or 8)."""
    flag = _FLAG.get(length)
    if flag is None:
        raise VarintError(f"varint length must be 1, 2, 4 or 8, not {length}")
    if value < 0 or value >= 1 << (8 * length - 2):
        raise VarintError(f"varint {value} does not fit in {length} bytes")
    return (value | flag).to_bytes(length, "big")


def decode_varint(data: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int]:
    """(value, position after it) of the varint starting at data[pos]."""
    try:
        first = data[pos]
    except IndexError:
        raise VarintTruncated(f"no varint at offset {pos}") from None
    length = 1 << (first >> 6)
    if length == 1:
        return first, pos + 1
    end = pos + length
    if end > len(data):
        raise VarintTruncated(f"{length}-byte varint at offset {pos} is truncated")
    value = int.from_bytes(data[pos:end], "big") & ((1 << (8 * length - 2)) - 1)
    return value, end


_VALUE_MASK = {1: 0x3F, 2: 0x3FFF, 4: 0x3FFF_FFFF, 8: 0x3FFF_FFFF_FFFF_FFFF}


def decode_varint_exact(data: bytes | bytearray) -> int | None:
    """The value of `data` if it is exactly one varint (no byte before or after), else
    None: one length check instead of decode_varint's position bookkeeping."""
    if not data or 1 << (data[0] >> 6) != len(data):
        return None
    return int.from_bytes(data, "big") & _VALUE_MASK[len(data)]
