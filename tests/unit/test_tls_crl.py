"""CRL checking after chain verification (tlshd's x509.crl; RFC 5280 §6.3, RFC 8446 §6.2)."""
from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from quichsd.devcerts import NOW, Ca, make_ca, make_crl, new_key
from quichsd.tls.certs import TrustStore, load_crls, verify_chain
from quichsd.tls.constants import AlertDescription
from quichsd.tls.errors import TlsError

T = NOW.timestamp() + 60


@pytest.fixture(scope="module")
def pki():
    root = make_ca("CRL test root")
    inter_key = new_key("p256")
    inter = Ca(inter_key, root.issue("CRL test intermediate", inter_key, ca=True, names=(), ips=()))
    leaf_key = new_key("p256")
    leaf = inter.issue("localhost", leaf_key)
    other = inter.issue("localhost", new_key("p256"))
    return root, inter, leaf, other


def store(root, *crls):  # noqa: ANN001, ANN201
    return TrustStore.from_certificates([root.cert]).with_crls(crls)


def verify(trust, chain) -> None:  # noqa: ANN001
    verify_chain(trust, chain, peer_is_server=True, server_name="localhost", now=T)


def test_a_listed_leaf_is_certificate_revoked(pki):
    root, inter, leaf, other = pki
    trust = store(root, make_crl(inter, [leaf]))
    with pytest.raises(TlsError) as err:
        verify(trust, [leaf, inter.cert])
    assert err.value.alert is AlertDescription.certificate_revoked
    verify(trust, [other, inter.cert])  # same issuer, not listed


def test_a_listed_intermediate_revokes_every_leaf_below_it(pki):
    root, inter, leaf, _ = pki
    trust = store(root, make_crl(root, [inter.cert]))
    with pytest.raises(TlsError) as err:
        verify(trust, [leaf, inter.cert])
    assert err.value.alert is AlertDescription.certificate_revoked


def test_a_crl_not_signed_by_the_issuer_proves_nothing(pki):
    root, inter, leaf, _ = pki
    impostor = make_ca("CRL test intermediate")  # same name, another key
    verify(store(root, make_crl(impostor, [leaf])), [leaf, inter.cert])


def test_client_chains_are_checked_too(pki):
    root, inter, leaf, _ = pki
    with pytest.raises(TlsError) as err:
        verify_chain(store(root, make_crl(inter, [leaf])), [leaf, inter.cert], peer_is_server=False,
                     server_name=None, now=T)
    assert err.value.alert is AlertDescription.certificate_revoked


def test_load_crls_reads_pem_bundles_and_der(pki, tmp_path):
    root, inter, leaf, _ = pki
    a, b = make_crl(inter, [leaf]), make_crl(root, [])
    pem = tmp_path / "crls.pem"
    pem.write_bytes(a.public_bytes(Encoding.PEM) + b.public_bytes(Encoding.PEM))
    assert [c.issuer for c in load_crls(pem)] == [a.issuer, b.issuer]
    der = tmp_path / "crl.der"
    der.write_bytes(a.public_bytes(Encoding.DER))
    algorithm = a.signature_hash_algorithm
    assert load_crls(der)[0].fingerprint(algorithm) == a.fingerprint(algorithm)
    bad = tmp_path / "bad.pem"
    bad.write_bytes(b"-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n")
    with pytest.raises(ValueError):
        load_crls(bad)
