"""Transport parameters as the kernel handles them (spec §1.3, §1.4, §5).

Values live in dicts keyed by the field names of `struct quic_transport_param` (times in
microseconds), which is what TRANSPORT_PARAM get/set carry. This module builds the local
TRANSPORT_PARAM_EXT blob in the kernel's order, parses the peer's blob with
TransportParameters.decode plus the kernel's extra checks, and validates TRANSPORT_PARAM
sets.
"""
from __future__ import annotations

from dataclasses import dataclass
from operator import itemgetter

from ...quic.errors import QuicError, QuicErrorCode
from ...quic.transport_params import TransportParameters, VersionInformation
from ...quic.varint import encode_varint
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
DISABLE_1RTT_ID = 0xBAAD  # draft-banks-quic-disable-encryption
# Our versions in preference order: what version_information lists as available (§5).
AVAILABLE_VERSIONS = (QUIC_V2.number, QUIC_V1.number)

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


def _bad(why: str) -> ValueError:
    return ValueError(why)


def merge_fields(current: dict[str, int], fields: dict[str, int], remote: bool) -> dict[str, int]:
    """TRANSPORT_PARAM set (§1.4): non-zero fields overwrite, after validation.
    Raises ValueError (EINVAL) without changing anything."""
    new = dict(current)
    for name, value in fields.items():
        if name not in ZERO or not value:
            continue
        value = int(value)
        if name == "max_udp_payload_size" and not 1200 <= value <= 65527:
            raise _bad("max_udp_payload_size")
        if name == "ack_delay_exponent" and value > 20:
            raise _bad("ack_delay_exponent")
        if name == "max_ack_delay" and value >= 16_384_000:
            raise _bad("max_ack_delay")
        if name == "active_connection_id_limit" and not 2 <= value <= 8:
            raise _bad("active_connection_id_limit")
        if name == "max_idle_timeout" and value < 1_000_000:
            raise _bad("max_idle_timeout")
        if name == "max_datagram_frame_size" and value < 1200:
            raise _bad("max_datagram_frame_size")
        if name == "max_data" and (value < 1200 or (not remote and value > _S32_MAX // 4)):
            raise _bad("max_data")
        if name.startswith("max_stream_data") and (value < 1200 or (not remote and value > _S32_MAX // 8)):
            raise _bad(name)
        if name.startswith("max_streams") and value > MAX_STREAMS:
            if not remote:
                raise _bad(name)
            value = MAX_STREAMS
        new[name] = value
    return new


# ---- the local blob (getsockopt TRANSPORT_PARAM_EXT) ----------------------------------------


def _param(out: bytearray, pid: int, body: bytes) -> None:
    out += encode_varint(pid)
    out += encode_varint(len(body))
    out += body


def _int(out: bytearray, pid: int, value: int) -> None:
    _param(out, pid, encode_varint(value))


def _ms_up(us: int) -> int:
    return (us + 999) // 1000


def _leading_params(p: dict[str, int]) -> bytes:
    """What follows initial_source_connection_id, up to version_information (§5 order)."""
    out = bytearray()
    for pid, name in ((0x05, "max_stream_data_bidi_local"), (0x06, "max_stream_data_bidi_remote"),
                      (0x07, "max_stream_data_uni"), (0x04, "max_data"),
                      (0x08, "max_streams_bidi"), (0x09, "max_streams_uni")):
        if p[name]:
            _int(out, pid, p[name])
    if p["max_udp_payload_size"] and p["max_udp_payload_size"] != 65527:
        _int(out, 0x03, p["max_udp_payload_size"])
    if p["ack_delay_exponent"] != 3:
        _int(out, 0x0A, p["ack_delay_exponent"])
    if p["disable_active_migration"]:
        _param(out, 0x0C, b"")
    if p["disable_1rtt_encryption"]:
        _param(out, DISABLE_1RTT_ID, b"")
    return bytes(out)


def _trailing_params(p: dict[str, int]) -> bytes:
    """What follows version_information (§5 order)."""
    out = bytearray()
    if p["grease_quic_bit"]:
        _param(out, 0x2AB2, b"")
    if p["max_ack_delay"] and p["max_ack_delay"] != 25_000:
        _int(out, 0x0B, _ms_up(p["max_ack_delay"]))
    if p["max_idle_timeout"]:
        _int(out, 0x01, _ms_up(p["max_idle_timeout"]))
    if p["active_connection_id_limit"] and p["active_connection_id_limit"] != 2:
        _int(out, 0x0E, p["active_connection_id_limit"])
    if p["max_datagram_frame_size"]:
        _int(out, 0x20, p["max_datagram_frame_size"])
    return bytes(out)


_field_values = itemgetter(*FIELDS)
# Encoded configuration parts, by the configuration's values: a function of the socket
# options only (no connection ID, token or version goes in), so sharing them between
# connections shares nothing of a connection. Bounded: cleared when full.
_CONFIG_PARTS: dict[tuple[int, ...], tuple[bytes, bytes]] = {}
_CONFIG_PARTS_MAX = 64


def _config_parts(p: dict[str, int]) -> tuple[bytes, bytes]:
    """(_leading_params, _trailing_params) of `p`, encoded once per configuration."""
    key = _field_values(p)
    parts = _CONFIG_PARTS.get(key)
    if parts is None:
        if len(_CONFIG_PARTS) >= _CONFIG_PARTS_MAX:
            _CONFIG_PARTS.clear()
        parts = _CONFIG_PARTS[key] = (_leading_params(p), _trailing_params(p))
    return parts


def needs_reset_token(p: dict[str, int], *, is_client: bool) -> bool:
    """Whether build_local_blob emits stateless_reset_token (RFC 9000 §18.2: server only)."""
    return not is_client and bool(p["stateless_reset"])


def build_local_blob(p: dict[str, int], *, is_client: bool, local_cid: bytes,
                     original_dcid: bytes, version: int, peer_sent_version_info: bool,
                     reset_token: bytes | None, retry_scid: bytes | None = None) -> bytes:
    """The parameters in the kernel's order and with its emission rules (§5): the
    connection's own values (CIDs, token, version) around the configuration's, which are
    encoded once per configuration (_config_parts)."""
    out = bytearray()
    if not is_client:
        _param(out, 0x00, original_dcid)
        if needs_reset_token(p, is_client=is_client) and reset_token is not None:
            _param(out, 0x02, reset_token)
        if retry_scid is not None:  # RFC 9000 §7.3: the SCID of the Retry we sent
            _param(out, 0x10, retry_scid)
    _param(out, 0x0F, local_cid)
    leading, trailing = _config_parts(p)
    out += leading
    if not p["disable_compatible_version"] and (is_client or peer_sent_version_info):
        versions = (version, *AVAILABLE_VERSIONS)
        _param(out, 0x11, b"".join(v.to_bytes(4, "big") for v in versions))
    out += trailing
    return bytes(out)


# ---- the peer's blob (setsockopt TRANSPORT_PARAM_EXT) -----------------------------------------


@dataclass
class PeerParams:
    fields: dict[str, int]
    version_information: VersionInformation | None
    stateless_reset_token: bytes | None
    initial_source_connection_id: bytes


def _tp_error(why: str) -> QuicError:
    return QuicError(QuicErrorCode.TRANSPORT_PARAMETER_ERROR, why)


def parse_peer_blob(blob: bytes, *, we_are_client: bool, original_dcid: bytes,
                    peer_cid: bytes, retry_scid: bytes | None = None) -> PeerParams:
    """Decode and check the peer's parameters; raises QuicError (0x08 or 0x11).
    `retry_scid`: a client's, the SCID of the Retry it followed (RFC 9000 §7.3)."""
    tp = TransportParameters.decode(blob, "server" if we_are_client else "client")
    if we_are_client:
        if tp.original_destination_connection_id is None:
            raise _tp_error("server sent no original_destination_connection_id")
        if tp.original_destination_connection_id != original_dcid:
            raise _tp_error("original_destination_connection_id does not match")
    if we_are_client and retry_scid is not None:
        if tp.retry_source_connection_id is None:
            raise _tp_error("no retry_source_connection_id after a Retry")
        if tp.retry_source_connection_id != retry_scid:
            raise _tp_error("retry_source_connection_id does not match the Retry")
    elif tp.retry_source_connection_id is not None:
        raise _tp_error("retry_source_connection_id without a Retry")
    if tp.initial_source_connection_id is None:
        raise _tp_error("no initial_source_connection_id")
    if tp.initial_source_connection_id != peer_cid:
        raise _tp_error("initial_source_connection_id does not match the peer's CID")
    if tp.max_idle_timeout and tp.max_idle_timeout < 1000:
        raise _tp_error("max_idle_timeout under one second")
    if tp.max_udp_payload_size is not None and tp.max_udp_payload_size > 65527:
        raise _tp_error("max_udp_payload_size over 65527")
    if tp.max_ack_delay is not None and tp.max_ack_delay >= 16384:
        raise _tp_error("max_ack_delay")
    if tp.active_connection_id_limit is not None and not 2 <= tp.active_connection_id_limit <= 8:
        raise _tp_error("active_connection_id_limit outside [2, 8]")
    if tp.max_datagram_frame_size and tp.max_datagram_frame_size < 1200:
        raise _tp_error("max_datagram_frame_size under 1200")
    disable_1rtt = False
    for pid, value in tp.unknown:
        if pid == DISABLE_1RTT_ID:
            if value and we_are_client:
                raise _tp_error("disable_1rtt_encryption with a value")
            disable_1rtt = True
    vi = tp.version_information
    if vi is not None and not we_are_client and vi.chosen_version not in vi.available_versions:
        raise _tp_error("version_information: chosen version not among the available ones")

    f = dict(PEER_DEFAULTS)
    for name, value in (
        ("max_stream_data_bidi_local", tp.initial_max_stream_data_bidi_local),
        ("max_stream_data_bidi_remote", tp.initial_max_stream_data_bidi_remote),
        ("max_stream_data_uni", tp.initial_max_stream_data_uni),
        ("max_data", tp.initial_max_data),
        ("max_udp_payload_size", tp.max_udp_payload_size),
        ("ack_delay_exponent", tp.ack_delay_exponent),
        ("active_connection_id_limit", tp.active_connection_id_limit),
    ):
        if value is not None:
            f[name] = value
    if tp.initial_max_streams_bidi is not None:
        f["max_streams_bidi"] = min(tp.initial_max_streams_bidi, MAX_STREAMS)
    if tp.initial_max_streams_uni is not None:
        f["max_streams_uni"] = min(tp.initial_max_streams_uni, MAX_STREAMS)
    if tp.max_idle_timeout is not None:
        f["max_idle_timeout"] = min(tp.max_idle_timeout * 1000, 0xFFFFFFFF)
    if tp.max_ack_delay is not None:
        f["max_ack_delay"] = tp.max_ack_delay * 1000
    if tp.max_datagram_frame_size:
        f["max_datagram_frame_size"] = min(tp.max_datagram_frame_size, 65535)
    f["disable_active_migration"] = int(tp.disable_active_migration)
    f["grease_quic_bit"] = int(tp.grease_quic_bit)
    f["disable_1rtt_encryption"] = int(disable_1rtt)
    f["stateless_reset"] = int(tp.stateless_reset_token is not None)
    if vi is not None:
        f["disable_compatible_version"] = 0
    return PeerParams(f, vi, tp.stateless_reset_token, tp.initial_source_connection_id)


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
