"""Client certificates over simulated sockets (issue 13): a CN-only client certificate is
accepted by our server; one the server refuses (wrong EKU, expired, unknown CA) ends a
connection whose TLS handshake had already completed on the client (TLS 1.3: the server
verifies the client's Certificate after the client's Finished), and the client's next calls
fail with the kernel's errno (recvmsg ENOTCONN, sendmsg EPIPE, spec §1.5, §2.2) and a
message naming the peer's close code and alert."""
from __future__ import annotations

import errno
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding

from quichsd import HandshakeConfig, HandshakeError, quic_handshake
from quichsd.devcerts import Ca, demo_ca, make_ca, new_key
from quichsd.sock.sim import frames as fr
from quichsd.sock.sim.close import describe_peer_close
from quichsd.tls.config import ClientAuth, Credentials
from tests.sockets import Pki, client_socket, echo_upper, exchange


def write_cn_only(directory: Path, issuer: Ca, *, client: bool = True,
                  days: tuple[int, int] = (-30, 365)) -> tuple[str, str]:
    """A certificate for CN=nfs-client with no subjectAltName (EKU clientAuth, or serverAuth
    only), and its key, as PEM files."""
    key = new_key("p256")
    cert = issuer.issue("nfs-client", key, names=(), ips=(), server=not client, client=client, days=days)
    cert_file, key_file = directory / "client.pem", directory / "client.key"
    cert_file.write_bytes(cert.public_bytes(Encoding.PEM))
    key_file.write_bytes(key.private_bytes(Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


def server_config(pki: Pki) -> HandshakeConfig:
    return HandshakeConfig(server=True, alpns=["h3"], cert_file=pki.cert_file, key_file=pki.key_file,
                           cafile=pki.ca_file, client_auth=ClientAuth.REQUIRED, timeout=5)


def client_config(pki: Pki, cert_file: str, key_file: str) -> HandshakeConfig:
    return HandshakeConfig(alpns=["h3"], hostname="localhost", cafile=pki.ca_file, cert_file=cert_file,
                           key_file=key_file, timeout=5)


def test_cn_only_client_certificate_accepted(pki, server_factory, tmp_path) -> None:
    srv = server_factory("sim", server_config(pki), after=echo_upper)
    cert_file, key_file = write_cn_only(tmp_path, demo_ca())
    with client_socket("sim", srv.address) as sock:
        quic_handshake(sock, client_config(pki, cert_file, key_file))
        assert exchange(sock, b"cn only") == b"CN ONLY"
    (result,) = srv.wait()
    assert result.peer_certificates[0].subject.rfc4514_string() == "CN=nfs-client"


@pytest.mark.parametrize(("case", "alert"), [
    ("server-auth-only", "bad_certificate"),
    ("expired", "certificate_expired"),
    ("unknown-ca", "unknown_ca"),
])
def test_refused_client_certificate_is_reported_on_the_next_calls(pki, server_factory, tmp_path, case,
                                                                  alert) -> None:
    srv = server_factory("sim", server_config(pki))
    issuer = make_ca("another CA") if case == "unknown-ca" else demo_ca()
    cert_file, key_file = write_cn_only(tmp_path, issuer, client=case != "server-auth-only",
                                        days=(-30, -1) if case == "expired" else (-30, 365))
    with client_socket("sim", srv.address) as sock:
        quic_handshake(sock, client_config(pki, cert_file, key_file))  # complete on our side
        (failure,) = srv.wait()
        assert isinstance(failure, HandshakeError) and failure.alert.name == alert
        sock.settimeout(5)
        with pytest.raises(OSError) as recv_error:
            sock.recv()  # waits for the server's CONNECTION_CLOSE
        with pytest.raises(OSError) as send_error:
            sock.send(b"after the close", -1, new=True, fin=True)
    code = 0x100 + failure.alert
    for err, errno_ in ((recv_error.value, errno.ENOTCONN), (send_error.value, errno.EPIPE)):
        assert err.errno == errno_, err
        assert f"peer closed: 0x{code:x} (TLS alert {alert})" in str(err), err


@pytest.mark.parametrize(("frame", "text"), [
    (fr.ConnectionClose(0x12A, 0, b"bad_certificate"), "peer closed: 0x12a (TLS alert bad_certificate)"),
    (fr.ConnectionClose(0x130, 6, b"issuer not trusted"),
     "peer closed: 0x130 (TLS alert unknown_ca: issuer not trusted)"),
    (fr.ConnectionClose(0x1FF, 0, b""), "peer closed: 0x1ff (TLS alert 255)"),
    (fr.ConnectionClose(0x0A, 0x08, b"bad frame"), "peer closed: 0xa (PROTOCOL_VIOLATION: bad frame)"),
    (fr.ConnectionClose(0x3F, 0x08, b""), "peer closed: 0x3f (transport error)"),
    (fr.ConnectionClose(0x12A, 0, b"bye", app=True), "peer closed: 0x12a (application error: bye)"),
    (fr.ConnectionClose(0x0C, 0, b"\x1b[31mred\xff"),
     r"peer closed: 0xc (APPLICATION_ERROR: '\x1b[31mred\ufffd')"),
], ids=["alert", "alert-phrase", "unknown-alert", "transport", "unknown-transport", "app", "control-chars"])
def test_peer_close_in_words(frame, text) -> None:
    assert describe_peer_close(frame) == text


def _flip_signature(cert: x509.Certificate) -> x509.Certificate:
    der = bytearray(cert.public_bytes(Encoding.DER))
    der[-1] ^= 0x01  # the last byte of the signature: still DER, no longer valid
    return x509.load_der_x509_certificate(bytes(der))


@pytest.mark.parametrize(("case", "alert", "words"), [
    ("unknown-ca", "unknown_ca", "unknown CA: issuer 'CN=another CA' is not in the trust store"),
    ("expired", "certificate_expired", "certificate rejected: expired or not yet valid"),
    ("name-mismatch", "bad_certificate", "name mismatch: no subjectAltName matches"),
    ("bad-signature", "bad_certificate", "a signature does not verify under its issuer's key"),
])
def test_our_client_says_why_it_refuses_a_server(pki, server_factory, case, alert, words) -> None:
    """The rejection texts end to end: what quic_handshake raises on our client."""
    key = new_key("p256")
    issuer = make_ca("another CA") if case == "unknown-ca" else demo_ca()
    cert = issuer.issue("localhost", key, days=(-30, -1) if case == "expired" else (-30, 365))
    if case == "bad-signature":
        cert = _flip_signature(cert)
    config = HandshakeConfig(server=True, alpns=["h3"], credentials=Credentials([cert], key), timeout=5)
    srv = server_factory("sim", config)
    hostname = "other.test" if case == "name-mismatch" else "localhost"
    with client_socket("sim", srv.address) as sock, pytest.raises(HandshakeError) as info:
        quic_handshake(sock, HandshakeConfig(alpns=["h3"], hostname=hostname, cafile=pki.ca_file, timeout=5))
    err = info.value
    assert err.errno == errno.EACCES and err.alert is not None and err.alert.name == alert, err
    assert words in str(err) and "path length" not in str(err), err
