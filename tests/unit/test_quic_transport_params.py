"""Transport parameters (RFC 9000 §7.4, §18; RFC 9221, 9287, 9368)."""
from __future__ import annotations

import dataclasses
import json
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quichsd.quic.errors import QuicError, QuicErrorCode
from quichsd.quic.transport_params import (
    PARAMETER_IDS,
    PreferredAddress,
    TransportParameters,
    VersionInformation,
    encode_params,
    is_grease_id,
)
from quichsd.quic.varint import encode_varint

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
RFC9001: dict[str, Any] = json.loads((VECTORS / "rfc9001_initial.json").read_text())
RFC9000: dict[str, Any] = json.loads((VECTORS / "rfc9000_varint_tp.json").read_text())
A2 = RFC9001["A.2_client_initial"]["derived_by_us"]


def record(param_id: int, value: bytes) -> bytes:
    return encode_varint(param_id) + encode_varint(len(value)) + value


def varint_record(param_id: int, value: int) -> bytes:
    return record(param_id, encode_varint(value))


def rejects(data: bytes, sender: str = "server") -> QuicError:
    with pytest.raises(QuicError) as info:
        TransportParameters.decode(data, sender)  # type: ignore[arg-type]
    assert info.value.error_code == QuicErrorCode.TRANSPORT_PARAMETER_ERROR
    assert info.value.error_code == 0x08
    return info.value


# ---- the table ------------------------------------------------------------------------------


def test_table_matches_rfc9000_ids() -> None:
    for entry in RFC9000["transport_parameters"]["ids"]:
        assert PARAMETER_IDS[entry["name"]] == entry["id"]
    assert PARAMETER_IDS["version_information"] == 0x11
    assert PARAMETER_IDS["max_datagram_frame_size"] == 0x20
    assert PARAMETER_IDS["grease_quic_bit"] == 0x2AB2
    assert PARAMETER_IDS["disable_1rtt_encryption"] == 0xBAAD  # draft-banks-quic-disable-encryption


def test_table_matches_dataclass_fields() -> None:
    names = [f.name for f in dataclasses.fields(TransportParameters)]
    assert names[-1] == "unknown"
    assert set(names[:-1]) == set(PARAMETER_IDS)


def test_server_only_set() -> None:
    """A client sending a server-only parameter is a TRANSPORT_PARAMETER_ERROR; every other
    parameter is accepted from either side (RFC 9000 §18.2)."""
    server_only = set()
    for name in PARAMETER_IDS:
        blob = TransportParameters(**{name: getattr(FULL, name)}).encode()  # type: ignore[arg-type]
        assert getattr(TransportParameters.decode(blob, "server"), name) == getattr(FULL, name)
        try:
            TransportParameters.decode(blob, "client")
        except QuicError as exc:
            assert exc.error_code == QuicErrorCode.TRANSPORT_PARAMETER_ERROR
            server_only.add(name)
    assert server_only == set(RFC9000["transport_parameters"]["server_only"])


def test_grease_ids() -> None:
    firsts = RFC9000["transport_parameters"]["reserved_ids_first_values_computed"]
    assert all(is_grease_id(i) for i in firsts)
    assert not any(is_grease_id(i) for i in (0, 26, 28, 0x11, 0x20, 0x2AB2))


# ---- the RFC 9001 A.2 ClientHello ---------------------------------------------------------


def test_decode_rfc9001_client_hello_parameters() -> None:
    blob = bytes.fromhex(A2["quic_transport_parameters_extension_0x39"])
    params = TransportParameters.decode(blob, "client")
    for item in A2["quic_transport_parameters_decoded"]:
        expected = item.get("value_int", bytes.fromhex(item["value_hex"]))
        assert getattr(params, item["name"]) == expected, item["name"]
    decoded_names = {item["name"] for item in A2["quic_transport_parameters_decoded"]}
    for f in dataclasses.fields(TransportParameters):
        if f.name not in decoded_names:
            assert not getattr(params, f.name), f.name  # None, False or []


def test_rfc9001_parameters_re_encode_to_same_records() -> None:
    blob = bytes.fromhex(A2["quic_transport_parameters_extension_0x39"])
    items = sorted(A2["quic_transport_parameters_decoded"], key=lambda i: i["id"])
    # Same records, minimal varints as in the RFC; our encoder orders them by id.
    expected = "".join(item["encoded"] for item in items)
    assert TransportParameters.decode(blob, "client").encode().hex() == expected


# ---- round trips --------------------------------------------------------------------------

FULL = TransportParameters(
    original_destination_connection_id=bytes.fromhex("8394c8f03e515708"),
    max_idle_timeout=30_000,
    stateless_reset_token=bytes(range(16)),
    max_udp_payload_size=1472,
    initial_max_data=2_097_120,
    initial_max_stream_data_bidi_local=1_048_560,
    initial_max_stream_data_bidi_remote=1_048_560,
    initial_max_stream_data_uni=1_048_560,
    initial_max_streams_bidi=100,
    initial_max_streams_uni=100,
    ack_delay_exponent=3,
    max_ack_delay=25,
    disable_active_migration=True,
    preferred_address=PreferredAddress(
        IPv4Address("192.0.2.1"), 4433, IPv6Address("2001:db8::1"), 4433, b"\x01" * 8, b"\xaa" * 16
    ),
    active_connection_id_limit=7,
    initial_source_connection_id=b"\x02" * 8,
    retry_source_connection_id=b"",
    version_information=VersionInformation(0x6B3343CF, (0x6B3343CF, 0x00000001)),
    max_datagram_frame_size=65535,
    grease_quic_bit=True,
    disable_1rtt_encryption=b"",
    unknown=[(0x7F00, b"opaque")],
)


def test_full_round_trip() -> None:
    assert TransportParameters.decode(FULL.encode(), "server") == FULL


def test_empty_round_trip() -> None:
    assert TransportParameters().encode() == b""
    assert TransportParameters.decode(b"", "client") == TransportParameters()


def test_zero_values_are_present_not_absent() -> None:
    params = TransportParameters(max_idle_timeout=0, initial_max_data=0)
    assert params.encode() == bytes.fromhex("010100" "040100")
    assert TransportParameters.decode(params.encode(), "client") == params


def test_kernel_default_client_blob() -> None:
    # spec §5: the kernel's default client blob, in its emission order.
    blob = bytes.fromhex(
        "0f08" "0102030405060708"
        "0504800ffff0" "0604800ffff0" "0704800ffff0"
        "0404801fffe0" "08024064" "09024064"
        "110c000000016b3343cf00000001"
        "010480007530" "0e0107"
    )  # fmt: skip
    params = TransportParameters.decode(blob, "client")
    assert params.initial_max_data == 2_097_120
    assert params.initial_max_stream_data_uni == 1_048_560
    assert params.initial_max_streams_bidi == 100
    assert params.version_information == VersionInformation(1, (0x6B3343CF, 1))
    assert params.max_idle_timeout == 30_000
    assert params.active_connection_id_limit == 7


def test_unknown_kept_grease_dropped() -> None:
    blob = record(27, b"grease") + record(0x1234, b"\x01\x02") + record(31 * 1000 + 27, b"")
    params = TransportParameters.decode(blob, "client")
    assert params.unknown == [(0x1234, b"\x01\x02")]


def test_disable_1rtt_encryption_kept_as_sent() -> None:
    # The draft defines it empty; what a value means is the receiver's call (the kernel's
    # rule is in sock/sim/tparams.py), so the codec keeps it and it is not "unknown".
    for value in (b"", b"\x01"):
        for sender in ("client", "server"):
            params = TransportParameters.decode(record(0xBAAD, value), sender)  # type: ignore[arg-type]
            assert params.disable_1rtt_encryption == value and params.unknown == []


def test_encode_params_in_the_order_given() -> None:
    # The kernel's order (sock/sim/tparams.py) is not the table's: same records, its order.
    blob = encode_params([("initial_source_connection_id", b"\x02" * 8), ("max_idle_timeout", 30_000),
                          ("disable_active_migration", b""), ("grease_quic_bit", True),
                          ("disable_1rtt_encryption", b""),
                          ("version_information", VersionInformation(1, (0x6B3343CF, 1)))])
    assert blob == (record(0x0F, b"\x02" * 8) + varint_record(0x01, 30_000) + record(0x0C, b"")
                    + record(0x2AB2, b"") + record(0xBAAD, b"")
                    + record(0x11, bytes.fromhex("000000016b3343cf00000001")))
    assert TransportParameters.decode(blob, "client") == TransportParameters(
        initial_source_connection_id=b"\x02" * 8, max_idle_timeout=30_000, disable_active_migration=True,
        grease_quic_bit=True, disable_1rtt_encryption=b"",
        version_information=VersionInformation(1, (0x6B3343CF, 1)))


def test_server_only_accepted_from_server() -> None:
    blob = record(0x00, b"\x01" * 8) + record(0x02, b"\x00" * 16) + record(0x10, b"\x03" * 4)
    params = TransportParameters.decode(blob, "server")
    assert params.original_destination_connection_id == b"\x01" * 8
    assert params.retry_source_connection_id == b"\x03" * 4


def test_boundary_values_accepted() -> None:
    blob = (
        varint_record(0x03, 1200)
        + varint_record(0x0A, 20)
        + varint_record(0x0B, (1 << 14) - 1)
        + varint_record(0x0E, 2)
        + varint_record(0x08, 1 << 60)
        + varint_record(0x09, 1 << 60)
    )
    params = TransportParameters.decode(blob, "client")
    assert params.max_udp_payload_size == 1200
    assert params.initial_max_streams_uni == 1 << 60


def test_bad_sender_argument() -> None:
    with pytest.raises(ValueError):
        TransportParameters.decode(b"", "peer")  # type: ignore[arg-type]


# ---- one test per rejection rule ----------------------------------------------------------


def test_reject_duplicate_known_id() -> None:  # RFC 9000 §7.4
    rejects(varint_record(0x04, 1) + varint_record(0x04, 1))


def test_reject_duplicate_unknown_id() -> None:  # RFC 9000 §7.4: any parameter
    rejects(record(0x1234, b"") + record(0x1234, b""))


@pytest.mark.parametrize(
    ("param_id", "value"),
    [(0x00, b"\x01" * 8), (0x02, b"\x00" * 16), (0x0D, b""), (0x10, b"\x01" * 8)],
    ids=["odcid", "stateless_reset_token", "preferred_address", "retry_scid"],
)
def test_reject_server_only_from_client(param_id: int, value: bytes) -> None:  # §18.2
    if param_id == 0x0D:
        value = FULL.encode()  # any content: the id alone is fatal
    err = rejects(record(param_id, value), sender="client")
    assert "client" in err.reason


def test_reject_small_max_udp_payload_size() -> None:  # §18.2: below 1200 invalid
    rejects(varint_record(0x03, 1199))


def test_reject_large_ack_delay_exponent() -> None:  # §18.2: above 20 invalid
    rejects(varint_record(0x0A, 21))


def test_reject_large_max_ack_delay() -> None:  # §18.2: 2^14 or greater invalid
    rejects(varint_record(0x0B, 1 << 14))


@pytest.mark.parametrize("value", [0, 1])
def test_reject_small_active_connection_id_limit(value: int) -> None:  # §18.2: at least 2
    rejects(varint_record(0x0E, value))


@pytest.mark.parametrize("param_id", [0x08, 0x09])
def test_reject_too_many_streams(param_id: int) -> None:  # §4.6: above 2^60
    rejects(varint_record(param_id, (1 << 60) + 1))


@pytest.mark.parametrize("size", [0, 15, 17])
def test_reject_stateless_reset_token_length(size: int) -> None:  # §18.2: 16 bytes
    rejects(record(0x02, b"\x00" * size))


@pytest.mark.parametrize("param_id", [0x0C, 0x2AB2])
def test_reject_empty_param_with_content(param_id: int) -> None:  # §18.2, RFC 9287 §3
    rejects(record(param_id, b"\x00"))


@pytest.mark.parametrize(
    "value",
    ["", "40", "0500", "4005ff"],
    ids=["empty", "truncated-varint", "trailing-byte", "2-byte-varint+1"],
)
def test_reject_varint_length_mismatch(value: str) -> None:  # §18: value = one varint
    rejects(record(0x04, bytes.fromhex(value)))


def test_reject_long_connection_id() -> None:  # §17.2: at most 20 bytes
    rejects(record(0x0F, b"\x01" * 21))


def _preferred(cid: bytes, tail: bytes = b"\xaa" * 16) -> bytes:
    return b"\x00" * 4 + b"\x00\x00" + b"\x00" * 16 + b"\x00\x00" + bytes((len(cid),)) + cid + tail


@pytest.mark.parametrize(
    "value",
    [
        _preferred(b"")[:-1],  # shorter than the fixed part + token
        b"\x00" * 24,  # no CID length byte
        _preferred(b""),  # zero-length CID
        _preferred(b"\x01" * 21),  # CID longer than 20
        _preferred(b"\x01" * 8, b"\xaa" * 15),  # token short
        _preferred(b"\x01" * 8, b"\xaa" * 17),  # trailing byte
    ],
    ids=["short", "no-cid-len", "empty-cid", "cid-21", "token-15", "trailing"],
)
def test_reject_malformed_preferred_address(value: bytes) -> None:  # §18.2
    rejects(record(0x0D, value))


@pytest.mark.parametrize(
    "value",
    ["", "000001", "00000000", "0000000100000001ff", "000000016b3343cf00000000"],
    ids=["empty", "3-bytes", "chosen-zero", "not-multiple-of-4", "available-zero"],
)
def test_reject_malformed_version_information(value: str) -> None:  # RFC 9368 §3
    rejects(record(0x11, bytes.fromhex(value)))


@pytest.mark.parametrize(
    "blob",
    ["40", "0140", "0105", "010480", "ff"],
    ids=["id-truncated", "len-truncated", "value-missing", "value-short", "id-8-bytes-cut"],
)
def test_reject_truncated_record(blob: str) -> None:  # §18: well-formed sequence
    rejects(bytes.fromhex(blob))


# ---- properties ---------------------------------------------------------------------------


@given(st.binary(max_size=300), st.sampled_from(["client", "server"]))
def test_random_bytes_decode_or_quic_error(data: bytes, sender: str) -> None:
    try:
        TransportParameters.decode(data, sender)  # type: ignore[arg-type]
    except QuicError as exc:
        assert exc.error_code == QuicErrorCode.TRANSPORT_PARAMETER_ERROR


_varint = st.integers(min_value=0, max_value=(1 << 62) - 1)
_cid = st.binary(max_size=20)
_params = st.builds(
    TransportParameters,
    original_destination_connection_id=st.none() | _cid,
    max_idle_timeout=st.none() | _varint,
    stateless_reset_token=st.none() | st.binary(min_size=16, max_size=16),
    max_udp_payload_size=st.none() | st.integers(min_value=1200, max_value=(1 << 62) - 1),
    initial_max_data=st.none() | _varint,
    initial_max_streams_bidi=st.none() | st.integers(min_value=0, max_value=1 << 60),
    ack_delay_exponent=st.none() | st.integers(min_value=0, max_value=20),
    max_ack_delay=st.none() | st.integers(min_value=0, max_value=(1 << 14) - 1),
    disable_active_migration=st.booleans(),
    active_connection_id_limit=st.none() | st.integers(min_value=2, max_value=(1 << 62) - 1),
    initial_source_connection_id=st.none() | _cid,
    version_information=st.none()
    | st.builds(
        VersionInformation,
        st.integers(min_value=1, max_value=0xFFFFFFFF),
        st.lists(st.integers(min_value=1, max_value=0xFFFFFFFF), max_size=4).map(tuple),
    ),
    max_datagram_frame_size=st.none() | _varint,
    grease_quic_bit=st.booleans(),
    disable_1rtt_encryption=st.none() | st.binary(max_size=4),
    unknown=st.lists(
        st.tuples(
            st.integers(min_value=0x40, max_value=0xFFFF).filter(
                lambda i: not is_grease_id(i) and i not in PARAMETER_IDS.values()
            ),
            st.binary(max_size=8),
        ),
        max_size=3,
        unique_by=lambda t: t[0],
    ),
)


@given(_params)
def test_round_trip_property(params: TransportParameters) -> None:
    assert TransportParameters.decode(params.encode(), "server") == params
