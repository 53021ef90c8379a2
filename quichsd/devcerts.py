"""Throw-away certificates for demos and tests: a CA and leaves made on the fly.

Never for production: keys live in memory and certificates are issued without checks.
"""
from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Midnight today: fixed within a run (tests pass it as `now`), and inside the validity of
# the certificates for peers that read the real clock (aioquic).
NOW = datetime.datetime.now(datetime.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


# The key types new_key() makes.
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def new_key(kind: str) -> PrivateKey:
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "rsa":
        return rsa.generate_private_key(65537, 2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(kind)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Ca:
    key: PrivateKey
    cert: x509.Certificate

    def issue(self, cn: str, key: PrivateKey, *, names: Sequence[str] = ("localhost",),
              ips: Sequence[str] = ("127.0.0.1", "::1"), days: tuple[int, int] = (-30, 365),
              server: bool = True, client: bool = True, ca: bool = False) -> x509.Certificate:
        eku = []
        if server:
            eku.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            eku.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        san: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        san += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        b = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW + datetime.timedelta(days=days[0]))
            .not_valid_after(NOW + datetime.timedelta(days=days[1]))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                           critical=False)
        )
        if ca:
            b = b.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                                critical=True)
        else:
            b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
            if san:
                b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return b.sign(self.key, None if isinstance(self.key, ed25519.Ed25519PrivateKey) else hashes.SHA256())


def make_crl(ca: Ca, revoked: Sequence[x509.Certificate] = ()) -> x509.CertificateRevocationList:
    """A CRL from `ca` listing `revoked` (x509.crl in tlshd's config)."""
    b = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(NOW - datetime.timedelta(days=1))
        .next_update(NOW + datetime.timedelta(days=30))
    )
    for cert in revoked:
        b = b.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
            .revocation_date(NOW - datetime.timedelta(hours=1)).build())
    return b.sign(ca.key, None if isinstance(ca.key, ed25519.Ed25519PrivateKey) else hashes.SHA256())


def make_ca(cn: str = "quichsd test CA", kind: str = "p256") -> Ca:
    key = new_key(kind)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=365))
        .not_valid_after(NOW + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                       critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return Ca(key, b.sign(key, hashes.SHA256()))


@cache
def demo_ca() -> Ca:
    return make_ca()


@cache
def leaf(kind: str = "p256", cn: str = "localhost") -> tuple[x509.Certificate, PrivateKey]:
    key = new_key(kind)
    return demo_ca().issue(cn, key), key


class PkiFiles(NamedTuple):
    """Where write_pki() put the demo CA, a leaf it issued and the leaf's key (PEM)."""

    ca_file: str
    cert_file: str
    key_file: str


def write_pki(directory: Path, kind: str = "p256") -> PkiFiles:
    """The demo CA's certificate and a `kind` leaf for localhost, with its unencrypted
    PKCS#8 key, as ca.pem, cert.pem and key.pem in `directory`."""
    cert, key = leaf(kind)
    files = PkiFiles(str(directory / "ca.pem"), str(directory / "cert.pem"), str(directory / "key.pem"))
    Path(files.ca_file).write_bytes(demo_ca().cert.public_bytes(Encoding.PEM))
    Path(files.cert_file).write_bytes(cert.public_bytes(Encoding.PEM))
    Path(files.key_file).write_bytes(key.private_bytes(Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return files
