"""Packet protection, byte-exact against RFC 9001 App. A and RFC 9369 App. A."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from quichsd.abi import lib
from quichsd.hkdf import hkdf_expand_label, hkdf_extract, hkdf_label
from quichsd.quic.packet_protection import (
    AES_128_GCM,
    AES_256_GCM,
    CHACHA20_POLY1305,
    CIPHERS,
    PacketKey,
    UnprotectError,
    cipher_for_tls_suite,
    initial_keys,
    initial_secrets,
    retry_integrity_tag,
    verify_retry_integrity,
)
from quichsd.quic.versions import QUIC_V1, QUIC_V2, QuicVersion

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
CASES = [
    (QUIC_V1, json.loads((VECTORS / "rfc9001_initial.json").read_text())),
    (QUIC_V2, json.loads((VECTORS / "rfc9369_v2.json").read_text())),
]
IDS = ["v1", "v2"]
versions = pytest.mark.parametrize(("version", "vec"), CASES, ids=IDS)


def h(s: str) -> bytes:
    return bytes.fromhex(s)


# ---- A.1 keys -----------------------------------------------------------------------------


@versions
def test_hkdf_label_bytes(version: QuicVersion, vec: dict[str, Any]) -> None:
    lengths = {"client in": 32, "server in": 32, "key": 16, "iv": 12, "hp": 16}
    for label, expected in vec["A.1_keys"]["hkdf_label_bytes"].items():
        length = lengths[label if label.endswith(" in") else label.split()[-1]]
        assert hkdf_label(label.encode(), b"", length).hex() == expected


@versions
def test_initial_secrets(version: QuicVersion, vec: dict[str, Any]) -> None:
    keys = vec["A.1_keys"]
    dcid = h(keys["client_dcid"])
    initial = hkdf_extract(hashes.SHA256(), version.initial_salt, dcid)
    assert initial.hex() == keys["initial_secret"]
    client, server = initial_secrets(dcid, version)
    assert client.hex() == keys["client"]["initial_secret"]
    assert server.hex() == keys["server"]["initial_secret"]


@versions
def test_initial_key_iv_hp(version: QuicVersion, vec: dict[str, Any]) -> None:
    keys = vec["A.1_keys"]
    client, server = initial_keys(h(keys["client_dcid"]), version)
    for key, side in ((client, "client"), (server, "server")):
        assert key.cipher is AES_128_GCM
        assert key.key.hex() == keys[side]["key"]
        assert key.iv.hex() == keys[side]["iv"]
        assert key.hp.hex() == keys[side]["hp"]


# ---- A.2 client Initial --------------------------------------------------------------------


def client_key(version: QuicVersion, vec: dict[str, Any]) -> PacketKey:
    return initial_keys(h(vec["A.1_keys"]["client_dcid"]), version)[0]


def server_key(version: QuicVersion, vec: dict[str, Any]) -> PacketKey:
    return initial_keys(h(vec["A.1_keys"]["client_dcid"]), version)[1]


@versions
def test_client_initial_pieces(version: QuicVersion, vec: dict[str, Any]) -> None:
    a2 = vec["A.2_client_initial"]
    key = client_key(version, vec)
    assert key.nonce(a2["packet_number"]).hex() == a2["derived_by_us"]["nonce"]
    assert key.header_mask(h(a2["sample"])).hex() == a2["mask"]
    payload = h(a2["derived_by_us"]["unprotected_payload_full"])
    ciphertext = key.encrypt(a2["packet_number"], h(a2["unprotected_header"]), payload)
    assert ciphertext.hex() == a2["derived_by_us"]["ciphertext_with_tag"]


@versions
def test_client_initial_protect(version: QuicVersion, vec: dict[str, Any]) -> None:
    a2 = vec["A.2_client_initial"]
    payload = h(a2["derived_by_us"]["unprotected_payload_full"])
    assert len(payload) == a2["payload_length_with_padding"]
    assert payload.startswith(h(a2["crypto_frame"]))
    key = client_key(version, vec)
    packet = key.protect(h(a2["unprotected_header"]), payload, a2["packet_number"])
    assert len(packet) == 1200
    assert packet[:22].hex() == a2["protected_header"]
    assert packet.hex() == a2["protected_packet"]


@versions
def test_client_initial_unprotect(version: QuicVersion, vec: dict[str, Any]) -> None:
    a2 = vec["A.2_client_initial"]
    # The server derives the same client key from the DCID it received.
    header, payload, pn = client_key(version, vec).unprotect(h(a2["protected_packet"]), 18)
    assert header.hex() == a2["unprotected_header"]
    assert payload.hex() == a2["derived_by_us"]["unprotected_payload_full"]
    assert pn == a2["packet_number"]


# ---- A.3 server Initial --------------------------------------------------------------------


@versions
def test_server_initial_protect(version: QuicVersion, vec: dict[str, Any]) -> None:
    a3 = vec["A.3_server_initial"]
    key = server_key(version, vec)
    assert key.nonce(a3["packet_number"]).hex() == a3["derived_by_us"]["nonce"]
    assert key.header_mask(h(a3["sample"])).hex() == a3["mask"]
    packet = key.protect(h(a3["unprotected_header"]), h(a3["payload"]), a3["packet_number"])
    assert packet[: len(h(a3["protected_header"]))].hex() == a3["protected_header"]
    assert packet.hex() == a3["protected_packet"]


@versions
def test_server_initial_unprotect(version: QuicVersion, vec: dict[str, Any]) -> None:
    a3 = vec["A.3_server_initial"]
    pn_offset = len(h(a3["unprotected_header"])) - a3["packet_number_length"]
    header, payload, pn = server_key(version, vec).unprotect(h(a3["protected_packet"]), pn_offset)
    assert (header.hex(), payload.hex(), pn) == (a3["unprotected_header"], a3["payload"], 1)


# ---- A.4 Retry -----------------------------------------------------------------------------


@versions
def test_retry_integrity_tag(version: QuicVersion, vec: dict[str, Any]) -> None:
    a4 = vec["A.4_retry"]
    retry = h(a4["retry_packet"])
    odcid = h(a4["original_destination_connection_id"])
    tag = retry_integrity_tag(version, odcid, retry[:-16])
    assert tag.hex() == a4["derived_by_us"]["integrity_tag"]
    assert retry[-16:] == tag
    assert verify_retry_integrity(version, odcid, retry)


@versions
def test_retry_integrity_rejects_changes(version: QuicVersion, vec: dict[str, Any]) -> None:
    a4 = vec["A.4_retry"]
    retry = h(a4["retry_packet"])
    odcid = h(a4["original_destination_connection_id"])
    assert not verify_retry_integrity(version, odcid[:-1] + b"\x00", retry)
    assert not verify_retry_integrity(version, odcid, retry[:-1] + bytes((retry[-1] ^ 1,)))
    assert not verify_retry_integrity(version, odcid, retry[:10])
    other = QUIC_V2 if version is QUIC_V1 else QUIC_V1
    assert not verify_retry_integrity(other, odcid, retry)


# ---- A.5 ChaCha20-Poly1305 short header ----------------------------------------------------


def chacha_key(version: QuicVersion, vec: dict[str, Any]) -> PacketKey:
    return PacketKey(CHACHA20_POLY1305, h(vec["A.5_chacha20_short_header"]["secret"]), version)


@versions
def test_chacha_keys(version: QuicVersion, vec: dict[str, Any]) -> None:
    a5 = vec["A.5_chacha20_short_header"]
    key = chacha_key(version, vec)
    assert key.key.hex() == a5["key"]
    assert key.iv.hex() == a5["iv"]
    assert key.hp.hex() == a5["hp"]
    assert key.nonce(a5["packet_number"]).hex() == a5["nonce"]
    assert key.header_mask(h(a5["sample"])).hex() == a5["mask"]


@versions
def test_chacha_key_update_secret(version: QuicVersion, vec: dict[str, Any]) -> None:
    a5 = vec["A.5_chacha20_short_header"]
    key = chacha_key(version, vec)
    updated = key.next_phase()
    assert updated.secret.hex() == a5["ku"]
    # RFC 9001 §6: the header protection key is not updated.
    assert updated.hp == key.hp
    assert updated.key != key.key


@versions
def test_chacha_short_header_protect(version: QuicVersion, vec: dict[str, Any]) -> None:
    a5 = vec["A.5_chacha20_short_header"]
    packet = chacha_key(version, vec).protect(
        h(a5["unprotected_header"]), h(a5["payload_plaintext"]), a5["packet_number"]
    )
    assert packet[4:].hex() == a5["payload_ciphertext"]
    assert packet[:4].hex() == a5["protected_header"]
    assert packet.hex() == a5["protected_packet"]


@versions
def test_chacha_short_header_unprotect(version: QuicVersion, vec: dict[str, Any]) -> None:
    a5 = vec["A.5_chacha20_short_header"]
    pn = a5["packet_number"]
    header, payload, got = chacha_key(version, vec).unprotect(
        h(a5["protected_packet"]), 1 + len(h(a5["dcid"])), largest_pn=pn - 1
    )
    assert (header.hex(), payload.hex(), got) == (a5["unprotected_header"], "01", pn)


# ---- failures and other ciphers ------------------------------------------------------------


@versions
def test_unprotect_tampered_packet(version: QuicVersion, vec: dict[str, Any]) -> None:
    packet = bytearray(h(vec["A.2_client_initial"]["protected_packet"]))
    packet[100] ^= 0x01
    with pytest.raises(UnprotectError):
        client_key(version, vec).unprotect(bytes(packet), 18)
    # Wrong direction's key.
    with pytest.raises(UnprotectError):
        server_key(version, vec).unprotect(h(vec["A.2_client_initial"]["protected_packet"]), 18)


def test_unprotect_too_short_for_sample() -> None:
    key = PacketKey(AES_128_GCM, b"\x00" * 32, QUIC_V1)
    with pytest.raises(UnprotectError):
        key.unprotect(b"\x40" + b"\x00" * 10, 1)


def test_protect_too_short_for_sample() -> None:
    key = PacketKey(AES_128_GCM, b"\x00" * 32, QUIC_V1)
    with pytest.raises(ValueError):
        key.protect(b"\x40\x00", b"", 0)  # 1-byte pn + 0 payload + tag: 3 bytes short


def test_secret_length_checked() -> None:
    with pytest.raises(ValueError):
        PacketKey(AES_256_GCM, b"\x00" * 32, QUIC_V1)


@pytest.mark.parametrize("kernel_type", sorted(CIPHERS))
@pytest.mark.parametrize("version", [QUIC_V1, QUIC_V2], ids=IDS)
def test_round_trip_every_cipher(kernel_type: int, version: QuicVersion) -> None:
    cipher = CIPHERS[kernel_type]
    secret = bytes(range(cipher.secret_len))
    key = PacketKey(cipher, secret, version)
    assert len(key.key) == len(key.hp) == cipher.key_len and len(key.iv) == 12
    # Long header Handshake packet with a 2-byte packet number and a short header one.
    long_header = b"\xe1" + version.number.to_bytes(4, "big") + b"\x00\x00\x40\x20\x01\x2c"
    short_header = b"\x41\xab\x01\x2c"
    for header in (long_header, short_header):
        packet = key.protect(header, b"payload-bytes", 300)
        got = key.unprotect(packet, len(header) - 2, largest_pn=299)
        assert got == (header, b"payload-bytes", 300)


def test_cipher_lookup_by_tls_suite_and_kernel_type() -> None:
    assert cipher_for_tls_suite(0x1301) is AES_128_GCM
    assert cipher_for_tls_suite(0x1302) is AES_256_GCM
    assert cipher_for_tls_suite(0x1303) is CHACHA20_POLY1305
    assert CIPHERS[lib.TLS_CIPHER_CHACHA20_POLY1305] is CHACHA20_POLY1305
    assert AES_256_GCM.secret_len == 48


def test_hkdf_expand_label_matches_manual_info() -> None:
    # RFC 8446 §7.1 with a non-empty context.
    secret = b"\x01" * 32
    info = b"\x00\x20" + b"\x0a" + b"tls13 test" + b"\x03abc"
    expected = HKDFExpand(hashes.SHA256(), 32, info).derive(secret)
    assert hkdf_expand_label(hashes.SHA256(), secret, b"test", b"abc", 32) == expected
