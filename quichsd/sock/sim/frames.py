"""QUIC frames (RFC 9000 §19, RFC 9221 §4): one small frozen dataclass per frame, a table
from frame type to decoder built once at import, and `encode()` on every frame.

`parse_frames(payload)` returns the frames of one packet payload or raises QuicError
(FRAME_ENCODING_ERROR, with the offending frame type) on malformed input. Which frames a
packet type may carry (RFC 9000 §12.4, Table 3) is checked here too, by `check_allowed`.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from ...quic.errors import QuicError, QuicErrorCode
from ...quic.varint import VarintError, decode_varint, encode_varint

__all__ = [
    "FrameType",
    "Frame",
    "Padding",
    "Ping",
    "Ack",
    "ResetStream",
    "StopSending",
    "Crypto",
    "NewToken",
    "Stream",
    "MaxData",
    "MaxStreamData",
    "MaxStreams",
    "DataBlocked",
    "StreamDataBlocked",
    "StreamsBlocked",
    "NewConnectionId",
    "RetireConnectionId",
    "PathChallenge",
    "PathResponse",
    "ConnectionClose",
    "HandshakeDone",
    "Datagram",
    "parse_frames",
    "check_allowed",
    "crypto_header_size",
    "stream_header_size",
    "encode_crypto",
    "encode_stream",
]


class FrameType(IntEnum):
    PADDING = 0x00
    PING = 0x01
    ACK = 0x02
    ACK_ECN = 0x03
    RESET_STREAM = 0x04
    STOP_SENDING = 0x05
    CRYPTO = 0x06
    NEW_TOKEN = 0x07
    STREAM = 0x08  # 0x08..0x0f: OFF 0x04, LEN 0x02, FIN 0x01
    MAX_DATA = 0x10
    MAX_STREAM_DATA = 0x11
    MAX_STREAMS_BIDI = 0x12
    MAX_STREAMS_UNI = 0x13
    DATA_BLOCKED = 0x14
    STREAM_DATA_BLOCKED = 0x15
    STREAMS_BLOCKED_BIDI = 0x16
    STREAMS_BLOCKED_UNI = 0x17
    NEW_CONNECTION_ID = 0x18
    RETIRE_CONNECTION_ID = 0x19
    PATH_CHALLENGE = 0x1A
    PATH_RESPONSE = 0x1B
    CONNECTION_CLOSE = 0x1C
    CONNECTION_CLOSE_APP = 0x1D
    HANDSHAKE_DONE = 0x1E
    DATAGRAM = 0x30
    DATAGRAM_LEN = 0x31


_STREAM_OFF, _STREAM_LEN, _STREAM_FIN = 0x04, 0x02, 0x01
MAX_STREAMS_LIMIT = 1 << 60  # RFC 9000 §19.11


_v = encode_varint


# ---- frames -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Padding:
    length: int = 1
    ack_eliciting = False

    def encode(self) -> bytes:
        return bytes(self.length)


@dataclass(frozen=True, slots=True)
class Ping:
    ack_eliciting = True

    def encode(self) -> bytes:
        return b"\x01"


@dataclass(frozen=True, slots=True)
class Ack:
    """`ranges`: half-open [start, end) packet-number ranges, highest first."""

    ranges: tuple[tuple[int, int], ...]
    delay: int = 0  # already scaled by the sender's ack_delay_exponent
    ecn: tuple[int, int, int] | None = None
    ack_eliciting = False

    @property
    def largest(self) -> int:
        return self.ranges[0][1] - 1

    def encode(self) -> bytes:
        first_start, first_end = self.ranges[0]
        out = bytearray(b"\x03" if self.ecn else b"\x02")
        out += _v(first_end - 1)
        out += _v(self.delay)
        out += _v(len(self.ranges) - 1)
        out += _v(first_end - 1 - first_start)
        smallest = first_start
        for start, end in self.ranges[1:]:
            out += _v(smallest - end - 1)  # gap: unacked packets between ranges, minus one
            out += _v(end - 1 - start)
            smallest = start
        if self.ecn:
            for count in self.ecn:
                out += _v(count)
        return bytes(out)


@dataclass(frozen=True, slots=True)
class ResetStream:
    stream_id: int
    error_code: int
    final_size: int
    ack_eliciting = True

    def encode(self) -> bytes:
        return b"\x04" + _v(self.stream_id) + _v(self.error_code) + _v(self.final_size)


@dataclass(frozen=True, slots=True)
class StopSending:
    stream_id: int
    error_code: int
    ack_eliciting = True

    def encode(self) -> bytes:
        return b"\x05" + _v(self.stream_id) + _v(self.error_code)


@dataclass(frozen=True, slots=True)
class Crypto:
    offset: int
    data: bytes
    ack_eliciting = True

    def encode(self) -> bytes:
        return encode_crypto(self.offset, self.data)


@dataclass(frozen=True, slots=True)
class NewToken:
    token: bytes
    ack_eliciting = True

    def encode(self) -> bytes:
        return b"\x07" + _v(len(self.token)) + self.token


@dataclass(frozen=True, slots=True)
class Stream:
    stream_id: int
    offset: int
    data: bytes
    fin: bool = False
    ack_eliciting = True

    def encode(self) -> bytes:
        return encode_stream(self.stream_id, self.offset, self.data, self.fin)


@dataclass(frozen=True, slots=True)
class MaxData:
    maximum: int
    ack_eliciting = True

    def encode(self) -> bytes:
        return b"\x10" + _v(self.maximum)


@dataclass(frozen=True, slots=True)
class MaxStreamData:
    stream_id: int
    maximum: int
    ack_eliciting = True

    def encode(self) -> bytes:
        return b"\x11" + _v(self.stream_id) + _v(self.maximum)


@dataclass(frozen=True, slots=True)
class MaxStreams:
    uni: bool
    maximum: int
    ack_eliciting = True

    def encode(self) -> bytes:
        return (b"\x13" if self.uni else b"\x12") + _v(self.maximum)


@dataclass(frozen=True, slots=True)
class DataBlocked:
    limit: int
    ack_eliciting = True

    def encode(self) -> bytes:
        return b"\x14" + _v(self.limit)


@dataclass(frozen=True, slots=True)
class StreamDataBlocked:
    stream_id: int
    limit: int
    ack_eliciting = True

    def encode(self) -> bytes:
        return b"\x15" + _v(self.stream_id) + _v(self.limit)


@dataclass(frozen=True, slots=True)
class StreamsBlocked:
    uni: bool
    limit: int
    ack_eliciting = True

    def encode(self) -> bytes:
        return (b"\x17" if self.uni else b"\x16") + _v(self.limit)


@dataclass(frozen=True, slots=True)
class NewConnectionId:
    sequence: int
    retire_prior_to: int
    cid: bytes
    reset_token: bytes
    ack_eliciting = True

    def encode(self) -> bytes:
        return (b"\x18" + _v(self.sequence) + _v(self.retire_prior_to) + bytes((len(self.cid),))
                + self.cid + self.reset_token)


@dataclass(frozen=True, slots=True)
class RetireConnectionId:
    sequence: int
    ack_eliciting = True

    def encode(self) -> bytes:
        return b"\x19" + _v(self.sequence)


@dataclass(frozen=True, slots=True)
class PathChallenge:
    data: bytes
    ack_eliciting = True

    def encode(self) -> bytes:
        return b"\x1a" + self.data


@dataclass(frozen=True, slots=True)
class PathResponse:
    data: bytes
    ack_eliciting = True

    def encode(self) -> bytes:
        return b"\x1b" + self.data


@dataclass(frozen=True, slots=True)
class ConnectionClose:
    """0x1c (transport: carries the offending frame type) or 0x1d (application)."""

    error_code: int
    frame_type: int = 0
    reason: bytes = b""
    app: bool = False
    ack_eliciting = False

    def encode(self) -> bytes:
        if self.app:
            return b"\x1d" + _v(self.error_code) + _v(len(self.reason)) + self.reason
        return (b"\x1c" + _v(self.error_code) + _v(self.frame_type) + _v(len(self.reason))
                + self.reason)


@dataclass(frozen=True, slots=True)
class HandshakeDone:
    ack_eliciting = True

    def encode(self) -> bytes:
        return b"\x1e"


@dataclass(frozen=True, slots=True)
class Datagram:
    data: bytes
    ack_eliciting = True

    def encode(self) -> bytes:
        return b"\x31" + _v(len(self.data)) + self.data


Frame = (Padding | Ping | Ack | ResetStream | StopSending | Crypto | NewToken | Stream | MaxData
         | MaxStreamData | MaxStreams | DataBlocked | StreamDataBlocked | StreamsBlocked
         | NewConnectionId | RetireConnectionId | PathChallenge | PathResponse | ConnectionClose
         | HandshakeDone | Datagram)


# ---- encoders used on the hot path (no frame object) ---------------------------------------


def crypto_header_size(offset: int, length: int) -> int:
    return 1 + len(_v(offset)) + len(_v(length))


def encode_crypto(offset: int, data: bytes) -> bytes:
    return b"\x06" + _v(offset) + _v(len(data)) + data


def stream_header_size(stream_id: int, offset: int, length: int) -> int:
    return 1 + len(_v(stream_id)) + (len(_v(offset)) if offset else 0) + len(_v(length))


def encode_stream(stream_id: int, offset: int, data: bytes, fin: bool) -> bytes:
    """Always with an explicit length, so the frame may be followed by others."""
    ftype = 0x08 | _STREAM_LEN | (_STREAM_OFF if offset else 0) | (_STREAM_FIN if fin else 0)
    head = bytes((ftype,)) + _v(stream_id) + (_v(offset) if offset else b"") + _v(len(data))
    return head + data


# ---- decoding ----------------------------------------------------------------------------


class _Reader:
    """A cursor over one payload; every read checks the bounds."""

    __slots__ = ("buf", "pos", "ftype")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0
        self.ftype = 0

    def fail(self, why: str) -> QuicError:
        return QuicError(QuicErrorCode.FRAME_ENCODING_ERROR, why, frame_type=self.ftype)

    def varint(self) -> int:
        try:
            value, self.pos = decode_varint(self.buf, self.pos)
        except VarintError:
            raise self.fail(f"truncated frame 0x{self.ftype:x}") from None
        return value

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.buf):
            raise self.fail(f"frame 0x{self.ftype:x} runs past the packet")
        data = self.buf[self.pos:end]
        self.pos = end
        return data


_NON_ZERO = re.compile(b"[^\x00]")


def _padding(r: _Reader) -> Padding:
    # A padded Initial has ~1000 PADDING bytes: find the run's end in C, not byte by byte.
    start = r.pos - 1
    found = _NON_ZERO.search(r.buf, r.pos)
    r.pos = found.start() if found is not None else len(r.buf)
    return Padding(r.pos - start)


def _ping(r: _Reader) -> Ping:
    return Ping()


def _ack(r: _Reader) -> Ack:
    largest = r.varint()
    delay = r.varint()
    count = r.varint()
    first = r.varint()
    if first > largest:
        raise r.fail("ACK range below packet number 0")
    smallest = largest - first
    ranges = [(smallest, largest + 1)]
    for _ in range(count):
        gap = r.varint()
        length = r.varint()
        end = smallest - gap - 1  # exclusive end of the next (lower) range
        start = end - 1 - length
        if start < 0:
            raise r.fail("ACK range below packet number 0")
        ranges.append((start, end))
        smallest = start
    ecn = None
    if r.ftype == FrameType.ACK_ECN:
        ecn = (r.varint(), r.varint(), r.varint())
    return Ack(tuple(ranges), delay, ecn)


def _reset_stream(r: _Reader) -> ResetStream:
    return ResetStream(r.varint(), r.varint(), r.varint())


def _stop_sending(r: _Reader) -> StopSending:
    return StopSending(r.varint(), r.varint())


def _crypto(r: _Reader) -> Crypto:
    offset = r.varint()
    length = r.varint()
    if offset + length >= 1 << 62:
        raise r.fail("CRYPTO data beyond 2^62")
    return Crypto(offset, r.take(length))


def _new_token(r: _Reader) -> NewToken:
    length = r.varint()
    if length == 0:
        raise r.fail("empty NEW_TOKEN")
    return NewToken(r.take(length))


def _stream(r: _Reader) -> Stream:
    ftype = r.ftype
    stream_id = r.varint()
    offset = r.varint() if ftype & _STREAM_OFF else 0
    data = r.take(r.varint()) if ftype & _STREAM_LEN else r.take(len(r.buf) - r.pos)
    if offset + len(data) >= 1 << 62:
        raise r.fail("STREAM data beyond 2^62")
    return Stream(stream_id, offset, data, bool(ftype & _STREAM_FIN))


def _max_data(r: _Reader) -> MaxData:
    return MaxData(r.varint())


def _max_stream_data(r: _Reader) -> MaxStreamData:
    return MaxStreamData(r.varint(), r.varint())


def _max_streams(r: _Reader) -> MaxStreams:
    value = r.varint()
    if value > MAX_STREAMS_LIMIT:
        raise r.fail("MAX_STREAMS over 2^60")
    return MaxStreams(r.ftype == FrameType.MAX_STREAMS_UNI, value)


def _data_blocked(r: _Reader) -> DataBlocked:
    return DataBlocked(r.varint())


def _stream_data_blocked(r: _Reader) -> StreamDataBlocked:
    return StreamDataBlocked(r.varint(), r.varint())


def _streams_blocked(r: _Reader) -> StreamsBlocked:
    value = r.varint()
    if value > MAX_STREAMS_LIMIT:
        raise r.fail("STREAMS_BLOCKED over 2^60")
    return StreamsBlocked(r.ftype == FrameType.STREAMS_BLOCKED_UNI, value)


def _new_connection_id(r: _Reader) -> NewConnectionId:
    sequence = r.varint()
    retire = r.varint()
    length = r.take(1)[0]
    if not 1 <= length <= 20:
        raise r.fail(f"NEW_CONNECTION_ID with a {length}-byte CID")
    cid = r.take(length)
    token = r.take(16)
    if retire > sequence:
        raise r.fail("NEW_CONNECTION_ID retires beyond its own sequence number")
    return NewConnectionId(sequence, retire, cid, token)


def _retire_connection_id(r: _Reader) -> RetireConnectionId:
    return RetireConnectionId(r.varint())


def _path_challenge(r: _Reader) -> PathChallenge:
    return PathChallenge(r.take(8))


def _path_response(r: _Reader) -> PathResponse:
    return PathResponse(r.take(8))


def _connection_close(r: _Reader) -> ConnectionClose:
    app = r.ftype == FrameType.CONNECTION_CLOSE_APP
    code = r.varint()
    frame_type = 0 if app else r.varint()
    reason = r.take(r.varint())
    return ConnectionClose(code, frame_type, reason, app)


def _handshake_done(r: _Reader) -> HandshakeDone:
    return HandshakeDone()


def _datagram(r: _Reader) -> Datagram:
    if r.ftype == FrameType.DATAGRAM_LEN:
        return Datagram(r.take(r.varint()))
    return Datagram(r.take(len(r.buf) - r.pos))


_DECODERS: dict[int, Callable[[_Reader], Frame]] = {
    0x00: _padding,
    0x01: _ping,
    0x02: _ack,
    0x03: _ack,
    0x04: _reset_stream,
    0x05: _stop_sending,
    0x06: _crypto,
    0x07: _new_token,
    **{t: _stream for t in range(0x08, 0x10)},
    0x10: _max_data,
    0x11: _max_stream_data,
    0x12: _max_streams,
    0x13: _max_streams,
    0x14: _data_blocked,
    0x15: _stream_data_blocked,
    0x16: _streams_blocked,
    0x17: _streams_blocked,
    0x18: _new_connection_id,
    0x19: _retire_connection_id,
    0x1A: _path_challenge,
    0x1B: _path_response,
    0x1C: _connection_close,
    0x1D: _connection_close,
    0x1E: _handshake_done,
    0x30: _datagram,
    0x31: _datagram,
}


def parse_frames(payload: bytes) -> list[tuple[int, Frame]]:
    """(frame type, frame) for every frame of a packet payload, in order."""
    if not payload:
        # RFC 9000 §12.4: a packet without frames is a PROTOCOL_VIOLATION.
        raise QuicError(QuicErrorCode.PROTOCOL_VIOLATION, "packet without frames")
    r = _Reader(payload)
    out: list[tuple[int, Frame]] = []
    n = len(payload)
    while r.pos < n:
        r.ftype = 0
        ftype = r.varint()
        r.ftype = ftype
        decoder = _DECODERS.get(ftype)
        if decoder is None:
            raise r.fail(f"unknown frame type 0x{ftype:x}")
        out.append((ftype, decoder(r)))
    return out


# ---- where each frame may appear (RFC 9000 §12.4 Table 3) -----------------------------------

# Initial and Handshake packets: PADDING, PING, ACK, CRYPTO, CONNECTION_CLOSE (0x1c).
_HANDSHAKE_FRAMES = frozenset({0x00, 0x01, 0x02, 0x03, 0x06, 0x1C})
# 0-RTT packets: everything but ACK, CRYPTO, NEW_TOKEN, RETIRE_CONNECTION_ID, PATH_RESPONSE,
# HANDSHAKE_DONE.
_NOT_IN_0RTT = frozenset({0x02, 0x03, 0x06, 0x07, 0x19, 0x1B, 0x1E})


def check_allowed(ftype: int, packet_kind: str) -> None:
    """packet_kind: "initial", "handshake", "0rtt" or "1rtt"."""
    if packet_kind in ("initial", "handshake"):
        ok = ftype in _HANDSHAKE_FRAMES
    elif packet_kind == "0rtt":
        ok = ftype not in _NOT_IN_0RTT
    else:
        ok = True
    if not ok:
        raise QuicError(QuicErrorCode.PROTOCOL_VIOLATION,
                        f"frame 0x{ftype:x} in a {packet_kind} packet", frame_type=ftype)
