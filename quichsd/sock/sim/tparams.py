"""Transport parameters as the kernel handles them (spec §1.3, §1.4, §5).

Values live in dicts keyed by the field names of `struct quic_transport_param` (times in
microseconds), which is what TRANSPORT_PARAM get/set carry. One table (_TABLE) says, for each
field, which wire parameter carries it (quic/transport_params.py's table has the ids and the
codec), in which unit, when the local blob leaves it out, and the kernel's limits. From it
this module builds the local TRANSPORT_PARAM_EXT blob in the kernel's order, parses the
peer's blob with TransportParameters.decode plus the kernel's extra checks, and validates
TRANSPORT_PARAM sets.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from operator import itemgetter

from ...quic.errors import QuicError, QuicErrorCode
from ...quic.transport_params import (
    PreferredAddress,
    TransportParameters,
    Value,
    VersionInformation,
    encode_params,
)
from ...quic.versions import QUIC_V1, QUIC_V2, SUPPORTED_VERSIONS

__all__ = [
    "FIELDS",
    "LOCAL_DEFAULTS",
    "PEER_DEFAULTS",
    "ZERO",
    "PeerParams",
    "build_local_blob",
    "needs_reset_token",
    "parse_peer_blob",
    "merge_fields",
    "select_version",
    "MAX_BLOB",
]

MAX_BLOB = 512  # TRANSPORT_PARAM_EXT limit
MAX_STREAMS = 4096  # per type, kernel limit
# Our versions in preference order: what version_information lists as available (§5).
AVAILABLE_VERSIONS = (QUIC_V2.number, QUIC_V1.number)

# struct quic_transport_param's fields in its order (§1.3), without `remote`.
FIELDS = (
    "disable_active_migration", "grease_quic_bit", "stateless_reset", "disable_1rtt_encryption",
    "disable_compatible_version", "active_connection_id_limit", "ack_delay_exponent",
    "max_datagram_frame_size", "max_udp_payload_size", "max_idle_timeout", "max_ack_delay",
    "max_streams_bidi", "max_streams_uni", "max_data", "max_stream_data_bidi_local",
    "max_stream_data_bidi_remote", "max_stream_data_uni",
)
ZERO = dict.fromkeys(FIELDS, 0)

# §1.3: defaults of a socket's local parameters.
LOCAL_DEFAULTS = {
    **ZERO,
    "active_connection_id_limit": 7,
    "ack_delay_exponent": 3,
    "max_udp_payload_size": 65527,
    "max_idle_timeout": 30_000_000,
    "max_ack_delay": 25_000,
    "max_streams_bidi": 100,
    "max_streams_uni": 100,
    "max_data": 65535 * 32,
    "max_stream_data_bidi_local": 65535 * 16,
    "max_stream_data_bidi_remote": 65535 * 16,
    "max_stream_data_uni": 65535 * 16,
}
# §5: what a peer's blob starts from before its parameters are applied.
PEER_DEFAULTS = {
    **ZERO,
    "max_udp_payload_size": 65527,
    "ack_delay_exponent": 3,
    "max_ack_delay": 25_000,
    "active_connection_id_limit": 2,
    "disable_compatible_version": 1,
}

_S32_MAX = (1 << 31) - 1


class Part(Enum):
    """Where the local blob carries a field (§5): among the configuration's parameters before
    version_information or after it, or as the connection's own (a reset token, whether
    version_information is sent at all)."""

    LEADING = "leading"
    TRAILING = "trailing"
    CONNECTION = "connection"


@dataclass(frozen=True)
class _Field:
    """A field of struct quic_transport_param: the wire parameter that carries it and what
    the kernel does with its value. Bounds are in the struct's units and apply to non-zero
    values (zero is "unchanged" in a set, "absent" from the peer)."""

    name: str  # the struct's field
    param: str  # the parameter carrying it (a TransportParameters attribute)
    part: Part
    flag: bool = False  # 1 if the parameter is present (0 if `negated`), an empty value on the wire
    negated: bool = False
    unit: int = 1  # struct units per wire unit: µs per ms for the times
    omit: tuple[int, ...] = (0,)  # values the local blob leaves out
    lo: int | None = None  # below: EINVAL for a set (§1.4), TRANSPORT_PARAMETER_ERROR from the peer (§5)
    hi: int | None = None  # above: likewise
    set_lo: int | None = None  # below: EINVAL for a set only (the peer's credit is not checked)
    local_hi: int | None = None  # above: EINVAL for a set of the local parameters only
    cap: int | None = None  # a peer's larger value is clipped to this (a kernel limit or the field's width)

    def set_value(self, value: int, remote: bool) -> int:
        """What a TRANSPORT_PARAM set of non-zero `value` stores; ValueError (EINVAL) if the
        kernel refuses it (§1.4)."""
        lo = self.lo if self.set_lo is None else self.set_lo
        if lo is not None and value < lo:
            raise ValueError(self.name)
        if self.hi is not None and value > self.hi:
            raise ValueError(self.name)
        if remote:
            return value if self.cap is None else min(value, self.cap)
        if self.local_hi is not None and value > self.local_hi:
            raise ValueError(self.name)
        return value

    def peer_value(self, value: Value) -> int:
        """What the peer's parameter, present with `value`, sets this field to; QuicError
        0x08 for a value the kernel refuses (§5)."""
        if self.flag:
            return 0 if self.negated else 1
        assert isinstance(value, int)  # the table pairs numbers with varint parameters
        number = value * self.unit
        if number:
            self._check_peer_range(number)
        return number if self.cap is None else min(number, self.cap)

    def _check_peer_range(self, number: int) -> None:
        if self.lo is not None and number < self.lo:
            raise _tp_error(f"{self.param} {number // self.unit} under {-(-self.lo // self.unit)}")
        if self.hi is not None and number > self.hi:
            raise _tp_error(f"{self.param} {number // self.unit} over {self.hi // self.unit}")

    def wire_value(self, value: int) -> Value:
        """The local value as the blob carries it: times in ms rounded up (§5)."""
        return b"" if self.flag else (value + self.unit - 1) // self.unit


_LEADING, _TRAILING, _CONNECTION = Part.LEADING, Part.TRAILING, Part.CONNECTION
# In the order the kernel writes the local blob (§5).
_TABLE = (
    _Field("stateless_reset", "stateless_reset_token", _CONNECTION, flag=True),
    _Field("max_stream_data_bidi_local", "initial_max_stream_data_bidi_local", _LEADING,
           set_lo=1200, local_hi=_S32_MAX // 8),
    _Field("max_stream_data_bidi_remote", "initial_max_stream_data_bidi_remote", _LEADING,
           set_lo=1200, local_hi=_S32_MAX // 8),
    _Field("max_stream_data_uni", "initial_max_stream_data_uni", _LEADING,
           set_lo=1200, local_hi=_S32_MAX // 8),
    _Field("max_data", "initial_max_data", _LEADING, set_lo=1200, local_hi=_S32_MAX // 4),
    _Field("max_streams_bidi", "initial_max_streams_bidi", _LEADING, local_hi=MAX_STREAMS, cap=MAX_STREAMS),
    _Field("max_streams_uni", "initial_max_streams_uni", _LEADING, local_hi=MAX_STREAMS, cap=MAX_STREAMS),
    _Field("max_udp_payload_size", "max_udp_payload_size", _LEADING, omit=(0, 65527), lo=1200, hi=65527),
    _Field("ack_delay_exponent", "ack_delay_exponent", _LEADING, omit=(3,), hi=20),
    _Field("disable_active_migration", "disable_active_migration", _LEADING, flag=True),
    _Field("disable_1rtt_encryption", "disable_1rtt_encryption", _LEADING, flag=True),
    _Field("disable_compatible_version", "version_information", _CONNECTION, flag=True, negated=True),
    _Field("grease_quic_bit", "grease_quic_bit", _TRAILING, flag=True),
    _Field("max_ack_delay", "max_ack_delay", _TRAILING, unit=1000, omit=(0, 25_000), hi=16_384_000 - 1),
    _Field("max_idle_timeout", "max_idle_timeout", _TRAILING, unit=1000, lo=1_000_000, cap=0xFFFFFFFF),
    _Field("active_connection_id_limit", "active_connection_id_limit", _TRAILING, omit=(0, 2), lo=2, hi=8),
    _Field("max_datagram_frame_size", "max_datagram_frame_size", _TRAILING, lo=1200, cap=65535),
)
_BY_NAME = {f.name: f for f in _TABLE}


def merge_fields(current: Mapping[str, int], fields: Mapping[str, int], remote: bool) -> dict[str, int]:
    """TRANSPORT_PARAM set (§1.4): non-zero fields overwrite, after validation.
    Raises ValueError (EINVAL) without changing anything."""
    new = dict(current)
    for name, value in fields.items():
        if name in _BY_NAME and value:
            new[name] = _BY_NAME[name].set_value(int(value), remote)
    return new


# ---- the local blob (getsockopt TRANSPORT_PARAM_EXT) ----------------------------------------


def _encode_part(p: Mapping[str, int], part: Part) -> bytes:
    return encode_params((f.param, f.wire_value(p[f.name])) for f in _TABLE
                         if f.part is part and p[f.name] not in f.omit)


_field_values = itemgetter(*FIELDS)
# Encoded configuration parts, by the configuration's values: a function of the socket
# options only (no connection ID, token or version goes in), so sharing them between
# connections shares nothing of a connection. Bounded: cleared when full.
_CONFIG_PARTS: dict[tuple[int, ...], tuple[bytes, bytes]] = {}
_CONFIG_PARTS_MAX = 64


def _config_parts(p: Mapping[str, int]) -> tuple[bytes, bytes]:
    """The configuration's parameters before and after version_information, encoded once
    per configuration."""
    key = _field_values(p)
    parts = _CONFIG_PARTS.get(key)
    if parts is None:
        if len(_CONFIG_PARTS) >= _CONFIG_PARTS_MAX:
            _CONFIG_PARTS.clear()
        parts = _CONFIG_PARTS[key] = (_encode_part(p, _LEADING), _encode_part(p, _TRAILING))
    return parts


def needs_reset_token(p: Mapping[str, int], *, is_client: bool) -> bool:
    """Whether build_local_blob emits stateless_reset_token (RFC 9000 §18.2: server only)."""
    return not is_client and bool(p["stateless_reset"])


def build_local_blob(p: Mapping[str, int], *, is_client: bool, local_cid: bytes,
                     original_dcid: bytes, version: int, peer_sent_version_info: bool,
                     reset_token: bytes | None, retry_scid: bytes | None = None,
                     preferred_address: PreferredAddress | None = None) -> bytes:
    """The parameters in the kernel's order and with its emission rules (§5): the
    connection's own values (CIDs, token, version) around the configuration's, which are
    encoded once per configuration (_config_parts)."""
    own: list[tuple[str, Value]] = []
    if not is_client:
        own.append(("original_destination_connection_id", original_dcid))
        if needs_reset_token(p, is_client=is_client) and reset_token is not None:
            own.append(("stateless_reset_token", reset_token))
        if retry_scid is not None:  # RFC 9000 §7.3: the SCID of the Retry we sent
            own.append(("retry_source_connection_id", retry_scid))
        if preferred_address is not None:  # RFC 9000 §18.2, set by CONNECTION_MIGRATION
            own.append(("preferred_address", preferred_address))
    own.append(("initial_source_connection_id", local_cid))
    leading, trailing = _config_parts(p)
    versions = b""
    if not p["disable_compatible_version"] and (is_client or peer_sent_version_info):
        versions = _version_information(version)
    return encode_params(own) + leading + versions + trailing


@lru_cache(maxsize=8)
def _version_information(version: int) -> bytes:
    """version_information as we send it (§5): the version in use, then ours."""
    return encode_params([("version_information", VersionInformation(version, AVAILABLE_VERSIONS))])


# ---- the peer's blob (setsockopt TRANSPORT_PARAM_EXT) -----------------------------------------


@dataclass
class PeerParams:
    fields: dict[str, int]
    version_information: VersionInformation | None
    stateless_reset_token: bytes | None
    initial_source_connection_id: bytes
    preferred_address: PreferredAddress | None = None


def _tp_error(why: str) -> QuicError:
    return QuicError(QuicErrorCode.TRANSPORT_PARAMETER_ERROR, why)


def parse_peer_blob(blob: bytes, *, we_are_client: bool, original_dcid: bytes,
                    peer_cid: bytes, retry_scid: bytes | None = None) -> PeerParams:
    """Decode and check the peer's parameters; raises QuicError (0x08 or 0x11).
    `retry_scid`: a client's, the SCID of the Retry it followed (RFC 9000 §7.3)."""
    tp = TransportParameters.decode(blob, "server" if we_are_client else "client")
    iscid = _check_connection_ids(tp, we_are_client=we_are_client, original_dcid=original_dcid,
                                  peer_cid=peer_cid, retry_scid=retry_scid)
    fields = dict(PEER_DEFAULTS)
    for field in _TABLE:
        value = getattr(tp, field.param)
        if value is not None and value is not False:  # absent: the default stays
            fields[field.name] = field.peer_value(value)
    if tp.disable_1rtt_encryption and we_are_client:
        raise _tp_error("disable_1rtt_encryption with a value")
    vi = tp.version_information
    if vi is not None and not we_are_client and vi.chosen_version not in vi.available_versions:
        raise _tp_error("version_information: chosen version not among the available ones")
    return PeerParams(fields, vi, tp.stateless_reset_token, iscid, tp.preferred_address)


def _check_connection_ids(tp: TransportParameters, *, we_are_client: bool, original_dcid: bytes,
                          peer_cid: bytes, retry_scid: bytes | None) -> bytes:
    """RFC 9000 §7.3: the CIDs the peer names are the ones this connection used; returns
    the peer's initial_source_connection_id."""
    if we_are_client:
        if tp.original_destination_connection_id is None:
            raise _tp_error("server sent no original_destination_connection_id")
        if tp.original_destination_connection_id != original_dcid:
            raise _tp_error("original_destination_connection_id does not match")
    _check_retry_scid(tp.retry_source_connection_id, retry_scid if we_are_client else None)
    if tp.initial_source_connection_id is None:
        raise _tp_error("no initial_source_connection_id")
    if tp.initial_source_connection_id != peer_cid:
        raise _tp_error("initial_source_connection_id does not match the peer's CID")
    return tp.initial_source_connection_id


def _check_retry_scid(sent: bytes | None, retry_scid: bytes | None) -> None:
    """`retry_scid`: the SCID of the Retry a client followed, None without one."""
    if retry_scid is None:
        if sent is not None:
            raise _tp_error("retry_source_connection_id without a Retry")
    elif sent is None:
        raise _tp_error("no retry_source_connection_id after a Retry")
    elif sent != retry_scid:
        raise _tp_error("retry_source_connection_id does not match the Retry")


def select_version(offered: tuple[int, ...], *, is_server: bool, current: int, preferred: int) -> int:
    """The kernel's compatible version choice among `offered` (RFC 9368 §2.3): a server
    prefers its configured version, a client stays on the current one; failing both, the
    highest compatible version offered. Raises QuicError 0x11 if none is acceptable."""
    known = [v for v in offered if v in SUPPORTED_VERSIONS]
    if not known:
        raise QuicError(QuicErrorCode.VERSION_NEGOTIATION_ERROR, "no compatible version offered")
    first, second = (preferred, current) if is_server else (current, preferred)
    if first in known:
        return first
    if second in known:
        return second
    return max(known)
