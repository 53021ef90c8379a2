"""TLS over TCP end to end on the real kernel: our consumer module (kmod/quichsd_upcall.c) asks
for a client and a server handshake on the two ends of one in-kernel loopback TCP connection,
the daemon does both and installs kTLS, and the module then sends data=N bytes each way
through the two sockets and checks they arrive intact (`ulp=tls/tls`: through kTLS).

tlshd is the reference here: its results are what quichsd's TCP path (issue 12) must give.
"""
from __future__ import annotations

import errno

import pytest

from tests.pki import ca_cert, leaf, test_ca
from tests.qemu.guest.kernel import Daemon, add_psk_key, tlshd_daemon, upcall

DATA = 256 * 1024            # crosses many TLS records (16 KiB each) and TCP windows
KEYRING = "quichsd-ktls"
# The failure cases: tlshd's failing client sends no alert and leaves the connection open,
# so its server fails only when this handshake timeout runs out (also EACCES, GnuTLS's
# timeout), 20 s with tlshd's own default.
FAIL_TIMEOUT_MS = 5000


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory):
    from cryptography.hazmat.primitives import serialization
    d = tmp_path_factory.mktemp("pki")
    cert, key = leaf("p256")
    (d / "ca.pem").write_bytes(test_ca().cert.public_bytes(serialization.Encoding.PEM))
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (d / "key.pem").chmod(0o600)
    # A CA nobody trusts, for the untrusted-certificate case.
    untrusted = ca_cert("a CA nobody here trusts").cert
    (d / "other-ca.pem").write_bytes(untrusted.public_bytes(serialization.Encoding.PEM))
    return d


def config(d, client_trust: str = "ca.pem") -> str:
    return (f"[authenticate]\nkeyrings = {KEYRING}\n\n"
            f"[authenticate.client]\nx509.truststore = {d}/{client_trust}\n"
            f"x509.certificate = {d}/cert.pem\nx509.private_key = {d}/key.pem\n\n"
            f"[authenticate.server]\nx509.truststore = {d}/ca.pem\n"
            f"x509.certificate = {d}/cert.pem\nx509.private_key = {d}/key.pem\n")


@pytest.fixture(scope="module")
def psk() -> int:
    return add_psk_key("quichsd-ktls-psk", bytes(range(32)), keyring=KEYRING)


@pytest.fixture
def tlshd(tmp_path, pki_dir) -> Daemon:
    with tlshd_daemon(tmp_path, config(pki_dir)) as d:
        yield d


@pytest.mark.parametrize("command", [
    "tcp pair x509 peername=localhost",
    "tcp pair anon peername=localhost",
    "tcp pair psk psk={psk}",
], ids=["x509", "anon", "psk"])
def test_pair_carries_data_both_ways_through_ktls(tlshd, psk, command) -> None:
    report = upcall(command.format(psk=psk) + f" timeout=20000 data={DATA}")
    assert report.sides["client"].status == 0, tlshd.output()
    assert report.sides["server"].status == 0, tlshd.output()
    assert report.exchange is not None
    assert (report.exchange.client_to_server, report.exchange.server_to_client) == (DATA, DATA)
    assert report.exchange.ulp == "tls/tls"


def test_x509_client_reports_the_server_certificate_key(tlshd) -> None:
    report = upcall("tcp pair x509 peername=localhost timeout=20000")
    assert report.sides["client"].status == 0, tlshd.output()
    assert report.sides["client"].peerid != 0       # the server's certificate, as a key


def test_untrusted_server_certificate(tmp_path, pki_dir) -> None:
    with tlshd_daemon(tmp_path, config(pki_dir, client_trust="other-ca.pem")) as d:
        report = upcall(f"tcp pair x509 peername=localhost timeout={FAIL_TIMEOUT_MS}")
        assert report.cancelled == 0, d.output()
        assert report.sides["client"].status == -errno.EACCES, d.output()
        assert report.sides["server"].status == -errno.EACCES, d.output()


def test_wrong_psk(tlshd) -> None:
    wrong = add_psk_key("quichsd-ktls-psk", bytes(range(1, 33)), keyring="quichsd-other")
    report = upcall(f"tcp pair psk psk={wrong} timeout={FAIL_TIMEOUT_MS}")
    assert report.cancelled == 0, tlshd.output()
    assert report.sides["client"].status == -errno.EACCES, tlshd.output()
    assert report.sides["server"].status == -errno.EACCES, tlshd.output()
