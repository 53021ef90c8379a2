"""The TLS 1.3 record layer for a handshake over TCP (RFC 8446 §5), sans-I/O.

What the handshake needs and nothing more: plaintext records (ClientHello, ServerHello,
HelloRetryRequest, alerts before keys), records protected with a traffic key (§5.2-§5.3),
the change_cipher_spec rule of §5 (middlebox compatibility: tolerated, dropped) and the
alert for every malformed record. After the handshake the kernel's kTLS takes the
application traffic keys; RecordProtection is still usable to exchange application data
in userspace (the interop tests do, where the host has no kTLS).

The caller reads a record in two exact steps (HEADER_LEN bytes, then the body length that
parse_header returns), so not a byte past the last handshake record is taken off the
socket: whatever follows belongs to kTLS.
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag

from ..hkdf import hkdf_expand_label
from ..tls.constants import AlertDescription
from ..tls.errors import TlsError, decode_error, unexpected_message
from ..tls.suites import SuiteInfo

__all__ = [
    "HEADER_LEN",
    "MAX_CIPHERTEXT",
    "MAX_PLAINTEXT",
    "ContentType",
    "RecordHeader",
    "RecordProtection",
    "TrafficKeys",
    "alert_payload",
    "parse_alert",
    "parse_header",
    "plaintext_records",
]

HEADER_LEN = 5
MAX_PLAINTEXT = 1 << 14  # RFC 8446 §5.1: TLSPlaintext.length and TLSInnerPlaintext content
MAX_CIPHERTEXT = MAX_PLAINTEXT + 256  # RFC 8446 §5.2
TAG_LEN = 16  # all three AEADs of RFC 8446 §B.4 we offer
LEGACY_RECORD_VERSION = 0x0303
_HEADER = struct.Struct("!BHH")
_FATAL = 2


class ContentType(enum.IntEnum):
    """RFC 8446 §5.1 ContentType."""

    CHANGE_CIPHER_SPEC = 20
    ALERT = 21
    HANDSHAKE = 22
    APPLICATION_DATA = 23


_KNOWN_TYPES = frozenset(int(t) for t in ContentType)


@dataclass(frozen=True, slots=True)
class RecordHeader:
    content_type: ContentType
    length: int


def parse_header(header: bytes, protected: bool) -> RecordHeader:
    """The 5-byte record header (RFC 8446 §5.1). `protected`: the reader has a traffic key,
    so a record may be as long as a TLSCiphertext. legacy_record_version is ignored, as §5.1
    says. TlsError with unexpected_message for an unknown type, record_overflow for a
    length over the limit."""
    if len(header) != HEADER_LEN:
        raise decode_error("truncated record header")
    content_type, _version, length = _HEADER.unpack(header)
    if content_type not in _KNOWN_TYPES:
        raise unexpected_message(f"record of unknown content type {content_type}")
    limit = MAX_CIPHERTEXT if protected and content_type == ContentType.APPLICATION_DATA else MAX_PLAINTEXT
    if length > limit:
        raise TlsError(AlertDescription.record_overflow, f"record of {length} bytes (limit {limit})")
    return RecordHeader(ContentType(content_type), length)


def plaintext_records(content_type: ContentType, payload: bytes) -> bytes:
    """`payload` as TLSPlaintext records of at most 2^14 bytes each (RFC 8446 §5.1)."""
    out = bytearray()
    for start in range(0, max(len(payload), 1), MAX_PLAINTEXT):
        chunk = payload[start:start + MAX_PLAINTEXT]
        out += _HEADER.pack(content_type, LEGACY_RECORD_VERSION, len(chunk)) + chunk
    return bytes(out)


def alert_payload(description: AlertDescription) -> bytes:
    """A fatal alert's two bytes (RFC 8446 §6: in TLS 1.3 the level is not significant)."""
    return bytes((_FATAL, int(description)))


def parse_alert(payload: bytes) -> AlertDescription | int:
    """An alert record's description; decode_error unless exactly two bytes (RFC 8446 §5.1:
    alerts are neither fragmented nor coalesced). An unknown description stays an int."""
    if len(payload) != 2:
        raise decode_error(f"alert record of {len(payload)} bytes")
    try:
        return AlertDescription(payload[1])
    except ValueError:
        return payload[1]


@dataclass(frozen=True, slots=True)
class TrafficKeys:
    """A traffic secret's write key and IV (RFC 8446 §7.3), for records or for kTLS."""

    suite: SuiteInfo
    key: bytes = field(repr=False)
    iv: bytes = field(repr=False)

    @classmethod
    def from_secret(cls, suite: SuiteInfo, secret: bytes) -> TrafficKeys:
        algorithm = suite.hash_algorithm
        key = hkdf_expand_label(algorithm, secret, b"key", b"", suite.key_len)
        iv = hkdf_expand_label(algorithm, secret, b"iv", b"", suite.iv_len)
        return cls(suite, key, iv)


class RecordProtection:
    """One direction's AEAD state (RFC 8446 §5.2-§5.3): the key, and the 64-bit sequence
    number of the next record, which starts at 0 with every new traffic key."""

    __slots__ = ("keys", "sequence", "_aead", "_iv")

    def __init__(self, keys: TrafficKeys, sequence: int = 0) -> None:
        self.keys = keys
        self.sequence = sequence
        self._aead = keys.suite.aead(keys.key)
        self._iv = int.from_bytes(keys.iv, "big")

    def _next_nonce(self) -> bytes:
        # §5.3: the sequence number, left-padded to iv_length, XORed with the IV. It must
        # not wrap; 2^64 records is out of reach, but say so rather than reuse a nonce.
        if self.sequence >= (1 << 64) - 1:
            raise TlsError(AlertDescription.internal_error, "record sequence number exhausted")
        nonce = (self._iv ^ self.sequence).to_bytes(len(self.keys.iv), "big")
        self.sequence += 1
        return nonce

    def seal(self, content_type: ContentType, content: bytes, padding: int = 0) -> bytes:
        """One protected record (§5.2): TLSInnerPlaintext is content, type, zero padding;
        the header (opaque_type application_data) is the additional data."""
        inner = content + bytes((content_type,)) + bytes(padding)
        if len(inner) > MAX_PLAINTEXT + 1:
            raise ValueError("record content over 2^14 bytes")
        header = _HEADER.pack(ContentType.APPLICATION_DATA, LEGACY_RECORD_VERSION, len(inner) + TAG_LEN)
        return header + self._aead.encrypt(self._next_nonce(), inner, header)

    def seal_all(self, content_type: ContentType, content: bytes) -> bytes:
        """`content` in as many protected records as it needs."""
        return b"".join(
            self.seal(content_type, content[start:start + MAX_PLAINTEXT])
            for start in range(0, max(len(content), 1), MAX_PLAINTEXT)
        )

    def open(self, header: bytes, body: bytes) -> tuple[ContentType, bytes]:
        """A protected record's real content type and content (§5.2, §5.4): bad_record_mac
        when it does not decrypt, record_overflow when the plaintext is too long,
        unexpected_message when no content type (or an unknown one) is left after the
        padding is removed."""
        if len(body) < TAG_LEN + 1:
            raise TlsError(AlertDescription.bad_record_mac, "protected record shorter than its tag")
        try:
            inner = self._aead.decrypt(self._next_nonce(), body, header)
        except InvalidTag:
            raise TlsError(AlertDescription.bad_record_mac, "record does not decrypt") from None
        if len(inner) > MAX_PLAINTEXT + 1:
            raise TlsError(AlertDescription.record_overflow, f"inner plaintext of {len(inner)} bytes")
        content = inner.rstrip(b"\x00")
        if not content:
            raise unexpected_message("protected record with no content type")
        inner_type = content[-1]
        if inner_type not in _KNOWN_TYPES or inner_type == ContentType.CHANGE_CIPHER_SPEC:
            raise unexpected_message(f"protected record of content type {inner_type}")
        return ContentType(inner_type), content[:-1]
