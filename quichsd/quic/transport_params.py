"""QUIC transport parameters: the value of TLS extension 0x39 (RFC 9000 §18, RFC 9001 §8.2).

One table, built at import, maps each id to (name, kind, limits); the codec walks it, and
it is the only place that spells a parameter's id: everything else (the simulation's kernel
blobs too, sock/sim/tparams.py) names parameters and encodes them with `encode_params`.
Besides RFC 9000 §18.2 it knows max_datagram_frame_size (RFC 9221 §3),
grease_quic_bit (RFC 9287 §3), version_information (RFC 9368 §3) and the kernel module's
disable_1rtt_encryption (draft-banks-quic-disable-encryption).

Decoding rejects, with TRANSPORT_PARAMETER_ERROR, what RFC 9000 §7.4, §18 and §18.2 (and
the extension RFCs) make invalid in the parameters themselves. Checks that need connection
state (odcid equals our DCID, iscid present, retry_scid iff Retry: RFC 9000 §7.3) belong to
the caller.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv4Address, IPv6Address
from types import MappingProxyType
from typing import Any, Literal

from .errors import QuicError, QuicErrorCode
from .varint import VarintError, decode_varint, decode_varint_exact, encode_varint

__all__ = [
    "PARAMETER_IDS",
    "PreferredAddress",
    "TransportParameters",
    "Value",
    "VersionInformation",
    "encode_params",
    "is_grease_id",
]

Sender = Literal["client", "server"]

# RFC 9000 §17.2: a v1 connection ID is at most 20 bytes.
MAX_CID_LEN = 20
STATELESS_RESET_TOKEN_LEN = 16


class Kind(Enum):
    VARINT = "varint"
    BYTES = "bytes"
    EMPTY = "empty"
    CID = "cid"
    PREFERRED_ADDRESS = "preferred_address"
    VERSION_INFO = "version_info"
    OPAQUE = "opaque"  # kept as sent, for the receiver to judge


@dataclass(frozen=True)
class PreferredAddress:
    """RFC 9000 §18.2, Figure 22. An all-zero address/port means "no address of this family"."""

    ipv4_address: IPv4Address
    ipv4_port: int
    ipv6_address: IPv6Address
    ipv6_port: int
    connection_id: bytes
    stateless_reset_token: bytes


@dataclass(frozen=True)
class VersionInformation:
    """RFC 9368 §3: the version in use, then the versions the sender supports."""

    chosen_version: int
    available_versions: tuple[int, ...] = ()


@dataclass
class TransportParameters:
    """Every known parameter; None (False for the empty ones) means absent.

    Absent is not the same as the RFC default (e.g. max_udp_payload_size 65527); applying
    defaults is the receiver's job. Unknown, non-GREASE ids stay visible in `unknown`.
    """

    original_destination_connection_id: bytes | None = None
    max_idle_timeout: int | None = None  # milliseconds
    stateless_reset_token: bytes | None = None
    max_udp_payload_size: int | None = None
    initial_max_data: int | None = None
    initial_max_stream_data_bidi_local: int | None = None
    initial_max_stream_data_bidi_remote: int | None = None
    initial_max_stream_data_uni: int | None = None
    initial_max_streams_bidi: int | None = None
    initial_max_streams_uni: int | None = None
    ack_delay_exponent: int | None = None
    max_ack_delay: int | None = None  # milliseconds
    disable_active_migration: bool = False
    preferred_address: PreferredAddress | None = None
    active_connection_id_limit: int | None = None
    initial_source_connection_id: bytes | None = None
    retry_source_connection_id: bytes | None = None
    version_information: VersionInformation | None = None
    max_datagram_frame_size: int | None = None
    grease_quic_bit: bool = False
    # The draft defines it empty; the kernel rejects a value only at a client (kernel ABI
    # spec §5), so the value is kept for the receiver to judge.
    disable_1rtt_encryption: bytes | None = None
    unknown: list[tuple[int, bytes]] = field(default_factory=list)

    def encode(self) -> bytes:
        return _encode(self)

    @classmethod
    def decode(
        cls, data: bytes | bytearray | memoryview, sender: Sender
    ) -> TransportParameters:
        """Parse the extension sent by `sender` ("client" or "server")."""
        return _decode(cls, data, sender)


@dataclass(frozen=True)
class _Param:
    id: int
    name: str
    kind: Kind
    server_only: bool = False  # RFC 9000 §18.2: a client MUST NOT send it
    lo: int | None = None  # smallest valid varint value
    hi: int | None = None  # largest valid varint value


_TABLE: tuple[_Param, ...] = (
    _Param(0x00, "original_destination_connection_id", Kind.CID, server_only=True),
    _Param(0x01, "max_idle_timeout", Kind.VARINT),
    _Param(0x02, "stateless_reset_token", Kind.BYTES, server_only=True),
    _Param(0x03, "max_udp_payload_size", Kind.VARINT, lo=1200),
    _Param(0x04, "initial_max_data", Kind.VARINT),
    _Param(0x05, "initial_max_stream_data_bidi_local", Kind.VARINT),
    _Param(0x06, "initial_max_stream_data_bidi_remote", Kind.VARINT),
    _Param(0x07, "initial_max_stream_data_uni", Kind.VARINT),
    # RFC 9000 §4.6: more than 2^60 streams is a TRANSPORT_PARAMETER_ERROR.
    _Param(0x08, "initial_max_streams_bidi", Kind.VARINT, hi=1 << 60),
    _Param(0x09, "initial_max_streams_uni", Kind.VARINT, hi=1 << 60),
    _Param(0x0A, "ack_delay_exponent", Kind.VARINT, hi=20),
    _Param(0x0B, "max_ack_delay", Kind.VARINT, hi=(1 << 14) - 1),
    _Param(0x0C, "disable_active_migration", Kind.EMPTY),
    _Param(0x0D, "preferred_address", Kind.PREFERRED_ADDRESS, server_only=True),
    _Param(0x0E, "active_connection_id_limit", Kind.VARINT, lo=2),
    _Param(0x0F, "initial_source_connection_id", Kind.CID),
    _Param(0x10, "retry_source_connection_id", Kind.CID, server_only=True),
    _Param(0x11, "version_information", Kind.VERSION_INFO),
    _Param(0x20, "max_datagram_frame_size", Kind.VARINT),
    _Param(0x2AB2, "grease_quic_bit", Kind.EMPTY),
    _Param(0xBAAD, "disable_1rtt_encryption", Kind.OPAQUE),
)
_BY_ID: dict[int, _Param] = {p.id: p for p in _TABLE}
_BY_NAME: dict[str, _Param] = {p.name: p for p in _TABLE}
# The id of each parameter by its name (and TransportParameters attribute).
PARAMETER_IDS: Mapping[str, int] = MappingProxyType({p.name: p.id for p in _TABLE})


def is_grease_id(param_id: int) -> bool:
    """RFC 9000 §18.1: ids 31 * N + 27 are reserved and carry no meaning."""
    return param_id >= 27 and (param_id - 27) % 31 == 0


def _error(reason: str) -> QuicError:
    return QuicError(QuicErrorCode.TRANSPORT_PARAMETER_ERROR, reason)


# ---- decoding ---------------------------------------------------------------------------

Value = int | bytes | bool | PreferredAddress | VersionInformation


def _decode(
    cls: type[TransportParameters], data: bytes | bytearray | memoryview, sender: Sender
) -> TransportParameters:
    if sender not in ("client", "server"):
        raise ValueError(f"sender must be 'client' or 'server', not {sender!r}")
    by_client = sender == "client"
    buf = bytes(data)
    size = len(buf)
    pos = 0
    seen: set[int] = set()
    values: dict[str, Value] = {}
    unknown: list[tuple[int, bytes]] = []
    while pos < size:
        param_id, length, pos = _param_header(buf, pos)
        end = pos + length
        if end > size:
            raise _error(f"parameter 0x{param_id:x} is {length} bytes, {size - pos} left")
        # RFC 9000 §7.4: a parameter MUST NOT appear twice.
        if param_id in seen:
            raise _error(f"duplicate parameter 0x{param_id:x}")
        seen.add(param_id)
        value = buf[pos:end]
        pos = end
        spec = _BY_ID.get(param_id)
        if spec is None:
            if not is_grease_id(param_id):
                unknown.append((param_id, value))
            continue
        if spec.server_only and by_client:
            raise _error(f"{spec.name} sent by a client")
        values[spec.name] = _DECODER_OF[param_id](spec, value)
    return cls(**values, unknown=unknown)  # type: ignore[arg-type]


def _param_header(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(id, length, where the value starts) of the parameter at buf[pos]: two varints
    (RFC 9000 §18), read directly when both are one byte, as nearly all are."""
    if pos + 1 < len(buf) and buf[pos] < 0x40 and buf[pos + 1] < 0x40:
        return buf[pos], buf[pos + 1], pos + 2
    try:
        param_id, pos = decode_varint(buf, pos)
        length, pos = decode_varint(buf, pos)
    except VarintError as exc:
        raise _error(f"truncated parameter header: {exc}") from None
    return param_id, length, pos


def _decode_varint(spec: _Param, value: bytes) -> int:
    # RFC 9000 §18: the value is one varint filling the announced length exactly.
    number = decode_varint_exact(value)
    if number is None:
        raise _error(f"{spec.name}: {len(value)}-byte value is not one varint")
    if spec.lo is not None and number < spec.lo:
        raise _error(f"{spec.name} {number} < {spec.lo}")
    if spec.hi is not None and number > spec.hi:
        raise _error(f"{spec.name} {number} > {spec.hi}")
    return number


def _decode_bytes(spec: _Param, value: bytes) -> bytes:
    # Only stateless_reset_token has this kind: RFC 9000 §18.2, 16 bytes.
    if len(value) != STATELESS_RESET_TOKEN_LEN:
        raise _error(f"{spec.name} is {len(value)} bytes, not {STATELESS_RESET_TOKEN_LEN}")
    return value


def _decode_empty(spec: _Param, value: bytes) -> bool:
    if value:
        raise _error(f"{spec.name} must be empty, has {len(value)} bytes")
    return True


def _decode_opaque(spec: _Param, value: bytes) -> bytes:
    return value


def _decode_cid(spec: _Param, value: bytes) -> bytes:
    if len(value) > MAX_CID_LEN:
        raise _error(f"{spec.name} is {len(value)} bytes, max {MAX_CID_LEN}")
    return value


# IPv4 (4) + port (2) + IPv6 (16) + port (2) + CID length (1), then CID, then token (16).
_PREFERRED_FIXED = 25


def _decode_preferred_address(spec: _Param, value: bytes) -> PreferredAddress:
    if len(value) < _PREFERRED_FIXED:
        raise _error(f"{spec.name} is {len(value)} bytes")
    cid_len = value[24]
    # RFC 9000 §18.2: a zero-length CID here is a TRANSPORT_PARAMETER_ERROR.
    if not 1 <= cid_len <= MAX_CID_LEN:
        raise _error(f"{spec.name}: connection ID length {cid_len}")
    if len(value) != _PREFERRED_FIXED + cid_len + STATELESS_RESET_TOKEN_LEN:
        raise _error(f"{spec.name}: length {len(value)} does not match its CID length")
    cid_end = _PREFERRED_FIXED + cid_len
    return PreferredAddress(
        ipv4_address=IPv4Address(value[0:4]),
        ipv4_port=int.from_bytes(value[4:6], "big"),
        ipv6_address=IPv6Address(value[6:22]),
        ipv6_port=int.from_bytes(value[22:24], "big"),
        connection_id=value[_PREFERRED_FIXED:cid_end],
        stateless_reset_token=value[cid_end:],
    )


def _decode_version_info(spec: _Param, value: bytes) -> VersionInformation:
    # RFC 9368 §3: a zero version anywhere, or a length that is not a non-zero multiple
    # of 4, is a parse failure and so a TRANSPORT_PARAMETER_ERROR.
    if len(value) < 4 or len(value) % 4:
        raise _error(f"{spec.name} is {len(value)} bytes, not a multiple of 4")
    versions = [int.from_bytes(value[i : i + 4], "big") for i in range(0, len(value), 4)]
    if 0 in versions:
        raise _error(f"{spec.name}: version 0x00000000")
    return VersionInformation(versions[0], tuple(versions[1:]))


_DECODERS: dict[Kind, Callable[[_Param, bytes], Value]] = {
    Kind.VARINT: _decode_varint,
    Kind.BYTES: _decode_bytes,
    Kind.EMPTY: _decode_empty,
    Kind.CID: _decode_cid,
    Kind.PREFERRED_ADDRESS: _decode_preferred_address,
    Kind.VERSION_INFO: _decode_version_info,
    Kind.OPAQUE: _decode_opaque,
}
# By parameter id, so decoding does not hash the Kind enum (a Python-level __hash__).
_DECODER_OF: dict[int, Callable[[_Param, bytes], Value]] = {p.id: _DECODERS[p.kind] for p in _TABLE}


# ---- encoding ---------------------------------------------------------------------------


def _encode(params: TransportParameters) -> bytes:
    """Known parameters in table order, then the unknown ones as they came."""
    out = bytearray()
    for spec in _TABLE:
        value = getattr(params, spec.name)
        if value is not None and value is not False:
            _put(out, spec.id, _ENCODER_OF[spec.id](value))
    for param_id, body in params.unknown:
        _put(out, param_id, body)
    return bytes(out)


def encode_params(params: Iterable[tuple[str, Value]]) -> bytes:
    """(name, value) pairs encoded in the order given, for a sender with an order of its own
    (the kernel's; RFC 9000 §18 leaves it free). A flag that is on has the value b"" (or
    True); one that is off is left out by the caller."""
    out = bytearray()
    for name, value in params:
        spec = _BY_NAME[name]
        _put(out, spec.id, _ENCODER_OF[spec.id](value))
    return bytes(out)


def _put(out: bytearray, param_id: int, body: bytes) -> None:
    out += encode_varint(param_id)
    out += encode_varint(len(body))
    out += body


def _encode_preferred_address(pa: PreferredAddress) -> bytes:
    return b"".join(
        (
            pa.ipv4_address.packed,
            pa.ipv4_port.to_bytes(2, "big"),
            pa.ipv6_address.packed,
            pa.ipv6_port.to_bytes(2, "big"),
            bytes((len(pa.connection_id),)),
            pa.connection_id,
            pa.stateless_reset_token,
        )
    )


def _encode_version_info(vi: VersionInformation) -> bytes:
    return b"".join(v.to_bytes(4, "big") for v in (vi.chosen_version, *vi.available_versions))


_ENCODERS: dict[Kind, Callable[[Any], bytes]] = {
    Kind.VARINT: encode_varint,
    Kind.BYTES: bytes,
    Kind.EMPTY: lambda _value: b"",
    Kind.CID: bytes,
    Kind.PREFERRED_ADDRESS: _encode_preferred_address,
    Kind.VERSION_INFO: _encode_version_info,
    Kind.OPAQUE: bytes,
}
_ENCODER_OF: dict[int, Callable[[Any], bytes]] = {p.id: _ENCODERS[p.kind] for p in _TABLE}
