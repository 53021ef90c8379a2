"""X.509 credentials and peer verification through cryptography.x509.verification."""
from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification

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


def load_private_key(path: str | Path, password: bytes | None = None):  # noqa: ANN201
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
    a chain that verifies is also checked for revoked certificates."""

    store: verification.Store
    source: str
    crls: tuple[x509.CertificateRevocationList, ...] = ()

    def with_crls(self, crls: Sequence[x509.CertificateRevocationList]) -> TrustStore:
        return TrustStore(self.store, self.source, tuple(crls))

    @classmethod
    def from_certificates(cls, certs: Sequence[x509.Certificate], source: str = "given") -> TrustStore:
        if not certs:
            raise ValueError("a trust store needs at least one certificate")
        return cls(verification.Store(list(certs)), source)

    @classmethod
    def from_file(cls, path: str | Path) -> TrustStore:
        """One store per file version: a CA file named in every handshake's configuration
        is read and parsed once, and again only when it changes."""
        resolved = Path(path).resolve()
        stat = resolved.stat()
        return _store_from_file(resolved, stat.st_mtime_ns, stat.st_size)

    @classmethod
    def system(cls) -> TrustStore:
        return _system_store()


@lru_cache(maxsize=32)
def _store_from_file(path: Path, mtime_ns: int, size: int) -> TrustStore:
    return TrustStore.from_certificates(load_certificates(path), str(path))


@lru_cache(maxsize=1)
def _system_store() -> TrustStore:
    for bundle in SYSTEM_BUNDLES:
        if Path(bundle).is_file():
            return TrustStore.from_file(bundle)
    raise FileNotFoundError("no system CA bundle found in " + ", ".join(SYSTEM_BUNDLES))


def _alert_for(error: verification.VerificationError) -> AlertDescription:
    text = str(error)
    if "not valid at validation time" in text:
        return AlertDescription.certificate_expired
    if "candidates exhausted" in text or "issuer" in text:
        return AlertDescription.unknown_ca
    return AlertDescription.bad_certificate


@lru_cache(maxsize=256)
def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _subject(name: str) -> verification.DNSName | verification.IPAddress:
    if is_ip_literal(name):
        return verification.IPAddress(ipaddress.ip_address(name))
    return verification.DNSName(name)


@lru_cache(maxsize=64)
def _server_verifier(store: verification.Store, name: str, second: int) -> verification.ServerVerifier:
    # Validity is checked to the second, so a verifier serves every handshake of that second.
    when = datetime.datetime.fromtimestamp(second, datetime.timezone.utc)
    return verification.PolicyBuilder().store(store).time(when).build_server_verifier(_subject(name))


@lru_cache(maxsize=64)
def _client_verifier(store: verification.Store, second: int) -> verification.ClientVerifier:
    when = datetime.datetime.fromtimestamp(second, datetime.timezone.utc)
    return verification.PolicyBuilder().store(store).time(when).build_client_verifier()


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
            built = _server_verifier(trust.store, server_name, second).verify(leaf, intermediates)
        else:
            built = _client_verifier(trust.store, second).verify(leaf, intermediates).chain
        if trust.crls:
            check_revocation(trust.crls, built)
    except verification.VerificationError as exc:
        raise TlsError(_alert_for(exc), f"certificate rejected: {exc}") from None
    except ValueError as exc:  # a field the verifier parses lazily (e.g. a name) is malformed
        raise TlsError(AlertDescription.bad_certificate, f"certificate rejected: {exc}") from None


def check_revocation(crls: Sequence[x509.CertificateRevocationList], built: Sequence[x509.Certificate]) -> None:
    """RFC 5280 §6.3, in the shape GnuTLS gives tlshd's x509.crl: every certificate of the
    verified chain below the anchor is looked up in each CRL its issuer signed; listed means
    certificate_revoked (RFC 8446 §6.2). A CRL whose signature does not verify under that
    issuer is not evidence either way and is skipped."""
    for cert, issuer in zip(built, built[1:]):
        for crl in crls:
            if crl.issuer != cert.issuer:
                continue
            try:
                signed = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
            except (TypeError, ValueError):
                signed = False
            if signed and crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                raise TlsError(AlertDescription.certificate_revoked,
                               f"certificate revoked: serial {cert.serial_number:#x} of {cert.subject.rfc4514_string()}")
