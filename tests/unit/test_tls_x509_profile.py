"""The X.509 profile (quichsd/tls/certs.py): what GnuTLS accepts as tlshd uses it is
accepted, and what it (or the web PKI where the two agree) refuses is refused, with the
alert RFC 8446 §6.2 names and a message that says why.

Most tests call verify_chain() directly; a few run whole handshakes to show the daemon's
and the API's paths (our client verifying a server, our server verifying a client) take
the same profile.
"""
from __future__ import annotations

import functools
import shutil
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding

from quichsd.tls.certs import TrustStore, cn_matches, verify_chain
from quichsd.tls.config import ClientAuth, Credentials, TlsConfig
from quichsd.tls.constants import AlertDescription as A
from quichsd.tls.errors import TlsError
from tests.pki import NOW, Ca, build, ca_cert, eku, name, new_key, openssl_style_ca, san
from tests.tls_pair import run_pair

T = NOW.timestamp()
KU_CA = (x509.KeyUsage(True, False, False, False, False, True, True, False, False), True)
KU_NO_CERT_SIGN = (x509.KeyUsage(True, False, False, False, False, False, True, False, False), True)


def bc(ca: bool, path_length: int | None = None, critical: bool = True):
    return x509.BasicConstraints(ca=ca, path_length=path_length), critical


def server_leaf(issuer: Ca, *exts, cn: str = "server.test", **kw) -> x509.Certificate:
    return build(cn, new_key("p256"), issuer, list(exts) or [san("server.test"), eku("server")], **kw)


def as_server(trust: TrustStore | Ca, chain, server_name: str = "server.test", now: float = T) -> None:
    store = trust if isinstance(trust, TrustStore) else TrustStore.from_certificates([trust.cert])
    verify_chain(store, list(chain), peer_is_server=True, server_name=server_name, now=now)


def as_client(trust: TrustStore | Ca, chain, now: float = T) -> None:
    store = trust if isinstance(trust, TrustStore) else TrustStore.from_certificates([trust.cert])
    verify_chain(store, list(chain), peer_is_server=False, server_name=None, now=now)


def rejected(fn, *args, **kw) -> TlsError:
    with pytest.raises(TlsError) as info:
        fn(*args, **kw)
    return info.value


# -- accepted: what GnuTLS accepts --------------------------------------------------------


def test_ca_without_key_usage_verifies_a_server_and_a_client() -> None:
    """tlshd's trust stores: an `openssl req -x509` CA has no keyUsage."""
    ca = openssl_style_ca()
    as_server(ca, [server_leaf(ca)])
    as_client(ca, [build("client", new_key("p256"), ca, [eku("client")])])


def test_cn_only_client_certificate_with_client_auth_is_accepted() -> None:
    ca = openssl_style_ca()
    as_client(ca, [build("host.example", new_key("p256"), ca, [eku("client")])])
    as_client(ca, [build("no extensions but AKI", new_key("p256"), ca, [])])  # EKU absent: any use


def test_client_certificate_needs_no_authority_key_identifier() -> None:
    ca = openssl_style_ca()
    as_client(ca, [build("client", new_key("p256"), ca, [eku("client")], aki=False)])


def test_ca_with_non_critical_basic_constraints_and_any_key_identifiers() -> None:
    root = ca_cert("root", extensions=[bc(True, critical=False)])
    mid_key = new_key("p256")
    mid = Ca(mid_key, build("mid", mid_key, root, [
        bc(True, critical=False),
        (x509.AuthorityKeyIdentifier(b"\x01" * 20, [x509.DirectoryName(root.cert.subject)],
                                     root.cert.serial_number), False),
    ], aki=False))
    as_server(root, [server_leaf(mid), mid.cert])


def test_self_signed_server_certificate_trusted_as_itself() -> None:
    """`openssl req -x509 -addext subjectAltName=...` as its own trust store: the leaf has
    basicConstraints cA=TRUE (and here keyCertSign), which GnuTLS does not hold against it."""
    key = new_key("p256")
    cert = build("server.test", key, None, [bc(True), KU_CA, san("server.test")])
    as_server(TrustStore.from_certificates([cert]), [cert])


def test_server_certificate_without_subject_alt_name_matches_its_cn() -> None:
    ca = openssl_style_ca()
    as_server(ca, [build("server.test", new_key("p256"), ca, [eku("server")])])
    as_server(ca, [build("server.test", new_key("p256"), ca, [])])
    as_server(ca, [build("*.example.test", new_key("p256"), ca, [])], "host.example.test")
    # A subjectAltName with no DNS or IP names (an e-mail address) still lets the CN count.
    email = (x509.SubjectAlternativeName([x509.RFC822Name("ops@server.test")]), False)
    as_server(ca, [build("server.test", new_key("p256"), ca, [email])])


def test_intermediate_chain_under_openssl_style_root() -> None:
    root = openssl_style_ca()
    mid = ca_cert("intermediate", root, [bc(True, 0), KU_CA])
    as_server(root, [server_leaf(mid), mid.cert])
    as_client(root, [build("client", new_key("p256"), mid, [eku("client")]), mid.cert])


def test_intermediate_without_key_usage_under_a_root_with_it() -> None:
    """Stores whose anchors all have keyUsage are tried with cryptography's own keyUsage
    rule first (no Python call per CA); an intermediate without keyUsage is then decided
    by the full profile, which takes it."""
    root = ca_cert("root with keyUsage", extensions=[bc(True), KU_CA])
    trust = TrustStore.from_certificates([root.cert])
    assert trust.anchors_have_key_usage
    assert not TrustStore.from_certificates([openssl_style_ca().cert]).anchors_have_key_usage
    assert trust.with_crls([]).anchors_have_key_usage
    mid = ca_cert("mid without keyUsage", root, [bc(True)])
    as_server(trust, [server_leaf(mid), mid.cert])
    as_client(trust, [build("client", new_key("p256"), mid, [eku("client")]), mid.cert])
    bad = ca_cert("mid without keyCertSign", root, [bc(True), KU_NO_CERT_SIGN])
    err = rejected(as_server, trust, [server_leaf(bad), bad.cert])
    assert err.alert == A.bad_certificate and "keyUsage" in str(err)


# -- refused ---------------------------------------------------------------------------


def _flip_signature(cert: x509.Certificate) -> x509.Certificate:
    der = bytearray(cert.public_bytes(Encoding.DER))
    der[-1] ^= 0x01  # the last byte of the signature's s: still DER, no longer valid
    return x509.load_der_x509_certificate(bytes(der))


def test_wrong_signature_is_refused() -> None:
    ca = openssl_style_ca()
    err = rejected(as_server, ca, [_flip_signature(server_leaf(ca))])
    assert err.alert == A.bad_certificate and "signature" in str(err)
    err = rejected(as_client, ca, [_flip_signature(build("client", new_key("p256"), ca, [eku("client")]))])
    assert err.alert == A.bad_certificate and "signature" in str(err)


def test_namesake_ca_is_unknown_by_key_identifier_else_a_signature_failure() -> None:
    """Another CA under the trusted CA's name (two test CAs made with the same subject).
    As GnuTLS tells them apart (certtool: "issuer is unknown" / "signature ... invalid"):
    a leaf whose authorityKeyIdentifier names another key comes from an unknown CA; without
    one, all that shows is that the trusted CA did not sign it."""
    ca, namesake = openssl_style_ca("same name"), openssl_style_ca("same name")
    err = rejected(as_server, ca, [server_leaf(namesake)])
    assert err.alert == A.unknown_ca and "unknown CA" in str(err) and "another key" in str(err), err
    err = rejected(as_server, ca, [server_leaf(namesake, aki=False)])
    assert err.alert == A.bad_certificate and "signature does not verify" in str(err)


@pytest.mark.parametrize("days", [(-30, -1), (1, 30)], ids=["expired", "not-yet-valid"])
def test_out_of_validity_is_refused(days) -> None:
    ca = openssl_style_ca()
    err = rejected(as_server, ca, [server_leaf(ca, days=days)])
    assert err.alert == A.certificate_expired
    err = rejected(as_client, ca, [build("client", new_key("p256"), ca, [eku("client")], days=days)])
    assert err.alert == A.certificate_expired


def test_expired_ca_is_refused() -> None:
    ca = ca_cert("old CA", days=(-60, -1))
    assert rejected(as_server, ca, [server_leaf(ca)]).alert == A.certificate_expired


@pytest.mark.parametrize("extensions", [[bc(False)], [], [eku("server")]],
                         ids=["ca-false", "no-basic-constraints", "only-eku"])
def test_leaf_used_as_ca_is_refused(extensions) -> None:
    root = openssl_style_ca()
    fake_key = new_key("p256")
    fake = Ca(fake_key, build("not a CA", fake_key, root, extensions))
    for check in (lambda: as_server(root, [server_leaf(fake), fake.cert]),
                  lambda: as_client(root,
                                    [build("client", new_key("p256"), fake, [eku("client")]), fake.cert])):
        err = rejected(check)
        assert err.alert == A.bad_certificate and "not a CA" in str(err), err


def test_ca_whose_key_usage_forbids_signing_certificates_is_refused() -> None:
    root = openssl_style_ca()
    mid = ca_cert("mid", root, [bc(True), KU_NO_CERT_SIGN])
    err = rejected(as_server, root, [server_leaf(mid), mid.cert])
    assert err.alert == A.bad_certificate and "keyUsage" in str(err)


def test_path_length_exceeded_is_refused() -> None:
    root = openssl_style_ca()
    mid0 = ca_cert("mid0", root, [bc(True, 0), KU_CA])
    mid1 = ca_cert("mid1", mid0, [bc(True), KU_CA])
    err = rejected(as_server, root, [server_leaf(mid1), mid1.cert, mid0.cert])
    assert err.alert == A.bad_certificate and "path length" in str(err)
    err = rejected(as_client, root,
                   [build("c", new_key("p256"), mid1, [eku("client")]), mid1.cert, mid0.cert])
    assert err.alert == A.bad_certificate and "path length" in str(err)


def test_wrong_extended_key_usage_is_refused() -> None:
    ca = openssl_style_ca()
    server_only = build("server.test", new_key("p256"), ca, [san("server.test"), eku("server")])
    client_only = build("server.test", new_key("p256"), ca, [san("server.test"), eku("client")])
    err = rejected(as_client, ca, [server_only])
    assert err.alert == A.bad_certificate and "client authentication" in str(err)
    err = rejected(as_server, ca, [client_only])
    assert err.alert == A.bad_certificate and "server authentication" in str(err)
    # The same on the CN path, and for an intermediate restricted to the other purpose.
    err = rejected(as_server, ca, [build("server.test", new_key("p256"), ca, [eku("client")])])
    assert err.alert == A.bad_certificate and "server authentication" in str(err)
    mid = ca_cert("client-only CA", ca, [bc(True), KU_CA, eku("client")])
    assert rejected(as_server, ca, [server_leaf(mid), mid.cert]).alert == A.bad_certificate
    assert rejected(as_server, ca, [build("server.test", new_key("p256"), mid, []), mid.cert]).alert \
        == A.bad_certificate
    # anyExtendedKeyUsage serves on a CA.
    any_mid = ca_cert("any CA", ca, [bc(True), KU_CA, eku("any")])
    as_server(ca, [server_leaf(any_mid), any_mid.cert])
    as_server(ca, [build("server.test", new_key("p256"), any_mid, []), any_mid.cert])


@pytest.mark.parametrize(("cert_names", "cn", "server_name"), [
    (("other.test",), "server.test", "server.test"),        # a DNS SAN disables the CN
    (("10.0.0.1",), "server.test", "server.test"),          # so does an IP SAN
    ((), "other.test", "server.test"),                      # CN path, other name
    ((), "10.0.0.1", "10.0.0.1"),                           # never a CN for an IP address
    (("server.test",), "server.test", "10.0.0.1"),
    ((), "*.test", "server.test"),                          # wildcard needs two labels after it
    ((), "*.example.test", "a.b.example.test"),             # and stands for one label
    ((), "*.example.test", "example.test"),
], ids=["dns-san-over-cn", "ip-san-over-cn", "cn-mismatch", "ip-vs-cn", "ip-vs-dns-san", "wildcard-too-wide",
        "wildcard-two-labels", "wildcard-no-label"])
def test_name_mismatch_is_refused(cert_names, cn, server_name) -> None:
    ca = openssl_style_ca()
    exts = [san(*cert_names)] if cert_names else []
    err = rejected(as_server, ca, [build(cn, new_key("p256"), ca, exts)], server_name)
    assert err.alert == A.bad_certificate and "name mismatch" in str(err), err


def test_two_common_names_do_not_match() -> None:
    """RFC 6125 §1.8, as GnuTLS: the CN fallback needs exactly one CN."""
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "server.test"),
                         x509.NameAttribute(x509.NameOID.COMMON_NAME, "server.test")])
    ca = openssl_style_ca()
    cert = build(subject, new_key("p256"), ca, [])
    assert not cn_matches(cert, "server.test")
    assert rejected(as_server, ca, [cert]).alert == A.bad_certificate


def test_unknown_ca_says_unknown_ca() -> None:
    """The peer's chain ends at a self-signed root the store does not hold; cryptography's
    last interior error is about that root tried as its own issuer (path length with
    pathlen 0, chain depth without), but the reason is an unknown CA."""
    ours = openssl_style_ca("our CA")
    for theirs in (ca_cert("their CA", extensions=[bc(True, 0), KU_CA]), openssl_style_ca("their CA")):
        client_leaf = build("c", new_key("p256"), theirs, [eku("client")])
        for check in (functools.partial(as_server, ours, [server_leaf(theirs), theirs.cert]),
                      functools.partial(as_client, ours, [client_leaf, theirs.cert]),
                      functools.partial(as_server, ours, [server_leaf(theirs)])):
            err = rejected(check)
            assert err.alert == A.unknown_ca, err
            assert "unknown CA" in str(err) and "their CA" in str(err), err
            assert "path length" not in str(err) and "depth" not in str(err), err


def test_unknown_ca_with_intermediate() -> None:
    ours = openssl_style_ca("our CA")
    theirs = openssl_style_ca("their CA")
    mid = ca_cert("their intermediate", theirs, [bc(True), KU_CA])
    err = rejected(as_server, ours, [server_leaf(mid), mid.cert])
    assert err.alert == A.unknown_ca and "their CA" in str(err)


# -- whole handshakes: both verification paths take the profile ----------------------------


def _credentials(cert: x509.Certificate, key) -> Credentials:
    return Credentials([cert], key)


def test_handshake_with_openssl_style_ca_and_cn_only_client() -> None:
    ca = openssl_style_ca()
    trust = TrustStore.from_certificates([ca.cert])
    skey, ckey = new_key("p256"), new_key("p256")
    server = _credentials(build("server.test", skey, ca, [san("server.test")]), skey)
    client = _credentials(build("client.test", ckey, ca, [eku("client")]), ckey)
    client_cfg = TlsConfig(alpn_protocols=[b"smb"], server_name="server.test", trust=trust,
                           credentials=client)
    server_cfg = TlsConfig(alpn_protocols=[b"smb"], credentials=server, trust=trust,
                           client_auth=ClientAuth.REQUIRED)
    c, s = run_pair(client_cfg, server_cfg, T)
    assert c.complete.alpn == b"smb"
    assert s.complete.peer_certificates[0].subject == name("client.test")


def test_handshake_refuses_server_only_certificate_as_client() -> None:
    ca = openssl_style_ca()
    trust = TrustStore.from_certificates([ca.cert])
    skey, ckey = new_key("p256"), new_key("p256")
    server = _credentials(build("server.test", skey, ca, [san("server.test")]), skey)
    client = _credentials(build("client.test", ckey, ca, [eku("server")]), ckey)
    with pytest.raises(TlsError) as info:
        run_pair(TlsConfig(alpn_protocols=[b"smb"], server_name="server.test", trust=trust,
                           credentials=client),
                 TlsConfig(alpn_protocols=[b"smb"], credentials=server, trust=trust,
                           client_auth=ClientAuth.REQUIRED), T)
    assert info.value.alert == A.bad_certificate and "client authentication" in str(info.value)


# -- the real thing: a CA from the openssl command line ------------------------------------

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")


def _openssl_ca(tmp_path, *args: str) -> Ca:
    key_file, cert_file = tmp_path / "ca.key", tmp_path / "ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-keyout", str(key_file), "-out", str(cert_file), "-days", "30", "-subj",
                    "/CN=openssl CA",
                    *args], check=True, capture_output=True)
    key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    return Ca(key, x509.load_pem_x509_certificate(cert_file.read_bytes()))


@needs_openssl
def test_openssl_req_x509_ca(tmp_path) -> None:
    ca = _openssl_ca(tmp_path)
    with pytest.raises(x509.ExtensionNotFound):
        ca.cert.extensions.get_extension_for_class(x509.KeyUsage)
    as_server(ca, [server_leaf(ca)], now=ca.cert.not_valid_before_utc.timestamp() + 60)
    as_client(ca, [build("client", new_key("p256"), ca, [eku("client")])],
              now=ca.cert.not_valid_before_utc.timestamp() + 60)


@needs_openssl
def test_version_1_ca_is_refused(tmp_path) -> None:
    """A divergence from GnuTLS, which accepts a v1 trust anchor (`openssl req -x509` with
    an empty config makes one): cryptography refuses v1 certificates outright."""
    ca = _openssl_ca(tmp_path, "-config", "/dev/null")
    assert ca.cert.version == x509.Version.v1
    err = rejected(as_server, ca, [server_leaf(ca)], now=ca.cert.not_valid_before_utc.timestamp() + 60)
    assert err.alert == A.bad_certificate and "X509v3" in str(err)
