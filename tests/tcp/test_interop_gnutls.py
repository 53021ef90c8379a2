"""Our TLS-over-TCP client and server against gnutls-serv / gnutls-cli (Debian's gnutls-bin,
the library tlshd uses) with TLS 1.3 only: certificates (the server verified; a client
certificate requested), PSK, the three AEADs, HelloRetryRequest, an untrusted certificate
and a wrong PSK. Application data goes both ways under the application keys after each
handshake (userspace records: the host has no kTLS)."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from quichsd.tcp.handshake import LocalAlert, PeerAlert
from quichsd.tls.config import ClientAuth
from quichsd.tls.constants import AlertDescription, CipherSuite, NamedGroup

from .tlstcp import (
    ALL_SUITES,
    GNUTLS_CIPHERS,
    PSK_IDENTITY,
    PSK_KEY,
    Files,
    OurServer,
    Outcome,
    Peer,
    client_config,
    free_tcp_port,
    our_client,
    peer,
    require,
    server_config,
    write_pki,
)

Tools = tuple[str, str]  # gnutls-serv, gnutls-cli
SHA256_SUITES = [CipherSuite.AES_128_GCM_SHA256, CipherSuite.CHACHA20_POLY1305_SHA256]
TLS13 = "NORMAL:-VERS-ALL:+VERS-TLS1.3"
PSK_PRIORITY = TLS13 + ":+ECDHE-PSK:+DHE-PSK:+PSK"


def _priority(base: str = TLS13, suite: CipherSuite | None = None, groups: str = "") -> str:
    cipher = f":-CIPHER-ALL:+{GNUTLS_CIPHERS[suite]}" if suite is not None else ""
    return base + cipher + groups


@pytest.fixture(scope="module")
def tools() -> tuple[str, str]:
    return require("gnutls-serv", "gnutls-bin"), require("gnutls-cli", "gnutls-bin")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    directory = Path(tmp_path_factory.mktemp("gnutls-pki"))
    files = write_pki(directory)
    (directory / "psk.passwd").write_text(f"{PSK_IDENTITY.decode()}:{PSK_KEY.hex()}\n")
    return files


# -- our client, gnutls-serv --echo ------------------------------------------------------------------

ServerStarter = Callable[..., tuple[int, AbstractContextManager[Peer]]]


@pytest.fixture
def serv(tools: Tools, files: Files) -> Iterator[ServerStarter]:
    def start(priority: str, *extra: str) -> tuple[int, AbstractContextManager[Peer]]:
        port = free_tcp_port()
        argv = [tools[0], "--echo", "-p", str(port), "--priority", priority, *extra]
        return port, peer(argv, ready=b"listening on IPv4")
    yield start


def _cert_args(files: Files) -> list[str]:
    return ["--x509certfile", str(files.cert), "--x509keyfile", str(files.key)]


def _echoed(out: Outcome, suite: CipherSuite | None = None) -> None:
    assert out.error is None, out.error
    assert out.received == b"hello quichsd\n"  # --echo sent our line back, under its keys
    assert out.complete is not None
    if suite is not None:
        assert out.complete.cipher_suite == suite


@pytest.mark.parametrize("suite", ALL_SUITES, ids=lambda s: s.name)
def test_our_client_certificate_server(serv: ServerStarter, files: Files, suite: CipherSuite) -> None:
    port, ctx = serv(_priority(suite=suite), *_cert_args(files), "--disable-client-cert")
    with ctx:
        out = our_client(port, client_config(), b"hello quichsd\n", b"\n")
        _echoed(out, suite)


def test_our_client_certificate_when_required(serv: ServerStarter, files: Files) -> None:
    port, ctx = serv(_priority(), *_cert_args(files), "--require-client-cert", "--verify-client-cert",
                     "--x509cafile", str(files.ca))
    with ctx:
        _echoed(our_client(port, client_config(with_cert=True), b"hello quichsd\n", b"\n"))


@pytest.mark.parametrize("suite", SHA256_SUITES, ids=lambda s: s.name)
def test_our_client_psk(serv: ServerStarter, files: Files, suite: CipherSuite) -> None:
    port, ctx = serv(_priority(PSK_PRIORITY, suite), "--pskpasswd", str(files.ca.parent / "psk.passwd"))
    with ctx:
        out = our_client(port, client_config(psk=PSK_KEY, suites=[suite]), b"hello quichsd\n", b"\n")
        _echoed(out, suite)
        assert out.complete is not None and out.complete.psk_identity == PSK_IDENTITY


def test_our_client_hello_retry_request(serv: ServerStarter, files: Files) -> None:
    only_p256 = _priority(groups=":-GROUP-ALL:+GROUP-SECP256R1")
    port, ctx = serv(only_p256, *_cert_args(files), "--disable-client-cert")
    with ctx:
        out = our_client(port, client_config(groups=[NamedGroup.X25519, NamedGroup.SECP256R1]),
                         b"hello quichsd\n", b"\n")
        _echoed(out)
        assert out.complete is not None and out.complete.group == NamedGroup.SECP256R1


def test_our_client_rejects_an_untrusted_server(serv: ServerStarter, files: Files) -> None:
    port, ctx = serv(_priority(), *_cert_args(files), "--disable-client-cert")
    with ctx as server:
        out = our_client(port, client_config(untrusted=True), b"x\n", b"\n")
        assert isinstance(out.error, LocalAlert), out.error
        assert out.error.alert in (AlertDescription.unknown_ca, AlertDescription.bad_certificate)
        server.wait_for(b"Error in handshake")


def test_our_client_wrong_psk(serv: ServerStarter, files: Files) -> None:
    port, ctx = serv(_priority(PSK_PRIORITY), "--pskpasswd", str(files.ca.parent / "psk.passwd"))
    with ctx:
        out = our_client(port, client_config(psk=bytes(32)), b"x\n", b"\n")
        # GnuTLS 3.7 (as OpenSSL 3.0) answers a binder that does not verify with
        # illegal_parameter; RFC 8446 §4.2.11 says decrypt_error.
        assert isinstance(out.error, PeerAlert), out.error
        assert out.error.alert in (AlertDescription.decrypt_error, AlertDescription.illegal_parameter)


# -- gnutls-cli, our server -------------------------------------------------------------------------


def _serve(tools: Tools, config, *client_args: str) -> tuple[Outcome, bytes]:  # type: ignore[no-untyped-def]
    server = OurServer(config, b"hello from quichsd\n", b"from gnutls\n")
    argv = [tools[1], "-p", str(server.port), "127.0.0.1", *client_args]
    with peer(argv, stdin=b"from gnutls\n") as client:
        outcome = server.join()
        if outcome.error is None:
            client.wait_for(b"hello from quichsd")
            return outcome, client.output()
        return outcome, client.exited_output()


def _verify_us(files: Files, ca: Path | None = None) -> list[str]:
    return ["--x509cafile", str(ca or files.ca), "--verify-hostname", "localhost",
            "--sni-hostname", "localhost"]


@pytest.mark.parametrize("suite", ALL_SUITES, ids=lambda s: s.name)
def test_gnutls_cli_to_our_server_certificate(tools: Tools, files: Files, suite: CipherSuite) -> None:
    out, _ = _serve(tools, server_config(suites=[suite]), *_verify_us(files),
                    "--priority", _priority(suite=suite))
    assert out.error is None, out.error
    assert out.received == b"from gnutls\n"
    assert out.extra["ccs"] == 1  # GnuTLS is in middlebox compatibility mode too
    assert out.complete is not None and out.complete.cipher_suite == suite


def test_gnutls_cli_certificate_to_our_server(tools: Tools, files: Files) -> None:
    out, _ = _serve(tools, server_config(client_auth=ClientAuth.OPTIONAL), *_verify_us(files),
                    "--priority", _priority(),
                    "--x509certfile", str(files.cert), "--x509keyfile", str(files.key))
    assert out.error is None, out.error
    assert out.complete is not None
    assert out.complete.peer_certificates[0].subject.rfc4514_string() == "CN=localhost"


@pytest.mark.parametrize("suite", SHA256_SUITES, ids=lambda s: s.name)
def test_gnutls_cli_psk_to_our_server(tools: Tools, suite: CipherSuite) -> None:
    out, _ = _serve(tools, server_config(psk=PSK_KEY, suites=[suite]),
                    "--priority", _priority(PSK_PRIORITY, suite),
                    "--pskusername", PSK_IDENTITY.decode(), "--pskkey", PSK_KEY.hex())
    assert out.error is None, out.error
    assert out.complete is not None
    assert out.complete.psk_identity == PSK_IDENTITY and out.complete.cipher_suite == suite


def test_gnutls_cli_hello_retry_request_from_our_server(tools: Tools, files: Files) -> None:
    out, _ = _serve(tools, server_config(groups=[NamedGroup.SECP384R1]), *_verify_us(files),
                    "--priority", _priority())
    assert out.error is None, out.error
    assert out.complete is not None and out.complete.group == NamedGroup.SECP384R1


def test_gnutls_cli_rejects_our_untrusted_certificate(tools: Tools, files: Files) -> None:
    out, text = _serve(tools, server_config(), *_verify_us(files, files.other_ca), "--priority", _priority())
    assert isinstance(out.error, PeerAlert), out.error  # GnuTLS 3.7: bad_certificate
    assert out.error.alert in (AlertDescription.bad_certificate, AlertDescription.unknown_ca)
    assert b"not trusted" in text.lower()


def test_gnutls_cli_wrong_psk_to_our_server(tools: Tools) -> None:
    out, _ = _serve(tools, server_config(psk=PSK_KEY), "--priority", _priority(PSK_PRIORITY),
                    "--pskusername", PSK_IDENTITY.decode(), "--pskkey", bytes(32).hex())
    assert isinstance(out.error, LocalAlert), out.error
    assert out.error.alert == AlertDescription.decrypt_error
