"""HKDF-Extract and HKDF-Expand-Label (RFC 8446 §7.1) for QUIC key derivation.

Both primitives are cryptography's; only the HkdfLabel encoding is ours, and it lives
here once: the TLS key schedule (quichsd/tls/keyschedule.py) builds its precomputed
labels with hkdf_label_prefix.
"""
from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

__all__ = ["hkdf_extract", "hkdf_expand_label", "hkdf_label", "hkdf_label_prefix"]


def hkdf_extract(algorithm: hashes.HashAlgorithm, salt: bytes, ikm: bytes) -> bytes:
    return HKDF.extract(algorithm, salt, ikm)


def hkdf_label_prefix(label: bytes, length: int, context_len: int) -> bytes:
    """HkdfLabel up to its context bytes: uint16 length, opaque label<7..255> =
    "tls13 " + label, and the length byte of opaque context<0..255>."""
    full = b"tls13 " + label
    if len(full) > 255 or context_len > 255 or not 0 <= length <= 0xFFFF:
        raise ValueError("HkdfLabel field out of range")
    return length.to_bytes(2, "big") + bytes((len(full),)) + full + bytes((context_len,))


def hkdf_label(label: bytes, context: bytes, length: int) -> bytes:
    """HkdfLabel (RFC 8446 §7.1) with its context."""
    return hkdf_label_prefix(label, length, len(context)) + context


def hkdf_expand_label(
    algorithm: hashes.HashAlgorithm, secret: bytes, label: bytes, context: bytes, length: int
) -> bytes:
    """HKDF-Expand-Label(Secret, Label, Context, Length); `label` excludes "tls13 "."""
    return HKDFExpand(algorithm, length, hkdf_label(label, context, length)).derive(secret)
