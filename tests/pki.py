"""Test PKI: the package's throw-away certificate maker, under the names tests use, and a
free-form issuer for certificates the package's maker does not make (other extension sets,
as `openssl req -x509` or other CAs produce them)."""
from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from quichsd.devcerts import NOW, Ca, demo_ca, leaf, make_ca, new_key

test_ca = demo_ca
test_ca.__test__ = False  # type: ignore[attr-defined]  # imported into test modules; not a test

__all__ = ["NOW", "Ca", "build", "ca_cert", "eku", "leaf", "make_ca", "name", "new_key", "openssl_style_ca",
           "san", "test_ca"]

Ext = tuple[x509.ExtensionType, bool]  # (extension, critical)


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def san(*names: str) -> Ext:
    """A non-critical subjectAltName of DNS names and IP literals."""
    general: list[x509.GeneralName] = []
    for n in names:
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            general.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(general), False


def eku(*usages: str) -> Ext:
    oids = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH,
            "any": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
    return x509.ExtendedKeyUsage([oids[u] for u in usages]), False


def build(subject: str | x509.Name, key, issuer: Ca | None = None, extensions: Sequence[Ext] = (), *,
          days: tuple[int, int] = (-30, 365), aki: bool = True) -> x509.Certificate:
    """A certificate with exactly `extensions` (plus, with an issuer and `aki`, an
    authorityKeyIdentifier), signed by `issuer` or, without one, self-signed by `key`."""
    subject_name = name(subject) if isinstance(subject, str) else subject
    issuer_name = issuer.cert.subject if issuer else subject_name
    signer = issuer.key if issuer else key
    b = (
        x509.CertificateBuilder()
        .subject_name(subject_name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + datetime.timedelta(days=days[0]))
        .not_valid_after(NOW + datetime.timedelta(days=days[1]))
    )
    for ext, critical in extensions:
        b = b.add_extension(ext, critical=critical)
    if issuer is not None and aki:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
                            critical=False)
    return b.sign(signer, None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256())


def ca_cert(cn: str, issuer: Ca | None = None, extensions: Sequence[Ext] | None = None, kind: str = "p256",
            **kw) -> Ca:
    """A CA with `extensions` (default: basicConstraints critical cA=TRUE and nothing else)."""
    key = new_key(kind)
    default: list[Ext] = [(x509.BasicConstraints(ca=True, path_length=None), True)]
    exts = default if extensions is None else list(extensions)
    return Ca(key, build(cn, key, issuer, exts, **kw))


def openssl_style_ca(cn: str = "openssl-style CA", kind: str = "p256") -> Ca:
    """What `openssl req -x509 -newkey ... -nodes` makes with the default openssl.cnf
    (v3_ca): subjectKeyIdentifier, authorityKeyIdentifier, basicConstraints critical
    cA=TRUE; no keyUsage."""
    key = new_key(kind)
    return Ca(key, build(cn, key, None, [
        (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), False),
        (x509.BasicConstraints(ca=True, path_length=None), True),
    ]))
