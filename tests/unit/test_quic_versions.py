"""QUIC v1/v2 descriptors against RFC 9001 and RFC 9369 constants."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes

from quichsd.abi import lib
from quichsd.hkdf import hkdf_expand_label
from quichsd.quic.versions import (
    QUIC_V1,
    QUIC_V2,
    SUPPORTED_VERSIONS,
    LongPacketType,
    QuicVersion,
    get_version,
)

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
CASES = [
    (QUIC_V1, json.loads((VECTORS / "rfc9001_initial.json").read_text())),
    (QUIC_V2, json.loads((VECTORS / "rfc9369_v2.json").read_text())),
]
IDS = ["v1", "v2"]


@pytest.mark.parametrize(("version", "vec"), CASES, ids=IDS)
def test_constants(version: QuicVersion, vec: dict[str, Any]) -> None:
    c = vec["constants"]
    assert version.number == int(c["version"], 16)
    assert version.initial_salt.hex() == c["initial_salt"]
    labels = c["hkdf_labels"]
    assert version.key_label.decode() == labels["key"]
    assert version.iv_label.decode() == labels["iv"]
    assert version.hp_label.decode() == labels["hp"]
    assert version.ku_label.decode() == labels["ku"]
    assert version.retry_key.hex() == c["retry_integrity"]["key"]
    assert version.retry_nonce.hex() == c["retry_integrity"]["nonce"]


@pytest.mark.parametrize(("version", "vec"), CASES, ids=IDS)
def test_retry_key_and_nonce_derive_from_secret(version: QuicVersion, vec: dict[str, Any]) -> None:
    secret = bytes.fromhex(vec["constants"]["retry_integrity"]["secret"])
    sha256 = hashes.SHA256()
    assert hkdf_expand_label(sha256, secret, version.key_label, b"", 16) == version.retry_key
    assert hkdf_expand_label(sha256, secret, version.iv_label, b"", 12) == version.retry_nonce


@pytest.mark.parametrize(("version", "vec"), CASES, ids=IDS)
def test_long_header_types(version: QuicVersion, vec: dict[str, Any]) -> None:
    for name, bits in vec["constants"]["long_header_packet_types"].items():
        packet_type = LongPacketType(name)
        assert version.long_type_bits(packet_type) == int(bits, 2)
        first_byte = 0xC0 | (int(bits, 2) << 4) | 0x03
        assert version.long_packet_type(first_byte) is packet_type


def test_v2_numbers_from_rfc9369_derivation() -> None:
    # RFC 9369 §3.1, §3.3.1: v2 constants are truncated SHA-256 of fixed strings.
    assert QUIC_V2.number == int.from_bytes(hashlib.sha256(b"QUICv2 version number").digest()[:4])
    assert QUIC_V2.initial_salt == hashlib.sha256(b"QUICv2 salt").digest()[:20]


def test_versions_match_kernel_abi() -> None:
    assert QUIC_V1.number == lib.QUIC_VERSION_V1
    assert QUIC_V2.number == lib.QUIC_VERSION_V2


def test_lookup() -> None:
    assert get_version(1) is QUIC_V1
    assert get_version(0x6B3343CF) is QUIC_V2
    assert set(SUPPORTED_VERSIONS) == {1, 0x6B3343CF}
    with pytest.raises(KeyError, match="0xff00001d"):
        get_version(0xFF00001D)
    assert {QUIC_V1: "usable as a dict key"}
