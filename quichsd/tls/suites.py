"""TLS 1.3 cipher suites (RFC 8446 §B.4) and what each one fixes for the key schedule.

One frozen SuiteInfo per suite, built once at import. The transcript hash is hashlib's
(update/copy/digest): about 3x cheaper per message than cryptography's Hash object for
the small inputs of a handshake, and it computes the same function.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from ..kernel_numbers import TLS_CIPHER_AES_GCM_128, TLS_CIPHER_AES_GCM_256, TLS_CIPHER_CHACHA20_POLY1305
from .constants import CipherSuite


class TranscriptHash(Protocol):
    """What hashlib objects give us: the running transcript hash (RFC 8446 §4.4.1).

    digest() does not finalize a hashlib object (it hashes a copy of the state), so the
    engine takes intermediate transcript hashes with digest() alone and keeps updating.
    """

    def update(self, data: bytes, /) -> None: ...
    def copy(self) -> TranscriptHash: ...
    def digest(self) -> bytes: ...


# hash name -> (hashlib constructor, cryptography algorithm instance). Algorithm
# instances are stateless, so one per hash serves every HKDF/HMAC call.
HASH_CONSTRUCTORS: dict[str, Callable[..., Any]] = {
    "sha256": hashlib.sha256,
    "sha384": hashlib.sha384,
}
HASH_ALGORITHMS: dict[str, hashes.HashAlgorithm] = {
    "sha256": hashes.SHA256(),
    "sha384": hashes.SHA384(),
}
# Hash("") per hash: the context of Derive-Secret(., "derived", "") (RFC 8446 §7.1).
EMPTY_HASHES: dict[str, bytes] = {
    name: ctor(b"").digest() for name, ctor in HASH_CONSTRUCTORS.items()
}


@dataclass(frozen=True, slots=True)
class SuiteInfo:
    suite: CipherSuite
    hash_name: str
    hash_len: int
    key_len: int
    iv_len: int
    kernel_cipher: int
    aead: type[AESGCM] | type[ChaCha20Poly1305]
    # Derived from hash_name by make_suite(); kept on the object so hot paths do
    # one attribute load instead of a dict lookup.
    hash_algorithm: hashes.HashAlgorithm = field(repr=False)
    empty_hash: bytes = field(repr=False)
    _hash_ctor: Callable[..., Any] = field(repr=False)

    def new_hash(self) -> TranscriptHash:
        """A fresh transcript hash object (hashlib: update/copy/digest)."""
        h: TranscriptHash = self._hash_ctor()
        return h

    def hash(self, data: bytes) -> bytes:
        """One-shot Hash(data), e.g. for the message_hash of ClientHello1 (§4.4.1)."""
        digest: bytes = self._hash_ctor(data).digest()
        return digest


def make_suite(
    suite: CipherSuite,
    hash_name: str,
    key_len: int,
    kernel_cipher: int,
    aead: type[AESGCM] | type[ChaCha20Poly1305],
) -> SuiteInfo:
    algorithm = HASH_ALGORITHMS[hash_name]
    return SuiteInfo(
        suite=suite,
        hash_name=hash_name,
        hash_len=algorithm.digest_size,
        key_len=key_len,
        iv_len=12,  # RFC 8446 §5.3: iv_length = max(8, N_MIN) = 12 for all three AEADs
        kernel_cipher=kernel_cipher,
        aead=aead,
        hash_algorithm=algorithm,
        empty_hash=EMPTY_HASHES[hash_name],
        _hash_ctor=HASH_CONSTRUCTORS[hash_name],
    )


# RFC 8446 §B.4. CCM suites are not offered (the kernel QUIC module has no CCM secret type).
# Keyed by suite number: a CipherSuite, or the int a peer sent.
SUITES: dict[int, SuiteInfo] = {
    CipherSuite.AES_128_GCM_SHA256: make_suite(
        CipherSuite.AES_128_GCM_SHA256, "sha256", 16, TLS_CIPHER_AES_GCM_128, AESGCM
    ),
    CipherSuite.AES_256_GCM_SHA384: make_suite(
        CipherSuite.AES_256_GCM_SHA384, "sha384", 32, TLS_CIPHER_AES_GCM_256, AESGCM
    ),
    CipherSuite.CHACHA20_POLY1305_SHA256: make_suite(
        CipherSuite.CHACHA20_POLY1305_SHA256,
        "sha256",
        32,
        TLS_CIPHER_CHACHA20_POLY1305,
        ChaCha20Poly1305,
    ),
}
