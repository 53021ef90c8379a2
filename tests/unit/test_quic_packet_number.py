"""Packet number encoding and recovery (RFC 9000 App. A.2, A.3)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quichsd.quic.packet_number import decode_packet_number, encode_packet_number

PN: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parent.parent / "vectors" / "rfc9000_varint_tp.json").read_text()
)["packet_numbers"]


@pytest.mark.parametrize("case", PN["appendix_a2_encoding_examples"], ids=lambda c: c["full_pn"])
def test_appendix_a2_encoding(case: dict[str, Any]) -> None:
    encoded = encode_packet_number(int(case["full_pn"], 16), int(case["largest_acked"], 16))
    assert 8 * len(encoded) == case["encoding_bits"]
    assert encoded.hex() == case["truncated_pn_bytes_computed_by_us"]


def test_appendix_a3_decoding() -> None:
    case = PN["appendix_a3_decoding_example"]
    decoded = decode_packet_number(
        int(case["largest_pn"], 16), int(case["truncated_pn"], 16), case["pn_nbits"]
    )
    assert decoded == int(case["decoded_pn"], 16)


def test_first_packet_without_ack() -> None:
    assert encode_packet_number(0, None) == b"\x00"
    assert decode_packet_number(-1, 0, 8) == 0


def test_power_of_two_in_flight_fits_one_byte() -> None:
    # 128 in flight: log2(128) + 1 = 8 bits are enough.
    assert len(encode_packet_number(128, 0)) == 1
    assert len(encode_packet_number(129, 0)) == 2


def test_too_many_in_flight() -> None:
    with pytest.raises(ValueError):
        encode_packet_number((1 << 31) + 1, 0)
    with pytest.raises(ValueError):
        encode_packet_number(5, 5)


@given(
    st.integers(min_value=-1, max_value=(1 << 40)),
    st.integers(min_value=1, max_value=(1 << 31) - 1),
)
def test_round_trip(largest_acked: int, in_flight: int) -> None:
    full_pn = largest_acked + in_flight
    encoded = encode_packet_number(full_pn, None if largest_acked < 0 else largest_acked)
    # The receiver has seen at least up to largest_acked, at most full_pn - 1.
    for largest_received in {largest_acked, full_pn - 1}:
        got = decode_packet_number(largest_received, int.from_bytes(encoded), 8 * len(encoded))
        assert got == full_pn
