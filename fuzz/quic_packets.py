"""Target quic_packets: QUIC packet headers, header and packet protection, packet numbers,
varints and the listener's ClientHello peek (RFC 9000 §16, §17; RFC 9001 §5; RFC 9369):
quichsd/sock/sim/packets.py, listener_peek.py, quichsd/quic/packet_protection.py,
packet_number.py and varint.py.

Input: the first byte picks the check, the rest is its bytes:
    0  a datagram as it arrives: every coalesced packet's header (parse_header, with a
       short-header CID length from the next byte), each long one unprotected with the
       Initial keys of its DCID; the listener's peeks (parse_initial_header, packet_dcid,
       peek_client_hello_alpn)
    1  a packet built from the bytes (version, type, CIDs, token, packet number, payload),
       protected, then parsed and unprotected again as a receiver does; its payload then
       goes through parse_frames and the listener's client_hello_alpn
    2  varints: decode_varint at every offset, against encode_varint and the exact decoder
    3  packet number recovery (RFC 9000 App. A.3) against truncation (App. A.2)

A bug is: an exception other than PacketError, UnprotectError, VarintError, QuicError
(frames) or ClientHelloRejected (listener); a header that claims bytes past the datagram
or makes no progress; a protected packet that does not come back as it was built (first
byte, CIDs, token, packet number, payload); a varint or packet number that does not round
trip.
"""
from __future__ import annotations

import contextlib

from quichsd.quic.errors import QuicError
from quichsd.quic.packet_number import decode_packet_number, encode_packet_number
from quichsd.quic.packet_protection import UnprotectError, initial_keys
from quichsd.quic.varint import (
    MAX_VARINT,
    VarintError,
    decode_varint,
    decode_varint_exact,
    encode_varint,
    encode_varint_fixed,
)
from quichsd.quic.versions import QUIC_V1, QUIC_V2, SUPPORTED_VERSIONS, LongPacketType
from quichsd.sock.sim.frames import check_allowed, parse_frames
from quichsd.sock.sim.listener_peek import (
    ClientHelloRejected,
    client_hello_alpn,
    packet_dcid,
    parse_initial_header,
    peek_client_hello_alpn,
)
from quichsd.sock.sim.packets import (
    PacketError,
    build_long_packet,
    build_short_packet,
    parse_header,
    unprotect_packet,
)

_VERSIONS = (QUIC_V1, QUIC_V2)
_LONG_TYPES = (LongPacketType.INITIAL, LongPacketType.ZERO_RTT, LongPacketType.HANDSHAKE)
MAX_PAYLOAD = 1500  # the builder writes a 2-byte Length: our own packets stay far below 16383


def _datagram(data: bytes) -> None:
    if not data:
        return
    short_cid_len = data[0] % 21
    datagram = data[1:]
    pos, n = 0, len(datagram)
    while pos < n:
        try:
            header = parse_header(datagram, pos, short_cid_len)
        except PacketError:
            break
        assert header.start == pos and pos < header.end <= n, header
        assert header.pn_offset <= header.end, header
        protected = header.packet_type is not None and header.packet_type is not LongPacketType.RETRY
        if header.is_long and protected:
            version = SUPPORTED_VERSIONS[header.version]
            for key in initial_keys(header.dcid, version):
                with contextlib.suppress(UnprotectError):
                    unprotect_packet(key, datagram, header, -1)
        pos = header.end
    parse_initial_header(datagram)
    packet_dcid(datagram, short_cid_len)
    with contextlib.suppress(ClientHelloRejected):
        peek_client_hello_alpn(datagram)


class _Bytes:
    """A cursor handing out fields of the fuzzer's bytes (zeros once they run out)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out.ljust(n, b"\0")

    def byte(self) -> int:
        return self.take(1)[0]

    def rest(self) -> bytes:
        return self.data[self.pos:]


def _built_packet(data: bytes) -> None:
    b = _Bytes(data)
    shape = b.byte()
    version = _VERSIONS[shape & 1]
    short = bool(shape & 2)
    ptype = _LONG_TYPES[(shape >> 2) % 3]
    dcid = b.take(b.byte() % 21)
    scid = b.take(b.byte() % 21)
    token = b.take(b.byte() % 64) if ptype is LongPacketType.INITIAL else None
    largest_acked = int.from_bytes(b.take(4), "big") if shape & 0x20 else None
    pn = (-1 if largest_acked is None else largest_acked) + 1 + (b.byte() % 200)
    payload = b.rest()[:MAX_PAYLOAD]
    key, _ = initial_keys(dcid, version)
    if short:
        packet = build_short_packet(key, dcid, pn, largest_acked, payload)
    else:
        packet = build_long_packet(key, version, ptype, dcid, scid, token, pn, largest_acked, payload)
    header = parse_header(packet, 0, len(dcid))
    assert header.end == len(packet) and header.dcid == dcid, header
    if not short:
        assert (header.version, header.packet_type, header.scid) == (version.number, ptype, scid), header
        assert header.token == (token or b""), header
    first, got_pn, got_payload = unprotect_packet(key, packet, header, pn - 1)
    assert got_pn == pn, (got_pn, pn)
    assert got_payload[:len(payload)] == payload and not any(got_payload[len(payload):]), "payload changed"
    assert first & 0x03 == len(encode_packet_number(pn, largest_acked)) - 1, hex(first)
    kind = "1rtt" if short else {LongPacketType.INITIAL: "initial", LongPacketType.ZERO_RTT: "0rtt",
                                 LongPacketType.HANDSHAKE: "handshake"}[ptype]
    try:
        for ftype, _frame in parse_frames(got_payload):
            check_allowed(ftype, kind)
    except QuicError:
        pass
    try:
        client_hello_alpn(got_payload)
        if not short and ptype is LongPacketType.INITIAL:
            peek_client_hello_alpn(packet)
    except ClientHelloRejected:
        pass


def _varints(data: bytes) -> None:
    for pos in range(len(data)):
        try:
            value, end = decode_varint(data, pos)
        except VarintError:
            assert pos + (1 << (data[pos] >> 6)) > len(data), (data.hex(), pos)
            continue
        assert 0 <= value <= MAX_VARINT and end == pos + (1 << (data[pos] >> 6)), (value, end)
        assert decode_varint_exact(data[pos:end]) == value
        assert encode_varint_fixed(value, end - pos) == data[pos:end]
        minimal = encode_varint(value)
        assert len(minimal) <= end - pos and decode_varint(minimal) == (value, len(minimal))


def _packet_numbers(data: bytes) -> None:
    b = _Bytes(data)
    largest_acked = int.from_bytes(b.take(8), "big") % (1 << 62) if b.byte() & 1 else None
    pn = (-1 if largest_acked is None else largest_acked) + 1 + int.from_bytes(b.take(4), "big") % (1 << 31)
    if pn >= 1 << 62:
        return
    truncated = encode_packet_number(pn, largest_acked)
    # The receiver's largest may be anything from the sender's largest acked to pn - 1.
    base = -1 if largest_acked is None else largest_acked
    largest = base + int.from_bytes(b.take(4), "big") % (pn - base)
    got = decode_packet_number(largest, int.from_bytes(truncated, "big"), 8 * len(truncated))
    assert got == pn, (pn, largest_acked, largest, truncated.hex(), got)


CHECKS = (_datagram, _built_packet, _varints, _packet_numbers)


def one_input(data: bytes) -> None:
    if data:
        CHECKS[data[0] % len(CHECKS)](data[1:])
