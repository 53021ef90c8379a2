"""Packet headers (RFC 9000 §17): parse one packet of a (possibly coalesced) datagram, and
build protected long and short header packets.

Parsing stops at what header protection hides (the packet number): `unprotect_packet`
finishes the job with the level's PacketKey. Long header packets carry a 2-byte Length
field on output, so a packet can be built before the datagram around it is known.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...quic.packet_number import encode_packet_number
from ...quic.packet_protection import (
    TAG_LEN,
    PacketKey,
    UnprotectError,
    retry_integrity_tag,
    verify_retry_integrity,
)
from ...quic.varint import VarintError, decode_varint, encode_varint, encode_varint_fixed
from ...quic.versions import SUPPORTED_VERSIONS, LongPacketType, QuicVersion

__all__ = [
    "LongPacketType",
    "PacketHeader",
    "PacketError",
    "parse_header",
    "unprotect_packet",
    "build_long_packet",
    "build_short_packet",
    "long_packet_overhead",
    "short_packet_overhead",
    "MIN_INITIAL_DATAGRAM",
    "MAX_CID_LEN",
]

MIN_INITIAL_DATAGRAM = 1200  # RFC 9000 §14.1
MAX_CID_LEN = 20  # RFC 9000 §17.2 (v1 and v2)
_LENGTH_FIELD = 2  # bytes of the Length varint we write (up to 16383)


class PacketError(Exception):
    """A header that cannot be parsed: the rest of the datagram is dropped (§12.2)."""


@dataclass(slots=True)
class PacketHeader:
    start: int  # offset of the first byte in the datagram
    end: int  # offset just after the packet
    pn_offset: int  # offset of the packet number (absolute)
    is_long: bool
    version: int = 0  # 0 for short headers and Version Negotiation
    packet_type: LongPacketType | None = None  # None for short headers and unknown versions
    dcid: bytes = b""
    scid: bytes = b""
    token: bytes = b""

    @property
    def supported(self) -> bool:
        return not self.is_long or self.version in SUPPORTED_VERSIONS


def parse_header(data: bytes, pos: int, short_cid_len: int) -> PacketHeader:
    """The header of the packet at data[pos:], up to (not including) the packet number."""
    n = len(data)
    if pos >= n:
        raise PacketError("empty packet")
    first = data[pos]
    if not first & 0x80:
        dcid_end = pos + 1 + short_cid_len
        if dcid_end > n:
            raise PacketError("short header shorter than its connection ID")
        return PacketHeader(pos, n, dcid_end, False, dcid=data[pos + 1:dcid_end])
    if pos + 7 > n:
        raise PacketError("truncated long header")
    version = int.from_bytes(data[pos + 1:pos + 5], "big")
    p = pos + 5
    dcid_len = data[p]
    dcid = data[p + 1:p + 1 + dcid_len]
    p += 1 + dcid_len
    if p >= n or len(dcid) != dcid_len:
        raise PacketError("truncated destination connection ID")
    scid_len = data[p]
    scid = data[p + 1:p + 1 + scid_len]
    p += 1 + scid_len
    if len(scid) != scid_len:
        raise PacketError("truncated source connection ID")
    header = PacketHeader(pos, n, n, True, version, None, dcid, scid)
    descriptor = SUPPORTED_VERSIONS.get(version)
    if descriptor is None:  # Version Negotiation (0) or a version we do not speak
        return header
    if dcid_len > MAX_CID_LEN or scid_len > MAX_CID_LEN:
        raise PacketError("connection ID over 20 bytes")
    ptype = descriptor.long_packet_type(first)
    header.packet_type = ptype
    if ptype is LongPacketType.RETRY:
        return header
    try:
        if ptype is LongPacketType.INITIAL:
            token_len, p = decode_varint(data, p)
            header.token = data[p:p + token_len]
            p += token_len
        length, p = decode_varint(data, p)
    except VarintError:
        raise PacketError("truncated long header") from None
    if p + length > n or p > n:
        raise PacketError("Length field runs past the datagram")
    header.pn_offset = p
    header.end = p + length
    return header


def unprotect_packet(key: PacketKey, data: bytes, header: PacketHeader,
                     largest_pn: int) -> tuple[int, int, bytes]:
    """(first byte in clear, packet number, payload); raises UnprotectError."""
    packet = data[header.start:header.end]
    clear_header, payload, pn = key.unprotect(packet, header.pn_offset - header.start, largest_pn)
    return clear_header[0], pn, payload


def long_packet_overhead(dcid: bytes, scid: bytes, token: bytes | None, pn_len: int) -> int:
    """Bytes a long header packet adds around its payload (header, Length, pn, tag)."""
    size = 7 + len(dcid) + len(scid) + _LENGTH_FIELD + pn_len + TAG_LEN
    if token is not None:
        size += len(encode_varint(len(token))) + len(token)
    return size


def short_packet_overhead(dcid: bytes, pn_len: int) -> int:
    return 1 + len(dcid) + pn_len + TAG_LEN


def _pad_for_sample(payload: bytes, pn_len: int) -> bytes:
    # RFC 9001 §5.4.2: packet number + payload must give the sample 4 bytes of lead.
    short = 4 - pn_len - len(payload)
    return payload + bytes(short) if short > 0 else payload


def build_long_packet(key: PacketKey, version: QuicVersion, ptype: LongPacketType, dcid: bytes,
                      scid: bytes, token: bytes | None, pn: int, largest_acked: int | None,
                      payload: bytes, header_bits: int = 0, pn_len: int | None = None,
                      fixed: bool = True) -> bytes:
    """A protected Initial / 0-RTT / Handshake packet. `token` only for Initial.
    `header_bits`, `pn_len`: what a SendRewriter asked for (rewrite.py). `fixed`: the QUIC
    bit, cleared only towards a peer that advertised grease_quic_bit (RFC 9287)."""
    pn_bytes = _pn_bytes(pn, largest_acked, pn_len)
    pn_len = len(pn_bytes)
    payload = _pad_for_sample(payload, pn_len)
    first = (0xC0 if fixed else 0x80) | (version.long_type_bits(ptype) << 4) | (pn_len - 1) | header_bits
    head = bytearray((first,))
    head += version.number.to_bytes(4, "big")
    head.append(len(dcid))
    head += dcid
    head.append(len(scid))
    head += scid
    if ptype is LongPacketType.INITIAL:
        tok = token or b""
        head += encode_varint(len(tok))
        head += tok
    head += encode_varint_fixed(pn_len + len(payload) + TAG_LEN, _LENGTH_FIELD)
    head += pn_bytes
    return key.protect(bytes(head), payload, pn)


def build_short_packet(key: PacketKey, dcid: bytes, pn: int, largest_acked: int | None,
                       payload: bytes, key_phase: int = 0, header_bits: int = 0,
                       pn_len: int | None = None, fixed: bool = True) -> bytes:
    pn_bytes = _pn_bytes(pn, largest_acked, pn_len)
    pn_len = len(pn_bytes)
    payload = _pad_for_sample(payload, pn_len)
    first = (0x40 if fixed else 0) | (0x04 if key_phase else 0) | (pn_len - 1) | header_bits
    return key.protect(bytes((first,)) + dcid + pn_bytes, payload, pn)


def _pn_bytes(pn: int, largest_acked: int | None, length: int | None) -> bytes:
    if length is None:
        return encode_packet_number(pn, largest_acked)
    return (pn & ((1 << (8 * length)) - 1)).to_bytes(length, "big")


def pn_length(pn: int, largest_acked: int | None) -> int:
    """len(encode_packet_number(pn, largest_acked)), without building the bytes."""
    in_flight = pn - (-1 if largest_acked is None else largest_acked)
    length = ((in_flight - 1).bit_length() + 8) >> 3
    if in_flight < 1 or length > 4:
        return len(encode_packet_number(pn, largest_acked))  # raises ValueError
    return length


def build_retry(version: QuicVersion, dcid: bytes, scid: bytes, token: bytes, odcid: bytes) -> bytes:
    """A Retry packet (RFC 9000 §17.2.5; RFC 9369 §3.2 for v2's type bits) ending in its
    integrity tag (RFC 9001 §5.8) over the client's original DCID."""
    first = 0xC0 | (version.long_type_bits(LongPacketType.RETRY) << 4)
    body = (bytes((first,)) + version.number.to_bytes(4, "big") + bytes((len(dcid),)) + dcid
            + bytes((len(scid),)) + scid + token)
    return body + retry_integrity_tag(version, odcid, body)


def retry_token(data: bytes, header: PacketHeader) -> bytes:
    """The Retry Token field of a Retry packet parsed by parse_header (b"" if none)."""
    start = header.start + 7 + len(header.dcid) + len(header.scid)
    return data[start:len(data) - TAG_LEN]


def retry_is_authentic(data: bytes, header: PacketHeader, version: QuicVersion, odcid: bytes) -> bool:
    return verify_retry_integrity(version, odcid, data[header.start:])


def grease_version(rand: int) -> int:
    """A reserved version of the form 0x?a?a?a?a (RFC 9000 §15), from 32 random bits: a
    Version Negotiation lists one so clients learn to ignore versions they do not know
    (§6.3)."""
    return (rand & 0xF0F0F0F0) | 0x0A0A0A0A


def build_version_negotiation(dcid: bytes, scid: bytes, versions: tuple[int, ...], unused: int) -> bytes:
    """A Version Negotiation packet (RFC 9000 §17.2.1): version 0, the client's SCID as its
    DCID and the client's DCID as its SCID, then our versions. `unused`: the 7 bits after
    the header form bit (any value; §17.2.1 asks for them to be random)."""
    head = bytes((0x80 | (unused & 0x7F),)) + bytes(4) + bytes((len(dcid),)) + dcid
    head += bytes((len(scid),)) + scid
    return head + b"".join(v.to_bytes(4, "big") for v in versions)


def version_negotiation_versions(data: bytes, header: PacketHeader) -> tuple[int, ...]:
    """The Supported Version list of a Version Negotiation packet parsed by parse_header;
    PacketError if it is empty or not a whole number of versions (§17.2.1)."""
    start = header.start + 7 + len(header.dcid) + len(header.scid)
    body = data[start:]
    if not body or len(body) % 4:
        raise PacketError("Version Negotiation without a whole list of versions")
    return tuple(int.from_bytes(body[i:i + 4], "big") for i in range(0, len(body), 4))


__all__ += ["pn_length", "UnprotectError", "build_retry", "retry_token", "retry_is_authentic",
            "grease_version", "build_version_negotiation", "version_negotiation_versions"]
