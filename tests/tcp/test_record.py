"""The TLS 1.3 record layer (quichsd/tcp/record.py) against RFC 8448 §3's records, and the
alert each malformed record gets (RFC 8446 §5)."""
from __future__ import annotations

import pytest

from quichsd.tcp.record import (
    HEADER_LEN,
    MAX_CIPHERTEXT,
    MAX_PLAINTEXT,
    ContentType,
    RecordProtection,
    TrafficKeys,
    alert_payload,
    parse_alert,
    parse_header,
    plaintext_records,
)
from quichsd.tls.constants import AlertDescription, CipherSuite
from quichsd.tls.errors import TlsError
from quichsd.tls.suites import SUITES
from tests.vectors import rfc8448

TRACE = rfc8448("simple_1rtt")
AES128 = SUITES[CipherSuite.AES_128_GCM_SHA256]
_KINDS = {"handshake": ContentType.HANDSHAKE, "application_data": ContentType.APPLICATION_DATA,
          "alert": ContentType.ALERT}


def _keys(name: str) -> TrafficKeys:
    return TrafficKeys.from_secret(AES128, bytes.fromhex(TRACE["traffic_keys"][name]["secret"]))


PROTECTED = [r for r in TRACE["records"] if isinstance(r.get("protection"), dict)]
PLAIN = [r for r in TRACE["records"] if r.get("protection") == "plaintext"]


@pytest.mark.parametrize("name", sorted(TRACE["traffic_keys"]))
def test_traffic_key_and_iv_match_rfc8448(name: str) -> None:
    expected = TRACE["traffic_keys"][name]
    keys = _keys(name)
    assert (keys.key.hex(), keys.iv.hex()) == (expected["key"], expected["iv"])


@pytest.mark.parametrize("record", PROTECTED, ids=lambda r: f"{r['party']}-{r['kind']}-{len(r['payload'])}")
def test_seal_and_open_give_rfc8448_records(record: dict) -> None:
    protection = record["protection"]
    payload = bytes.fromhex(record["payload"])
    complete = bytes.fromhex(record["complete_record"])
    sealer = RecordProtection(_keys(protection["write_key"]), protection["sequence_number"])
    assert sealer.seal(_KINDS[record["kind"]], payload) == complete
    assert sealer.sequence == protection["sequence_number"] + 1
    opener = RecordProtection(_keys(protection["write_key"]), protection["sequence_number"])
    header = parse_header(complete[:HEADER_LEN], protected=True)
    assert header.length == len(complete) - HEADER_LEN
    assert opener.open(complete[:HEADER_LEN], complete[HEADER_LEN:]) == (_KINDS[record["kind"]], payload)


@pytest.mark.parametrize("record", PLAIN, ids=lambda r: r["party"])
def test_plaintext_records_match_rfc8448(record: dict) -> None:
    ours = plaintext_records(ContentType.HANDSHAKE, bytes.fromhex(record["payload"]))
    theirs = bytes.fromhex(record["complete_record"])
    # RFC 8448's ClientHello record says 0x0301; RFC 8446 §5.1 allows it, we send 0x0303.
    assert ours[1:3] == b"\x03\x03" and theirs[1:3] in (b"\x03\x01", b"\x03\x03")
    assert ours[:1] + ours[3:] == theirs[:1] + theirs[3:]


def test_plaintext_records_split_at_2_14() -> None:
    data = bytes(range(256)) * 80  # 20480 bytes: two records
    out = plaintext_records(ContentType.HANDSHAKE, data)
    first = parse_header(out[:HEADER_LEN], protected=False)
    assert first.length == MAX_PLAINTEXT
    second = parse_header(out[HEADER_LEN + MAX_PLAINTEXT:][:HEADER_LEN], protected=False)
    assert second.length == len(data) - MAX_PLAINTEXT
    assert out[HEADER_LEN:HEADER_LEN + MAX_PLAINTEXT] + out[2 * HEADER_LEN + MAX_PLAINTEXT:] == data


def test_padding_is_stripped() -> None:
    keys = _keys("client_application_data")
    record = RecordProtection(keys).seal(ContentType.APPLICATION_DATA, b"data", padding=100)
    assert RecordProtection(keys).open(record[:HEADER_LEN], record[HEADER_LEN:]) == (
        ContentType.APPLICATION_DATA, b"data"
    )


def _alert(exc: pytest.ExceptionInfo[TlsError]) -> AlertDescription:
    return exc.value.alert


@pytest.mark.parametrize(
    ("header", "protected", "alert"),
    [
        (bytes((24, 3, 3, 0, 1)), False, AlertDescription.unexpected_message),  # heartbeat: unknown here
        (bytes((99, 3, 3, 0, 1)), True, AlertDescription.unexpected_message),
        (bytes((22, 3, 3)) + (MAX_PLAINTEXT + 1).to_bytes(2, "big"), False, AlertDescription.record_overflow),
        (bytes((23, 3, 3)) + (MAX_CIPHERTEXT + 1).to_bytes(2, "big"), True, AlertDescription.record_overflow),
        # Under keys only application_data may be a TLSCiphertext's length.
        (bytes((21, 3, 3)) + (MAX_PLAINTEXT + 1).to_bytes(2, "big"), True, AlertDescription.record_overflow),
        (bytes((22, 3, 3, 0)), False, AlertDescription.decode_error),
    ],
)
def test_bad_headers(header: bytes, protected: bool, alert: AlertDescription) -> None:
    with pytest.raises(TlsError) as exc:
        parse_header(header, protected)
    assert _alert(exc) == alert


def test_largest_ciphertext_is_accepted() -> None:
    header = bytes((23, 3, 3)) + MAX_CIPHERTEXT.to_bytes(2, "big")
    assert parse_header(header, protected=True).length == MAX_CIPHERTEXT


def _sealed(content: bytes, content_type: ContentType = ContentType.HANDSHAKE, padding: int = 0) -> bytes:
    return RecordProtection(_keys("server_handshake_data")).seal(content_type, content, padding)


def _open(record: bytes) -> tuple[ContentType, bytes]:
    return RecordProtection(_keys("server_handshake_data")).open(record[:HEADER_LEN], record[HEADER_LEN:])


@pytest.mark.parametrize(
    "mangle",
    [
        lambda r: r[:-1] + bytes((r[-1] ^ 1,)),  # the tag
        lambda r: r[:HEADER_LEN] + bytes((r[HEADER_LEN] ^ 1,)) + r[HEADER_LEN + 1:],  # the ciphertext
        lambda r: bytes((23, 3, 1)) + r[3:],  # the header, i.e. the additional data
        lambda r: r[:HEADER_LEN] + r[HEADER_LEN:HEADER_LEN + 10],  # shorter than a tag
    ],
)
def test_tampered_records_are_bad_record_mac(mangle) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TlsError) as exc:
        _open(mangle(_sealed(b"\x14\x00\x00\x00")))
    assert _alert(exc) == AlertDescription.bad_record_mac


def test_record_with_only_padding_is_unexpected_message() -> None:
    keys = _keys("server_handshake_data")
    sealer = RecordProtection(keys)
    # seal() always appends a type: build an all-zero inner plaintext through the AEAD directly.
    header = bytes((23, 3, 3, 0, 16 + 8))
    record = header + sealer._aead.encrypt(sealer._next_nonce(), bytes(8), header)
    with pytest.raises(TlsError) as exc:
        _open(record)
    assert _alert(exc) == AlertDescription.unexpected_message


def test_protected_change_cipher_spec_is_unexpected_message() -> None:
    with pytest.raises(TlsError) as exc:
        _open(_sealed(b"\x01", ContentType.CHANGE_CIPHER_SPEC))
    assert _alert(exc) == AlertDescription.unexpected_message


def test_inner_plaintext_over_limit_is_record_overflow() -> None:
    # 2^14 content + type + 1 padding byte: one byte over TLSInnerPlaintext's limit.
    record = _sealed(bytes(MAX_PLAINTEXT - 1) + b"\x01", padding=0)
    assert _open(record)[1][-1] == 1  # the largest legal one opens
    sealer = RecordProtection(_keys("server_handshake_data"))
    inner = b"\x01" * (MAX_PLAINTEXT + 1) + bytes((ContentType.HANDSHAKE,))
    header = bytes((23, 3, 3)) + (len(inner) + 16).to_bytes(2, "big")
    big = header + sealer._aead.encrypt(sealer._next_nonce(), inner, header)
    with pytest.raises(TlsError) as exc:
        _open(big)
    assert _alert(exc) == AlertDescription.record_overflow


def test_sequence_numbers_make_distinct_nonces() -> None:
    sealer = RecordProtection(_keys("client_application_data"))
    first = sealer.seal(ContentType.APPLICATION_DATA, b"x")
    second = sealer.seal(ContentType.APPLICATION_DATA, b"x")
    assert first != second
    opener = RecordProtection(_keys("client_application_data"))
    with pytest.raises(TlsError):  # out of order: the second record under sequence 0
        opener.open(second[:HEADER_LEN], second[HEADER_LEN:])


def test_alerts() -> None:
    assert alert_payload(AlertDescription.bad_certificate) == b"\x02\x2a"
    assert parse_alert(b"\x02\x30") == AlertDescription.unknown_ca
    assert parse_alert(b"\x02\xfe") == 0xFE
    for bad in (b"", b"\x02", b"\x02\x28\x02\x28"):
        with pytest.raises(TlsError) as exc:
            parse_alert(bad)
        assert _alert(exc) == AlertDescription.decode_error
