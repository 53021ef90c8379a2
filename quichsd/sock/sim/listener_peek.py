"""What a listener reads from a datagram before any connection exists (spec §1.1, §2.7):
the first packet's header, and the ALPN list of the ClientHello it carries.

Like the kernel, the ALPN peek decrypts the first Initial with the keys derived from its
DCID, looks at the first non-PADDING frame, and parses just enough of the ClientHello.
"""
from __future__ import annotations

from typing import NamedTuple

from ...quic.packet_protection import PacketKey, UnprotectError, initial_keys
from ...quic.varint import VarintError, decode_varint
from ...quic.versions import SUPPORTED_VERSIONS, LongPacketType
from .packets import MIN_INITIAL_DATAGRAM, PacketError, PacketHeader, parse_header, unprotect_packet

__all__ = [
    "ClientHelloRejected",
    "OpenedInitial",
    "client_initial_header",
    "open_client_initial",
    "client_hello_alpn",
    "parse_initial_header",
    "peek_client_hello_alpn",
    "packet_dcid",
]

ALPN_MAX_LEN = 128  # QUIC_ALPN_MAX_LEN
_HELLO_FIXED = 2 + 32  # legacy_version + random
_EXT_ALPN = 16
_MAX_EXTENSIONS = 128


class ClientHelloRejected(ValueError):
    """The kernel drops this Initial: undecryptable, not a ClientHello, a non-empty
    legacy_session_id (middlebox compatibility mode) or a malformed ALPN extension."""


class OpenedInitial(NamedTuple):
    """The client's first Initial, unprotected once by the listener: the new connection
    takes it as it is instead of decrypting the packet again."""

    header: PacketHeader
    key: PacketKey  # the client Initial key that opened it
    first: int  # first byte, header protection removed
    packet_number: int
    payload: bytes


def _first_initial(datagram: bytes) -> PacketHeader | None:
    try:
        header = parse_header(datagram, 0, 0)
    except PacketError:
        return None
    if not header.is_long or header.packet_type is not LongPacketType.INITIAL:
        return None
    return header


def client_initial_header(datagram: bytes) -> PacketHeader | None:
    """The header of the datagram's first packet if it is a client Initial of a version
    we speak, in a datagram of at least 1200 bytes (RFC 9000 §14.1); else None."""
    if len(datagram) < MIN_INITIAL_DATAGRAM:
        return None
    header = _first_initial(datagram)
    if header is None or len(header.dcid) < 8:  # RFC 9000 §7.2: a client's first DCID >= 8
        return None
    return header


def parse_initial_header(datagram: bytes) -> tuple[int, bytes, bytes, bytes] | None:
    """(version, dcid, scid, token) of client_initial_header(datagram), or None."""
    header = client_initial_header(datagram)
    if header is None:
        return None
    return header.version, header.dcid, header.scid, header.token


def packet_dcid(datagram: bytes, short_cid_len: int = 8) -> bytes | None:
    """The Destination Connection ID of the datagram's first packet, any type (for demux)."""
    if datagram and not datagram[0] & 0x80:  # short header: parse_header's answer, inline
        return datagram[1:1 + short_cid_len] if len(datagram) > short_cid_len else None
    try:
        return parse_header(datagram, 0, short_cid_len).dcid
    except PacketError:
        return None


def open_client_initial(datagram: bytes, header: PacketHeader, client_key: PacketKey) -> OpenedInitial:
    """Unprotect the first packet (its `header` parsed already) with the client Initial
    key of its DCID and version. Raises ClientHelloRejected if it does not decrypt."""
    try:
        first, pn, payload = unprotect_packet(client_key, datagram, header, -1)
    except UnprotectError as exc:
        raise ClientHelloRejected(f"Initial does not decrypt: {exc}") from None
    return OpenedInitial(header, client_key, first, pn, payload)


def peek_client_hello_alpn(datagram: bytes,
                           keys: tuple[PacketKey, PacketKey] | None = None) -> list[bytes] | None:
    """client_hello_alpn() of the datagram's first packet, a client Initial. Raises
    ClientHelloRejected when the kernel drops the packet. `keys`: the Initial keys of
    the packet's DCID and version, if the caller has them already."""
    header = _first_initial(datagram)
    if header is None:
        raise ClientHelloRejected("not an Initial packet of a supported version")
    client_key, _ = keys or initial_keys(header.dcid, SUPPORTED_VERSIONS[header.version])
    return client_hello_alpn(open_client_initial(datagram, header, client_key).payload)


def client_hello_alpn(payload: bytes) -> list[bytes] | None:
    """The ClientHello's ALPN protocols, from the first Initial's `payload`: a list
    (empty if it has no ALPN extension), or None when the packet does not start with the
    hello (first frame not CRYPTO at offset 0) or the hello is truncated in this packet
    before the ALPN extension. Raises ClientHelloRejected when the kernel drops the packet."""
    pos = 0
    while pos < len(payload) and payload[pos] == 0:
        pos += 1
    # spec §2.7: the ALPN is read only from a CRYPTO frame at offset 0 that is the first
    # non-PADDING frame. Anything else (picoquic puts a PING first, a later packet of a
    # split hello starts past offset 0) gives no ALPN and the packet goes to any listener,
    # as the kernel's quic_packet_get_alpn() returns 0 with no ALPN data: not a drop.
    if pos >= len(payload) or payload[pos] != 0x06:
        return None
    try:
        offset, pos = decode_varint(payload, pos + 1)
        length, pos = decode_varint(payload, pos)
    except VarintError:
        return None
    if offset != 0 or pos + length > len(payload):
        return None
    return _hello_alpn(payload[pos:pos + length])


def _hello_alpn(msg: bytes) -> list[bytes] | None:
    if len(msg) < 4 or msg[0] != 1:
        raise ClientHelloRejected("CRYPTO at offset 0 is not a ClientHello")
    declared = int.from_bytes(msg[1:4], "big")
    if declared < _HELLO_FIXED:
        raise ClientHelloRejected("ClientHello too short")
    body = msg[4:4 + declared]
    n = len(body)
    p = _HELLO_FIXED
    if p >= n:
        return None
    if body[p]:
        raise ClientHelloRejected("ClientHello with a legacy_session_id (middlebox compatibility mode)")
    p += 1
    if p + 2 > n:
        return None
    p += 2 + int.from_bytes(body[p:p + 2], "big")  # cipher_suites
    if p + 1 > n:
        return None
    p += 1 + body[p]  # legacy_compression_methods
    if p + 2 > n:
        return None
    declared_end = p + 2 + int.from_bytes(body[p:p + 2], "big")
    end = min(n, declared_end)
    p += 2
    for _ in range(_MAX_EXTENSIONS):
        if p + 4 > end:
            break
        ext_type = int.from_bytes(body[p:p + 2], "big")
        ext_len = int.from_bytes(body[p + 2:p + 4], "big")
        p += 4
        if p + ext_len > end:
            return None  # truncated in this packet: no ALPN assumed
        if ext_type == _EXT_ALPN:
            return _alpn_list(body[p:p + ext_len])
        p += ext_len
    else:
        raise ClientHelloRejected("too many extensions")
    # No ALPN extension: a definite answer only if all extensions were in this packet.
    return [] if declared_end <= n else None


def _alpn_list(ext: bytes) -> list[bytes]:
    if len(ext) > ALPN_MAX_LEN or len(ext) < 2:
        raise ClientHelloRejected("ALPN extension too long or too short")
    total = int.from_bytes(ext[:2], "big")
    if total + 2 != len(ext):
        raise ClientHelloRejected("malformed ALPN extension")
    out: list[bytes] = []
    p = 2
    while p < len(ext):
        size = ext[p]
        if size == 0 or p + 1 + size > len(ext):
            raise ClientHelloRejected("malformed ALPN protocol list")
        out.append(ext[p + 1:p + 1 + size])
        p += 1 + size
    return out
