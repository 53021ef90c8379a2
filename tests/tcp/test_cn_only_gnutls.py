"""CN-only client certificates (no subjectAltName; issue 13) against GnuTLS, the library
tlshd uses, over TLS 1.3 on TCP: gnutls-serv, verifying client certificates, trusts our
client's CN-only certificate (with a critical clientAuth EKU too), and our server takes
gnutls-cli's. gnutls-serv checks no key purpose (nor does tlshd), so refusing a
serverAuth-only client certificate is ours alone (README, "X.509 profile")."""
from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding

from quichsd.tls.config import ClientAuth, Credentials
from quichsd.tls.constants import AlertDescription
from tests.pki import Ext, build, eku, new_key, test_ca

from .tlstcp import (
    Files,
    OurServer,
    client_config,
    free_tcp_port,
    our_client,
    peer,
    require,
    server_config,
    write_pki,
)

TLS13 = "NORMAL:-VERS-ALL:+VERS-TLS1.3"
EKU_CLIENT_CRITICAL: Ext = (eku("client")[0], True)
CASES = {"eku-client": [eku("client")], "eku-client-critical": [EKU_CLIENT_CRITICAL], "no-eku": []}


@pytest.fixture(scope="module")
def tools() -> tuple[str, str]:
    return require("gnutls-serv", "gnutls-bin"), require("gnutls-cli", "gnutls-bin")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    return write_pki(Path(tmp_path_factory.mktemp("cn-only-pki")))


def _cn_only(directory: Path, extensions: list[Ext]) -> tuple[x509.Certificate, object, Path, Path]:
    key = new_key("p256")
    cert = build("nfs-client", key, test_ca(), extensions)
    cert_file, key_file = directory / "client.pem", directory / "client.key"
    cert_file.write_bytes(cert.public_bytes(Encoding.PEM))
    key_file.write_bytes(key.private_bytes(Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert, key, cert_file, key_file


def _gnutls_serv(tools: tuple[str, str], files: Files, port: int):  # type: ignore[no-untyped-def]
    return peer([tools[0], "--echo", "-p", str(port), "--priority", TLS13,
                 "--x509certfile", str(files.cert), "--x509keyfile", str(files.key),
                 "--require-client-cert", "--verify-client-cert", "--x509cafile", str(files.ca)],
                ready=b"listening on IPv4")


@pytest.mark.parametrize("case", CASES)
def test_gnutls_serv_takes_our_cn_only_certificate(tools, files, tmp_path, case) -> None:
    cert, key, _, _ = _cn_only(tmp_path, CASES[case])
    port = free_tcp_port()
    with _gnutls_serv(tools, files, port) as server:
        out = our_client(port, client_config(credentials=Credentials([cert], key)), b"hello gnutls\n", b"\n")
        assert b"The certificate is trusted" in server.wait_for(b"Status:")
        server.wait_for(b"Subject: CN=nfs-client")
    assert out.error is None, out.error
    assert out.received == b"hello gnutls\n"  # echoed under its keys


def _serve_gnutls_cli(tools, files, cert_file: Path, key_file: Path):  # type: ignore[no-untyped-def]
    server = OurServer(server_config(client_auth=ClientAuth.REQUIRED), b"hello from quichsd\n",
                       b"from gnutls\n")
    argv = [tools[1], "-p", str(server.port), "127.0.0.1", "--x509cafile", str(files.ca),
            "--verify-hostname", "localhost", "--sni-hostname", "localhost", "--priority", TLS13,
            "--x509certfile", str(cert_file), "--x509keyfile", str(key_file)]
    with peer(argv, stdin=b"from gnutls\n") as client:
        outcome = server.join()
        if outcome.error is None:
            client.wait_for(b"hello from quichsd")
    return outcome


@pytest.mark.parametrize("case", CASES)
def test_our_server_takes_gnutls_clis_cn_only_certificate(tools, files, tmp_path, case) -> None:
    _, _, cert_file, key_file = _cn_only(tmp_path, CASES[case])
    out = _serve_gnutls_cli(tools, files, cert_file, key_file)
    assert out.error is None, out.error
    assert out.received == b"from gnutls\n"
    assert out.complete is not None
    assert out.complete.peer_certificates[0].subject.rfc4514_string() == "CN=nfs-client"


def test_our_server_refuses_gnutls_clis_server_auth_only_one(tools, files, tmp_path) -> None:
    _, _, cert_file, key_file = _cn_only(tmp_path, [eku("server")])
    out = _serve_gnutls_cli(tools, files, cert_file, key_file)
    assert out.error is not None and getattr(out.error, "alert", None) == AlertDescription.bad_certificate, \
        out.error
    assert "client authentication" in str(out.error)
