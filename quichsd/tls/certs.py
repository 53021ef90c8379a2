"""X.509 credentials and peer verification through cryptography.x509.verification.

The profile is GnuTLS's as tlshd uses it, built on cryptography's path builder and its
CA/B web-PKI policy with the extension rules GnuTLS does not have relaxed (see
`ca_extension_policy`, `ee_extension_policy` and the README's "X.509 profile"). Path
building, signatures, validity, basicConstraints, path length, name constraints, EKU and
subjectAltName matching stay in cryptography; only the CN fallback of a server name (for a
leaf without DNS or IP subjectAltNames, as gnutls_x509_crt_check_hostname2) is ours.
"""
from __future__ import annotations

import contextlib
import datetime
import ipaddress
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..filecache import ParsedFiles
from .constants import AlertDescription
from .errors import TlsError

# Where Debian, Fedora/RHEL, openSUSE and Alpine keep the system trust bundle.
SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
)


def load_certificates(path: str | Path) -> list[x509.Certificate]:
    """Every certificate in a PEM file, or the one certificate of a DER file."""
    data = Path(path).read_bytes()
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificates(data)
    return [x509.load_der_x509_certificate(data)]


def load_private_key(path: str | Path, password: bytes | None = None) -> PrivateKeyTypes:
    data = Path(path).read_bytes()
    if b"-----BEGIN" in data:
        return serialization.load_pem_private_key(data, password)
    return serialization.load_der_private_key(data, password)


def load_crls(path: str | Path) -> tuple[x509.CertificateRevocationList, ...]:
    """Every CRL in a PEM file (tlshd's x509.crl), or the one CRL of a DER file."""
    data = Path(path).read_bytes()
    if b"-----BEGIN" not in data:
        return (x509.load_der_x509_crl(data),)
    crls = []
    for block in data.split(b"-----END X509 CRL-----")[:-1]:
        crls.append(x509.load_pem_x509_crl(block + b"-----END X509 CRL-----\n"))
    if not crls:
        raise ValueError(f"{path}: no CRL found")
    return tuple(crls)


@dataclass(frozen=True)
class TrustStore:
    """A verification store built once per configuration, never per handshake; with CRLs,
    a chain that verifies is also checked for revoked certificates. `subjects` (the
    anchors' names) and `key_ids` (their (name, key identifier) pairs) only serve to tell
    an unknown CA from other rejections; `anchors_have_key_usage` lets verification try
    cryptography's own keyUsage rule first (see `_verify`)."""

    store: verification.Store
    source: str
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    subjects: frozenset[x509.Name] = frozenset()
    anchors_have_key_usage: bool = False
    key_ids: frozenset[tuple[x509.Name, bytes]] = frozenset()

    def with_crls(self, crls: Sequence[x509.CertificateRevocationList]) -> TrustStore:
        return TrustStore(self.store, self.source, tuple(crls), self.subjects, self.anchors_have_key_usage,
                          self.key_ids)

    @classmethod
    def from_certificates(cls, certs: Sequence[x509.Certificate], source: str = "given") -> TrustStore:
        if not certs:
            raise ValueError("a trust store needs at least one certificate")
        return cls(verification.Store(list(certs)), source, (), frozenset(c.subject for c in certs),
                   all(_has_key_usage(c) for c in certs),
                   frozenset((c.subject, key_id) for c in certs for key_id in _key_ids(c)))

    @classmethod
    def from_file(cls, path: str | Path) -> TrustStore:
        """One store per file version: a CA file named in every handshake's configuration
        is read and parsed once, and again only when it changes."""
        return _TRUST_FILES(path)

    @classmethod
    def system(cls) -> TrustStore:
        return _system_store()


def _has_key_usage(cert: x509.Certificate) -> bool:
    try:
        cert.extensions.get_extension_for_class(x509.KeyUsage)
    except Exception:  # noqa: BLE001 - absent or unparsable: the full profile decides
        return False
    return True


def _key_ids(cert: x509.Certificate) -> list[bytes]:
    """The identifiers an authorityKeyIdentifier may name `cert`'s key by: its
    subjectKeyIdentifier, and the SHA-1 of its key (RFC 5280 §4.2.1.2 method 1)."""
    ids = []
    with contextlib.suppress(Exception):  # absent or unparsable: the key's own hash still names it
        ids.append(cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest)
    with contextlib.suppress(TypeError, ValueError):  # a key type cryptography cannot load or hash
        ids.append(x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest)
    return ids


def _store_from_file(path: str | Path) -> TrustStore:
    return TrustStore.from_certificates(load_certificates(path), str(Path(path).resolve()))


_TRUST_FILES = ParsedFiles(_store_from_file, maxsize=32)


def _system_store() -> TrustStore:
    """The first system bundle that exists, re-read (like any trust store) when it changes."""
    for bundle in SYSTEM_BUNDLES:
        if Path(bundle).is_file():
            return TrustStore.from_file(bundle)
    raise FileNotFoundError("no system CA bundle found in " + ", ".join(SYSTEM_BUNDLES))


@lru_cache(maxsize=256)
def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _subject(name: str) -> x509.DNSName | x509.IPAddress:
    if is_ip_literal(name):
        return x509.IPAddress(ipaddress.ip_address(name))
    return x509.DNSName(name)


# -- the profile: GnuTLS as tlshd uses it, on cryptography's web-PKI policy ---------------
#
# Relaxed against the CA/B profile, because GnuTLS accepts it and tlshd deployments use it:
#  - a CA without keyUsage (`openssl req -x509` makes one); with keyUsage, keyCertSign is
#    still required (GnuTLS: GNUTLS_CERT_SIGNER_CONSTRAINTS_FAILURE);
#  - basicConstraints, authorityKeyIdentifier and subjectKeyIdentifier of any criticality,
#    and an authorityKeyIdentifier of any form; cA=TRUE is still required of every CA, the
#    anchors included (cryptography checks it whatever the policy says);
#  - a leaf without authorityKeyIdentifier, a leaf with basicConstraints cA=TRUE or with
#    keyCertSign (a self-signed certificate trusted as itself);
#  - a client certificate without subjectAltName;
#  - a server certificate without DNS/IP subjectAltName, matched on its single CN instead.
# Kept: signatures, validity, path length, name constraints, extended key usage (a leaf's
# EKU, if present, must name serverAuth or clientAuth; a CA's, that or anyEKU), the
# server name against subjectAltName, unknown critical extensions refused.


def _ca_key_usage(policy: verification.Policy, cert: x509.Certificate, ku: x509.KeyUsage | None) -> None:
    if ku is not None and not ku.key_cert_sign:
        raise ValueError("keyUsage of a CA certificate without keyCertSign")


@dataclass(frozen=True)
class _Eku:
    """The extended key usage a chain must allow (RFC 5280 §4.2.1.12), as a validator:
    a leaf's EKU, if present, names `usage`; a CA's names it or anyExtendedKeyUsage.
    Either criticality, as GnuTLS (the web PKI wants it non-critical)."""

    usage: x509.ObjectIdentifier
    ca: bool

    def __call__(self, policy: verification.Policy, cert: x509.Certificate,
                 eku: x509.ExtendedKeyUsage | None) -> None:
        if eku is None or self.usage in eku:
            return
        if self.ca and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku:
            return
        raise ValueError("required EKU not found")


_ANY = verification.Criticality.AGNOSTIC
SERVER_AUTH, CLIENT_AUTH = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH


def ca_extension_policy(usage: x509.ObjectIdentifier | None = None) -> verification.ExtensionPolicy:
    """CA certificates (anchors and intermediates). With `usage` (serverAuth or clientAuth),
    the full profile: keyUsage and EKU checked by the validators above. Without, the fast
    first try: the web-PKI rules for both (keyUsage present with keyCertSign, EKU
    non-critical, for the verifier's own usage), checked without a call into Python; it
    accepts a subset of the profile, so it is never the last word (see `_verify`)."""
    policy = verification.ExtensionPolicy.webpki_defaults_ca()
    if usage is not None:
        policy = (policy.may_be_present(x509.KeyUsage, _ANY, _ca_key_usage)
                  .may_be_present(x509.ExtendedKeyUsage, _ANY, _Eku(usage, ca=True)))
    return (
        policy
        .require_present(x509.BasicConstraints, _ANY, None)
        .may_be_present(x509.AuthorityKeyIdentifier, _ANY, None)
        .may_be_present(x509.SubjectKeyIdentifier, _ANY, None)
    )


def ee_extension_policy(san_required: bool,
                        usage: x509.ObjectIdentifier | None = None) -> verification.ExtensionPolicy:
    """Leaf certificates. A server verifier needs subjectAltName (cryptography matches the
    name there); a client verifier, and the CN-fallback path, do not: a CN-only client
    certificate is accepted, as GnuTLS does. `usage` as for `ca_extension_policy`."""
    policy = (
        verification.ExtensionPolicy.webpki_defaults_ee()
        .may_be_present(x509.AuthorityKeyIdentifier, _ANY, None)
        .may_be_present(x509.BasicConstraints, _ANY, None)
        .may_be_present(x509.KeyUsage, _ANY, None)
    )
    if not san_required:
        policy = policy.may_be_present(x509.SubjectAlternativeName, _ANY, None)
    if usage is not None:
        policy = policy.may_be_present(x509.ExtendedKeyUsage, _ANY, _Eku(usage, ca=False))
    return policy


# (CA policy, leaf policy) per role, for the fast try (strict) and the full profile.
_SERVER_STRICT = (ca_extension_policy(), ee_extension_policy(san_required=True))
_SERVER_PROFILE = (ca_extension_policy(SERVER_AUTH), ee_extension_policy(True, SERVER_AUTH))
_CLIENT_STRICT = (ca_extension_policy(), ee_extension_policy(san_required=False))
_CLIENT_PROFILE = (ca_extension_policy(CLIENT_AUTH), ee_extension_policy(False, CLIENT_AUTH))
# A server certificate without DNS/IP subjectAltName, checked by a client verifier.
_CN_PROFILE = (ca_extension_policy(SERVER_AUTH), ee_extension_policy(False, SERVER_AUTH))


def _builder(store: verification.Store, second: int) -> verification.PolicyBuilder:
    # Validity is checked to the second, so a verifier serves every handshake of that second.
    when = datetime.datetime.fromtimestamp(second, datetime.UTC)
    return verification.PolicyBuilder().store(store).time(when)


@lru_cache(maxsize=64)
def _server_verifier(store: verification.Store, name: str, second: int,
                     strict: bool) -> verification.ServerVerifier:
    ca_policy, ee_policy = _SERVER_STRICT if strict else _SERVER_PROFILE
    return (_builder(store, second).extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
            .build_server_verifier(_subject(name)))


@lru_cache(maxsize=64)
def _client_verifier(store: verification.Store, second: int, strict: bool) -> verification.ClientVerifier:
    ca_policy, ee_policy = _CLIENT_STRICT if strict else _CLIENT_PROFILE
    return (_builder(store, second).extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
            .build_client_verifier())


def _verify(trust: TrustStore, leaf: x509.Certificate, intermediates: list[x509.Certificate],
            server_name: str | None, second: int) -> list[x509.Certificate]:
    """The chain built up to an anchor, under the profile. When every anchor has keyUsage
    (the system bundle, most PKIs), cryptography's own keyUsage and EKU rules are tried
    first: they accept a subset of what the profile accepts and cost no Python call per
    certificate. Only if they refuse (an intermediate without keyUsage, a critical EKU, or
    any failure) does the full profile decide, so the answer is always the profile's."""
    for strict in (True, False) if trust.anchors_have_key_usage else (False,):
        try:
            if server_name is not None:
                return _server_verifier(trust.store, server_name, second, strict).verify(leaf, intermediates)
            return _client_verifier(trust.store, second, strict).verify(leaf, intermediates).chain
        except verification.VerificationError:
            if not strict:
                raise
    raise AssertionError("unreachable")


@lru_cache(maxsize=16)
def _cn_server_verifier(store: verification.Store, second: int) -> verification.ClientVerifier:
    """A server certificate without DNS/IP subjectAltName: the chain checked as for a
    server (serverAuth), without a subject; the name is then matched on the CN."""
    ca_policy, ee_policy = _CN_PROFILE
    return (_builder(store, second).extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
            .build_client_verifier())


def _has_host_san(cert: x509.Certificate) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return bool(san.get_values_for_type(x509.DNSName) or san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        return False
    except Exception:  # noqa: BLE001 - unparsable extensions: no CN fallback, the first error stands
        return True


def cn_matches(cert: x509.Certificate, name: str) -> bool:
    """gnutls_x509_crt_check_hostname2's fallback: the subject has exactly one CN, printable
    ASCII, equal to the host name ignoring case, or a wildcard `*.` that stands for exactly
    the first label of a name with at least two labels after it. (GnuTLS also accepts a
    wildcard inside the first label, such as `f*.example.com`; we do not.)"""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1 or not isinstance(cns[0].value, str):
        return False
    cn = cns[0].value
    if not cn.isascii() or not cn.isprintable() or not cn:
        return False
    host = name.rstrip(".").lower()
    cn = cn.rstrip(".").lower()
    if cn == host:
        return True
    if not cn.startswith("*."):
        return False
    suffix = cn[2:]
    if suffix.count(".") < 1 or "*" in suffix:
        return False
    first, dot, rest = host.partition(".")
    return bool(first and dot) and rest == suffix


def verify_chain(
    trust: TrustStore,
    chain: Sequence[x509.Certificate],
    *,
    peer_is_server: bool,
    server_name: str | None,
    now: float,
) -> None:
    """RFC 8446 §4.4.2.4: reject a chain that does not lead to the store, with the alert
    RFC 8446 §6.2 names for the reason. A server is checked against `server_name` (DNS name
    or IP address), which the configuration makes mandatory when verification is on."""
    leaf, intermediates = chain[0], list(chain[1:])
    second = int(now)
    try:
        if peer_is_server:
            if not server_name:
                raise TlsError(AlertDescription.internal_error, "no server name to verify against")
            try:
                built = _verify(trust, leaf, intermediates, server_name, second)
            except verification.VerificationError:
                # GnuTLS falls back to the CN for a host name (never an IP address) only
                # when the leaf has no DNS or IP subjectAltName at all.
                if is_ip_literal(server_name) or _has_host_san(leaf):
                    raise
                built = _cn_server_verifier(trust.store, second).verify(leaf, intermediates).chain
                if not cn_matches(leaf, server_name):
                    raise TlsError(AlertDescription.bad_certificate,
                                   f"certificate rejected: name mismatch: {server_name!r} is not the"
                                   f" certificate's CN and it has no DNS/IP subjectAltName") from None
        else:
            built = _verify(trust, leaf, intermediates, None, second)
        if trust.crls:
            check_revocation(trust.crls, built)
    except verification.VerificationError as exc:
        raise _rejection(exc, trust, chain, peer_is_server) from None
    except (ValueError, TypeError) as exc:  # a field parsed lazily (e.g. a name) is malformed
        # cryptography raises TypeError for some malformed names: a BitString-typed attribute
        # under another OID than x500UniqueIdentifier (found by fuzz/tls_engine).
        raise TlsError(AlertDescription.bad_certificate, f"certificate rejected: {exc}") from None


# Reasons cryptography gives (its VerificationError text), in the words we report, with
# the alert of RFC 8446 §6.2. Looked up in this order; the first that occurs wins.
_REASONS = (
    ("basicConstraints", "issuer is not a CA (no basicConstraints with cA=TRUE)"),
    ("keyCertSign", "issuer's keyUsage does not allow signing certificates"),
    ("path length constraint violated", "path length constraint exceeded"),
    ("signature does not match", "a signature does not verify under its issuer's key"),
    ("no matching subjectAltName", "name mismatch: no subjectAltName matches"),
    ("has no subjectAltName", "name mismatch: no subjectAltName (an IP address is matched there only)"),
    ("exceeds max depth", "certificate chain too long"),
    # GnuTLS takes a version 1 leaf (`openssl x509 -req` without extensions makes one);
    # cryptography's path builder has no switch for it.
    ("must be an X509v3 certificate", "not an X.509 version 3 certificate (version 1 is not supported)"),
)


def _rejection(exc: verification.VerificationError, trust: TrustStore, chain: Sequence[x509.Certificate],
               peer_is_server: bool) -> TlsError:
    text = str(exc)
    if "not valid at validation time" in text:
        return TlsError(AlertDescription.certificate_expired,
                        f"certificate rejected: expired or not yet valid ({text})")
    if "candidates exhausted" in text:
        unknown = _unknown_ca(trust, chain, text)
        if unknown is not None:
            return unknown
    if "required EKU not found" in text:
        usage = "server" if peer_is_server else "client"
        return TlsError(AlertDescription.bad_certificate,
                        f"certificate rejected: extended key usage does not allow TLS {usage} authentication")
    for needle, words in _REASONS:
        if needle in text:
            return TlsError(AlertDescription.bad_certificate, f"certificate rejected: {words} ({text})")
    return TlsError(AlertDescription.bad_certificate, f"certificate rejected: {text}")


def _unknown_ca(trust: TrustStore, chain: Sequence[x509.Certificate], text: str) -> TlsError | None:
    """unknown_ca (RFC 8446 §6.2) when the issuer is not in the store, whatever interior
    error cryptography reported last (a self-signed root the peer sent is tried as its own
    issuer until the depth or its path length runs out): nothing the peer sent was issued
    by a name the store holds, or, as GnuTLS tells them apart, the certificate that names
    an anchor as its issuer identifies another key by its authorityKeyIdentifier (a CA of
    the same name). Without a key identifier that stays a signature failure."""
    try:
        issuer = chain[-1].issuer.rfc4514_string()
        if not _reaches_an_anchor(trust, chain):
            return TlsError(AlertDescription.unknown_ca,
                            f"certificate rejected: unknown CA: issuer {issuer!r} is not in the trust"
                            f" store ({trust.source})")
        namesake = _names_another_key(trust, chain) if "signature does not match" in text else None
    except (ValueError, TypeError) as bad:  # names are parsed lazily: a malformed one is the reason
        return TlsError(AlertDescription.bad_certificate, f"certificate rejected: {bad}")
    if namesake is None:
        return None
    return TlsError(AlertDescription.unknown_ca,
                    f"certificate rejected: unknown CA: issuer {namesake.rfc4514_string()!r} is not in the"
                    f" trust store ({trust.source}); a CA of that name is, with another key")


def _names_another_key(trust: TrustStore, chain: Sequence[x509.Certificate]) -> x509.Name | None:
    """The issuer of a certificate in `chain` that names an anchor's subject as issuer but,
    by its authorityKeyIdentifier, a key no anchor of that name has."""
    for cert in chain:
        if cert.issuer not in trust.subjects:
            continue
        try:
            key_id = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        except x509.ExtensionNotFound:
            continue
        if key_id is not None and (cert.issuer, key_id) not in trust.key_ids:
            return cert.issuer
    return None


def _reaches_an_anchor(trust: TrustStore, chain: Sequence[x509.Certificate]) -> bool:
    """Whether a certificate the peer sent is an anchor's namesake or names one as issuer."""
    subjects = trust.subjects
    return any(c.issuer in subjects or c.subject in subjects for c in chain)


def check_revocation(crls: Sequence[x509.CertificateRevocationList],
                     built: Sequence[x509.Certificate]) -> None:
    """RFC 5280 §6.3, in the shape GnuTLS gives tlshd's x509.crl: every certificate of the
    verified chain below the anchor is looked up in each CRL its issuer signed; listed means
    certificate_revoked (RFC 8446 §6.2). A CRL whose signature does not verify under that
    issuer is not evidence either way and is skipped."""
    for cert, issuer in itertools.pairwise(built):
        for crl in crls:
            if crl.issuer != cert.issuer:
                continue
            try:
                # A key type that cannot sign a CRL (X25519, ...) raises TypeError, caught here.
                signed = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
            except (TypeError, ValueError):
                signed = False
            if signed and crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                who = cert.subject.rfc4514_string()
                raise TlsError(AlertDescription.certificate_revoked,
                               f"certificate revoked: serial {cert.serial_number:#x} of {who}")
