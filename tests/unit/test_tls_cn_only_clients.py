"""Client certificates without subjectAltName (issue 13): a CA-signed certificate that names
its holder only in the subject's CN, as NFS and SMB client certificates often do, is
accepted as GnuTLS (tlshd) accepts it, with every other check kept: signature, validity,
basic constraints, path length, extended key usage (either criticality), CRLs. And the
rejection texts say what happened (unknown CA, expired, name mismatch, bad signature).

Where GnuTLS's certtool is installed, its verdict on the same files is compared with ours.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from quichsd.devcerts import make_crl
from quichsd.tls.certs import TrustStore, verify_chain
from quichsd.tls.constants import AlertDescription as A
from quichsd.tls.errors import TlsError
from tests.pki import NOW, Ca, build, ca_cert, eku, make_ca, new_key, openssl_style_ca, san

T = NOW.timestamp()
KU_CA = (x509.KeyUsage(True, False, False, False, False, True, True, False, False), True)
KU_SIGN = (x509.KeyUsage(True, False, False, False, False, False, False, False, False), True)
BC_LEAF = (x509.BasicConstraints(ca=False, path_length=None), True)
EKU_CLIENT_CRITICAL = (eku("client")[0], True)
EKU_SERVER_CRITICAL = (eku("server")[0], True)

# Both CA shapes: with keyUsage (verification first tries cryptography's own rules) and
# without (what `openssl req -x509` makes: only the full profile applies).
CAS = {"ca-with-key-usage": lambda: make_ca("CA with keyUsage"), "openssl-style-ca": openssl_style_ca}

ACCEPTED = {
    "eku-client": [eku("client")],
    "eku-client-critical": [EKU_CLIENT_CRITICAL],
    "eku-client-and-server": [eku("server", "client")],
    "no-eku": [],
    "full-extension-set": [BC_LEAF, KU_SIGN, eku("client")],
}


def as_client(trust: TrustStore, chain: list[x509.Certificate], now: float = T) -> None:
    verify_chain(trust, chain, peer_is_server=False, server_name=None, now=now)


def store(ca: Ca, crls=()) -> TrustStore:
    return TrustStore.from_certificates([ca.cert]).with_crls(crls)


def rejected(trust: TrustStore, chain: list[x509.Certificate], **kw) -> TlsError:
    with pytest.raises(TlsError) as info:
        as_client(trust, chain, **kw)
    return info.value


def cn_only(issuer: Ca, extensions, cn: str = "nfs-client.example", **kw) -> x509.Certificate:
    cert = build(cn, new_key("p256"), issuer, extensions, **kw)
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return cert


def _flip_signature(cert: x509.Certificate) -> x509.Certificate:
    der = bytearray(cert.public_bytes(Encoding.DER))
    der[-1] ^= 0x01  # the last byte of the signature: still DER, no longer valid
    return x509.load_der_x509_certificate(bytes(der))


@pytest.mark.parametrize("ca_kind", CAS)
@pytest.mark.parametrize("variant", ACCEPTED)
def test_cn_only_client_certificate_is_accepted(ca_kind, variant) -> None:
    ca = CAS[ca_kind]()
    as_client(store(ca), [cn_only(ca, ACCEPTED[variant])])


@pytest.mark.parametrize("ca_kind", CAS)
def test_cn_only_client_under_an_intermediate(ca_kind) -> None:
    root = CAS[ca_kind]()
    mid = ca_cert("intermediate", root, [(x509.BasicConstraints(ca=True, path_length=0), True), KU_CA])
    as_client(store(root), [cn_only(mid, [eku("client")]), mid.cert])
    # The intermediate's path length still counts: one more CA below it is refused.
    mid2 = ca_cert("below", mid, [(x509.BasicConstraints(ca=True, path_length=None), True), KU_CA])
    err = rejected(store(root), [cn_only(mid2, [eku("client")]), mid2.cert, mid.cert])
    assert err.alert == A.bad_certificate and "path length" in str(err), err


@pytest.mark.parametrize("ca_kind", CAS)
@pytest.mark.parametrize("extensions", [[eku("server")], [EKU_SERVER_CRITICAL]], ids=["eku", "eku-critical"])
def test_cn_only_with_server_auth_only_is_refused(ca_kind, extensions) -> None:
    ca = CAS[ca_kind]()
    err = rejected(store(ca), [cn_only(ca, extensions)])
    assert err.alert == A.bad_certificate and "client authentication" in str(err), err


@pytest.mark.parametrize("ca_kind", CAS)
@pytest.mark.parametrize("days", [(-30, -1), (1, 30)], ids=["expired", "not-yet-valid"])
def test_cn_only_out_of_validity_is_refused(ca_kind, days) -> None:
    ca = CAS[ca_kind]()
    err = rejected(store(ca), [cn_only(ca, [eku("client")], days=days)])
    assert err.alert == A.certificate_expired and "expired or not yet valid" in str(err), err


def test_cn_only_signed_by_a_leaf_is_refused() -> None:
    root = openssl_style_ca()
    not_ca_key = new_key("p256")
    not_ca = Ca(not_ca_key, build("not a CA", not_ca_key, root, [BC_LEAF, eku("client")]))
    err = rejected(store(root), [cn_only(not_ca, [eku("client")]), not_ca.cert])
    assert err.alert == A.bad_certificate and "not a CA" in str(err), err


def test_revoked_cn_only_is_refused() -> None:
    ca = make_ca("CA with a CRL")
    cert = cn_only(ca, [eku("client")])
    as_client(store(ca, [make_crl(ca, [])]), [cert])
    err = rejected(store(ca, [make_crl(ca, [cert])]), [cert])
    assert err.alert == A.certificate_revoked, err


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")


@needs_openssl
def test_version_1_leaf_says_so(tmp_path) -> None:
    """`openssl x509 -req` without an extension file makes a version 1 certificate, which
    GnuTLS takes and cryptography's path builder refuses (a divergence): the text says so."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path, timeout=30)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "30", "-subj", "/CN=openssl CA")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "c.key", "-out", "c.csr", "-subj", "/CN=nfs-client")
    openssl("x509", "-req", "-in", "c.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-out", "c.pem",
            "-days", "10")
    leaf = x509.load_pem_x509_certificate((tmp_path / "c.pem").read_bytes())
    assert leaf.version == x509.Version.v1
    trust = TrustStore.from_file(tmp_path / "ca.pem")
    with pytest.raises(TlsError) as info:
        as_client(trust, [leaf], now=leaf.not_valid_before_utc.timestamp() + 60)
    assert info.value.alert == A.bad_certificate and "version 3" in str(info.value), info.value


# -- rejection texts -------------------------------------------------------------------


def test_texts_unknown_ca() -> None:
    ours, theirs = make_ca("our CA"), make_ca("their CA")
    for chain in ([cn_only(theirs, [eku("client")])], [cn_only(theirs, [eku("client")]), theirs.cert]):
        err = rejected(store(ours), chain)
        assert err.alert == A.unknown_ca, err
        assert "unknown CA" in str(err) and "their CA" in str(err) and "path length" not in str(err), err
    namesake = make_ca("our CA")
    err = rejected(store(ours), [cn_only(namesake, [eku("client")])])
    assert err.alert == A.unknown_ca and "another key" in str(err), err


def test_texts_expired_name_mismatch_bad_signature() -> None:
    ca = make_ca()
    err = rejected(store(ca), [cn_only(ca, [eku("client")], days=(-30, -1))])
    assert str(err).startswith("certificate_expired: certificate rejected: expired or not yet valid"), err
    err = rejected(store(ca), [_flip_signature(cn_only(ca, [eku("client")]))])
    assert err.alert == A.bad_certificate and "a signature does not verify under its issuer's key" in str(err)
    assert "unknown CA" not in str(err)
    leaf = build("server.test", new_key("p256"), ca, [san("other.test"), eku("server")])
    with pytest.raises(TlsError) as info:
        verify_chain(store(ca), [leaf], peer_is_server=True, server_name="server.test", now=T)
    assert info.value.alert == A.bad_certificate
    assert "name mismatch: no subjectAltName matches" in str(info.value), info.value
    cn_leaf = build("other.test", new_key("p256"), ca, [eku("server")])
    with pytest.raises(TlsError) as info:
        verify_chain(store(ca), [cn_leaf], peer_is_server=True, server_name="server.test", now=T)
    assert "name mismatch: 'server.test' is not the certificate's CN" in str(info.value), info.value


def test_server_certificates_still_need_their_name() -> None:
    """The relaxation is for clients: a CN-only server certificate is matched on its CN
    (GnuTLS's fallback), and a critical serverAuth EKU is accepted as GnuTLS does."""
    ca = make_ca()
    leaf = build("server.test", new_key("p256"), ca, [EKU_SERVER_CRITICAL])
    verify_chain(store(ca), [leaf], peer_is_server=True, server_name="server.test", now=T)
    with pytest.raises(TlsError) as info:
        verify_chain(store(ca), [leaf], peer_is_server=True, server_name="other.test", now=T)
    assert "name mismatch" in str(info.value)
    with_san = build("x", new_key("p256"), ca, [san("server.test"), EKU_SERVER_CRITICAL])
    verify_chain(store(ca), [with_san], peer_is_server=True, server_name="server.test", now=T)
    client_only = build("server.test", new_key("p256"), ca, [san("server.test"), EKU_CLIENT_CRITICAL])
    with pytest.raises(TlsError) as info:
        verify_chain(store(ca), [client_only], peer_is_server=True, server_name="server.test", now=T)
    assert "server authentication" in str(info.value)


# -- against GnuTLS ----------------------------------------------------------------------

needs_certtool = pytest.mark.skipif(shutil.which("certtool") is None,
                                    reason="GnuTLS's certtool is not installed (gnutls-bin)")


def _certtool_accepts(tmp: Path, ca: Ca, chain: list[x509.Certificate]) -> bool:
    (tmp / "ca.pem").write_bytes(ca.cert.public_bytes(Encoding.PEM))
    (tmp / "chain.pem").write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in chain))
    out = subprocess.run(["certtool", "--verify", "--load-ca-certificate", str(tmp / "ca.pem"),
                          "--infile", str(tmp / "chain.pem"), "--verify-purpose", "1.3.6.1.5.5.7.3.2"],
                         capture_output=True, text=True, timeout=30)
    return "Chain verification output: Verified" in out.stdout


def _ours_accepts(ca: Ca, chain: list[x509.Certificate]) -> bool:
    try:
        as_client(store(ca), chain, now=NOW.timestamp() + 3600)  # certtool reads today's clock
    except TlsError:
        return False
    return True


@needs_certtool
def test_same_verdicts_as_gnutls(tmp_path) -> None:
    ca, other = openssl_style_ca("the CA"), openssl_style_ca("another CA")
    cases = {name: [cn_only(ca, exts)] for name, exts in ACCEPTED.items()}
    cases |= {
        "server-only": [cn_only(ca, [eku("server")])],
        "server-only-critical": [cn_only(ca, [EKU_SERVER_CRITICAL])],
        "expired": [cn_only(ca, [eku("client")], days=(-30, -1))],
        "not-yet-valid": [cn_only(ca, [eku("client")], days=(2, 30))],
        "unknown-ca": [cn_only(other, [eku("client")]), other.cert],
        "bad-signature": [_flip_signature(cn_only(ca, [eku("client")]))],
    }
    verdicts = {name: (_certtool_accepts(tmp_path, ca, chain), _ours_accepts(ca, chain))
                for name, chain in cases.items()}
    assert all(gnutls == ours for gnutls, ours in verdicts.values()), verdicts
    assert sum(ours for _, ours in verdicts.values()) == len(ACCEPTED), verdicts
