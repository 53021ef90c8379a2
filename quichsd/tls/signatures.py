"""CertificateVerify signatures (RFC 8446 §4.4.3) and signature scheme choice (§4.2.3).

One table, built at import, maps each supported SignatureScheme to the key type (and
curve) it needs and the cryptography parameters that make it; sign and verify are a
lookup, a type check and one cryptography call.
"""
from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass
from typing import TypeAlias

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from .constants import AlertDescription, SignatureScheme
from .errors import TlsError

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey: TypeAlias = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey

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


def schemes_for_private_key(key: PrivateKey) -> list[SignatureScheme]:
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


def choose_scheme(key: PrivateKey, peer_schemes: Iterable[int]) -> SignatureScheme:
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


# The ABCs a key must be an instance of for each kind of scheme. isinstance against them
# goes through ABCMeta in Python; a key's concrete type, once it matched, is remembered.
_PRIVATE_ABCS = ((_ECDSA, ec.EllipticCurvePrivateKey), (_RSA_PSS, rsa.RSAPrivateKey),
                 (_ED25519, ed25519.Ed25519PrivateKey))
_PUBLIC_ABCS = ((_ECDSA, ec.EllipticCurvePublicKey), (_RSA_PSS, rsa.RSAPublicKey),
                (_ED25519, ed25519.Ed25519PublicKey))
_PRIVATE_KINDS: dict[type, int] = {}
_PUBLIC_KINDS: dict[type, int] = {}


def _kind(key: object, abcs: tuple[tuple[int, type], ...], known: dict[type, int]) -> int:
    kind = known.get(type(key))
    if kind is None:
        for kind, abc in abcs:
            if isinstance(key, abc):
                known[type(key)] = kind
                return kind
        return -1  # not remembered: a type may still be registered with an ABC later
    return kind


def sign(scheme: int, private_key: PrivateKey, data: bytes) -> bytes:
    """Sign `data` (the certificate_verify_content) with `scheme`.

    The scheme comes from choose_scheme(), so a scheme we do not support or that does not
    fit our key is a local bug: internal_error, never an alert blaming the peer.
    """
    info = _SCHEMES.get(scheme)
    if info is None:
        raise TlsError(AlertDescription.internal_error, f"cannot sign with 0x{scheme:04x}")
    kind = info.kind
    if _kind(private_key, _PRIVATE_ABCS, _PRIVATE_KINDS) == kind:
        if kind == _ECDSA:
            if private_key.curve.name == info.curve:  # type: ignore[union-attr]
                return private_key.sign(data, info.ecdsa)  # type: ignore[arg-type, call-arg]
        elif kind == _RSA_PSS:
            return private_key.sign(data, info.pss, info.hash)  # type: ignore[arg-type, call-arg]
        else:
            return private_key.sign(data)  # type: ignore[call-arg]
    raise TlsError(AlertDescription.internal_error, f"{info.scheme.name} does not fit our key")


def verify(scheme: int, public_key: PublicKey, data: bytes, signature: bytes) -> None:
    """Check a peer's CertificateVerify signature (§4.4.3).

    illegal_parameter: a scheme we do not support, or one that does not fit the key's type
    or curve (§4.2.3 pins the ECDSA curve). decrypt_error: the signature is wrong (§4.4.3).
    """
    info = _SCHEMES.get(scheme)
    if info is None:
        raise TlsError(
            AlertDescription.illegal_parameter, f"unsupported signature scheme 0x{scheme:04x}"
        )
    kind = info.kind
    if _kind(public_key, _PUBLIC_ABCS, _PUBLIC_KINDS) == kind and (
        kind != _ECDSA or public_key.curve.name == info.curve  # type: ignore[union-attr]
    ):
        try:
            if kind == _ECDSA:
                public_key.verify(signature, data, info.ecdsa)  # type: ignore[arg-type, call-arg]
            elif kind == _RSA_PSS:
                public_key.verify(signature, data, info.pss, info.hash)  # type: ignore[arg-type, call-arg]
            else:
                public_key.verify(signature, data)  # type: ignore[call-arg]
        except (InvalidSignature, ValueError):
            raise TlsError(AlertDescription.decrypt_error, "bad CertificateVerify signature") from None
        return
    raise TlsError(
        AlertDescription.illegal_parameter,
        f"{info.scheme.name} does not fit the peer's {type(public_key).__name__}",
    )
