"""RFC 9000 §16 varints against Table 4 and the App. A.1 examples."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quichsd.quic.varint import (
    MAX_VARINT,
    VarintError,
    VarintTruncated,
    decode_varint,
    encode_varint,
    encode_varint_fixed,
    varint_size,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parent.parent / "vectors" / "rfc9000_varint_tp.json").read_text()
)["varint"]


@pytest.mark.parametrize("case", VECTORS["appendix_a1_examples"], ids=lambda c: c["encoded"])
def test_appendix_a1_decode(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["encoded"])
    assert decode_varint(data, 0) == (case["value"], case["length"])


@pytest.mark.parametrize("case", VECTORS["appendix_a1_examples"], ids=lambda c: c["encoded"])
def test_appendix_a1_encode_minimal(case: dict[str, Any]) -> None:
    minimal = case.get("minimal_encoding_hex", case["encoded"])
    assert encode_varint(case["value"]).hex() == minimal


def test_non_minimal_0x4025_is_37() -> None:
    assert decode_varint(bytes.fromhex("4025")) == (37, 2)
    assert encode_varint_fixed(37, 2).hex() == "4025"


@pytest.mark.parametrize(
    "case", VECTORS["boundary_values_computed_by_us"], ids=lambda c: str(c["value"])
)
def test_boundaries(case: dict[str, Any]) -> None:
    encoded = bytes.fromhex(case["minimal_encoding"])
    assert encode_varint(case["value"]) == encoded
    assert varint_size(case["value"]) == len(encoded)
    assert decode_varint(encoded) == (case["value"], len(encoded))


@pytest.mark.parametrize("row", VECTORS["table4"], ids=lambda r: r["2msb"])
def test_table4_max_per_length(row: dict[str, Any]) -> None:
    length = row["length"]
    top = encode_varint_fixed(row["max"], length)
    assert top[0] >> 6 == int(row["2msb"], 2)
    assert decode_varint(top) == (row["max"], length)
    with pytest.raises(VarintError):
        encode_varint_fixed(row["max"] + 1, length)


def test_decode_at_offset() -> None:
    data = b"\xaa" + bytes.fromhex("7bbd") + b"\x25"
    assert decode_varint(data, 1) == (15293, 3)
    assert decode_varint(data, 3) == (37, 4)


@pytest.mark.parametrize("data", ["", "40", "80ffff", "c0000000000000"])
def test_truncation_raises(data: str) -> None:
    with pytest.raises(VarintTruncated):
        decode_varint(bytes.fromhex(data), 0)


def test_truncated_is_a_value_error() -> None:
    assert issubclass(VarintTruncated, VarintError)
    assert issubclass(VarintError, ValueError)


@pytest.mark.parametrize("value", [-1, MAX_VARINT + 1])
def test_out_of_range(value: int) -> None:
    with pytest.raises(VarintError):
        encode_varint(value)


def test_bad_forced_length() -> None:
    with pytest.raises(VarintError):
        encode_varint_fixed(1, 3)


@given(st.integers(min_value=0, max_value=MAX_VARINT))
def test_round_trip(value: int) -> None:
    encoded = encode_varint(value)
    assert decode_varint(encoded + b"tail") == (value, len(encoded))


@given(st.integers(min_value=0, max_value=MAX_VARINT), st.sampled_from([1, 2, 4, 8]))
def test_forced_length_round_trip(value: int, length: int) -> None:
    if value >= 1 << (8 * length - 2):
        with pytest.raises(VarintError):
            encode_varint_fixed(value, length)
    else:
        assert decode_varint(encode_varint_fixed(value, length)) == (value, length)
