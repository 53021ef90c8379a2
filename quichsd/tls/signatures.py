"""CertificateVerify signatures (RFC 8446 §4.4.3) and signature scheme choice (§4.2.3).

One table, built at import, maps each supported SignatureScheme to the key type (and
curve) it needs and the cryptography parameters that make it; sign and verify are a
lookup, a type check and one cryptography call.
"""
from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes, PrivateKeyTypes

from .constants import AlertDescription, SignatureScheme
from .errors import TlsError

# Preference order (§4.2.3): what we put in signature_algorithms.
SUPPORTED_SCHEMES: tuple[SignatureScheme, ...] = (
    SignatureScheme.ECDSA_SECP256R1_SHA256,
    SignatureScheme.ECDSA_SECP384R1_SHA384,
    SignatureScheme.RSA_PSS_RSAE_SHA256,
    SignatureScheme.RSA_PSS_RSAE_SHA384,
    SignatureScheme.RSA_PSS_RSAE_SHA512,
    SignatureScheme.ED25519,
)

# §4.4.3: 64 spaces, the context string, a 0 byte, then the transcript hash.
_SERVER_CONTEXT = b" " * 64 + b"TLS 1.3, server CertificateVerify" + b"\x00"
_CLIENT_CONTEXT = b" " * 64 + b"TLS 1.3, client CertificateVerify" + b"\x00"


def certificate_verify_content(server: bool, transcript_hash: bytes) -> bytes:
    """The bytes a CertificateVerify signs (§4.4.3)."""
    return (_SERVER_CONTEXT if server else _CLIENT_CONTEXT) + transcript_hash


_ECDSA, _RSA_PSS, _ED25519 = 0, 1, 2


@dataclass(frozen=True, slots=True)
class _Scheme:
    scheme: SignatureScheme
    kind: int
    curve: str | None  # ECDSA: the curve the scheme pins (§4.2.3); else None
    hash: hashes.HashAlgorithm | None
    digest_size: int
    ecdsa: ec.ECDSA | None
    pss: padding.PSS | None


def _ecdsa(scheme: SignatureScheme, curve: str, hash_: hashes.HashAlgorithm) -> _Scheme:
    return _Scheme(scheme, _ECDSA, curve, hash_, hash_.digest_size, ec.ECDSA(hash_), None)


def _pss(scheme: SignatureScheme, hash_: hashes.HashAlgorithm) -> _Scheme:
    # §4.2.3: RSASSA-PSS with MGF1 of the same hash and a salt as long as the digest.
    pss = padding.PSS(mgf=padding.MGF1(hash_), salt_length=hash_.digest_size)
    return _Scheme(scheme, _RSA_PSS, None, hash_, hash_.digest_size, None, pss)


_SCHEMES: dict[int, _Scheme] = {
    s.scheme: s
    for s in (
        _ecdsa(SignatureScheme.ECDSA_SECP256R1_SHA256, "secp256r1", hashes.SHA256()),
        _ecdsa(SignatureScheme.ECDSA_SECP384R1_SHA384, "secp384r1", hashes.SHA384()),
        _pss(SignatureScheme.RSA_PSS_RSAE_SHA256, hashes.SHA256()),
        _pss(SignatureScheme.RSA_PSS_RSAE_SHA384, hashes.SHA384()),
        _pss(SignatureScheme.RSA_PSS_RSAE_SHA512, hashes.SHA512()),
        _Scheme(SignatureScheme.ED25519, _ED25519, None, None, 0, None, None),
    )
}

_EC_SCHEMES: dict[str, SignatureScheme] = {
    "secp256r1": SignatureScheme.ECDSA_SECP256R1_SHA256,
    "secp384r1": SignatureScheme.ECDSA_SECP384R1_SHA384,
}
_RSA_SCHEMES = (
    _SCHEMES[SignatureScheme.RSA_PSS_RSAE_SHA256],
    _SCHEMES[SignatureScheme.RSA_PSS_RSAE_SHA384],
    _SCHEMES[SignatureScheme.RSA_PSS_RSAE_SHA512],
)


def schemes_for_private_key(key: PrivateKeyTypes) -> list[SignatureScheme]:
    """The schemes `key` can sign with, in our preference order (§4.2.3)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        scheme = _EC_SCHEMES.get(key.curve.name)
        return [] if scheme is None else [scheme]
    if isinstance(key, rsa.RSAPrivateKey):
        # RFC 8017 §9.1.1: PSS needs emLen >= hLen + sLen + 2 with sLen = hLen, so a
        # 1024-bit key (RFC 8448's) cannot make rsa_pss_rsae_sha512.
        em_len = (key.key_size - 1 + 7) // 8
        return [s.scheme for s in _RSA_SCHEMES if em_len >= 2 * s.digest_size + 2]
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return [SignatureScheme.ED25519]
    return []


def choose_scheme(key: PrivateKeyTypes, peer_schemes: Iterable[int]) -> SignatureScheme:
    """Our most preferred scheme for `key` that the peer offered (§4.4.2.2, §4.4.3)."""
    offered = set(peer_schemes)
    for scheme in schemes_for_private_key(key):
        if scheme in offered:
            return scheme
    raise TlsError(
        AlertDescription.handshake_failure, "no common signature scheme for our certificate key"
    )


def choose_scheme_from(
    candidates: Iterable[int], peer_schemes: Iterable[int], ours: Container[int]
) -> SignatureScheme:
    """choose_scheme() with our key's schemes (`candidates`, from schemes_for_private_key,
    computed once per credential) and the peer's list filtered by our configuration."""
    offered = set(peer_schemes)
    for scheme in candidates:
        if scheme in offered and scheme in ours:
            info = _SCHEMES.get(scheme)
            return info.scheme if info is not None else SignatureScheme(scheme)
    raise TlsError(
        AlertDescription.handshake_failure, "no common signature scheme for our certificate key"
    )


def sign(scheme: int, private_key: PrivateKeyTypes, data: bytes) -> bytes:
    """Sign `data` (the certificate_verify_content) with `scheme`.

    The scheme comes from choose_scheme(), so a scheme we do not support or that does not
    fit our key is a local bug: internal_error, never an alert blaming the peer.
    """
    info = _SCHEMES.get(scheme)
    if info is None:
        raise TlsError(AlertDescription.internal_error, f"cannot sign with 0x{scheme:04x}")
    signature = _sign_with(info, private_key, data)
    if signature is None:
        raise TlsError(AlertDescription.internal_error, f"{info.scheme.name} does not fit our key")
    return signature


def _sign_with(info: _Scheme, key: PrivateKeyTypes, data: bytes) -> bytes | None:
    """The signature, or None when `info`'s scheme does not fit the key."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if info.ecdsa is not None and key.curve.name == info.curve:
            return key.sign(data, info.ecdsa)
    elif isinstance(key, rsa.RSAPrivateKey):
        if info.pss is not None and info.hash is not None:
            return key.sign(data, info.pss, info.hash)
    elif isinstance(key, ed25519.Ed25519PrivateKey) and info.kind == _ED25519:
        return key.sign(data)
    return None


def verify(scheme: int, public_key: CertificatePublicKeyTypes, data: bytes, signature: bytes) -> None:
    """Check a peer's CertificateVerify signature (§4.4.3).

    illegal_parameter: a scheme we do not support, or one that does not fit the key's type
    or curve (§4.2.3 pins the ECDSA curve). decrypt_error: the signature is wrong (§4.4.3).
    """
    info = _SCHEMES.get(scheme)
    if info is None:
        raise TlsError(
            AlertDescription.illegal_parameter, f"unsupported signature scheme 0x{scheme:04x}"
        )
    try:
        fits = _verify_with(info, public_key, data, signature)
    except (InvalidSignature, ValueError):
        raise TlsError(AlertDescription.decrypt_error, "bad CertificateVerify signature") from None
    if not fits:
        raise TlsError(
            AlertDescription.illegal_parameter,
            f"{info.scheme.name} does not fit the peer's {type(public_key).__name__}",
        )


def _verify_with(info: _Scheme, key: CertificatePublicKeyTypes, data: bytes, signature: bytes) -> bool:
    """False when `info`'s scheme does not fit the key; raises InvalidSignature (or
    ValueError) when the signature is wrong."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        if info.ecdsa is None or key.curve.name != info.curve:
            return False
        key.verify(signature, data, info.ecdsa)
    elif isinstance(key, rsa.RSAPublicKey):
        if info.pss is None or info.hash is None:
            return False
        key.verify(signature, data, info.pss, info.hash)
    elif isinstance(key, ed25519.Ed25519PublicKey) and info.kind == _ED25519:
        key.verify(signature, data)
    else:
        return False
    return True
