"""Our TLS-over-TCP client and server against `openssl s_server` / `openssl s_client`
(-tls1_3): certificates (the server verified; a client certificate requested), PSK, the
three AEADs, HelloRetryRequest, an untrusted certificate and a wrong PSK. After each
handshake, application data goes both ways under the application keys (userspace
records: the host has no kTLS), so the keys kTLS would get are proven right."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from quichsd.tcp.handshake import LocalAlert, PeerAlert
from quichsd.tls.config import ClientAuth
from quichsd.tls.constants import AlertDescription, CipherSuite, NamedGroup

from .tlstcp import (
    ALL_SUITES,
    OPENSSL_SUITES,
    PSK_IDENTITY,
    PSK_KEY,
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

SHA256_SUITES = [CipherSuite.AES_128_GCM_SHA256, CipherSuite.CHACHA20_POLY1305_SHA256]


@pytest.fixture(scope="module")
def openssl() -> str:
    return require("openssl", "openssl")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    return write_pki(Path(tmp_path_factory.mktemp("openssl-pki")))


# -- our client, openssl s_server -----------------------------------------------------------------


def _s_server(openssl: str, port: int, files: Files, *extra: str) -> list[str]:
    # -rev: each line comes back reversed; -naccept 1: one connection, then exit.
    return [openssl, "s_server", "-tls1_3", "-accept", str(port), "-rev", "-naccept", "1", *extra]


def _cert_args(files: Files) -> list[str]:
    return ["-cert", str(files.cert), "-key", str(files.key)]


@pytest.fixture
def s_server(openssl: str, files: Files) -> Iterator[object]:
    def start(*extra: str):  # type: ignore[no-untyped-def]
        port = free_tcp_port()
        return port, peer(_s_server(openssl, port, files, *extra), ready=b"ACCEPT")
    yield start


def _ok(out, suite: CipherSuite | None = None) -> None:  # type: ignore[no-untyped-def]
    assert out.error is None, out.error
    assert out.received == b"dshciuq olleh\n"  # -rev answered our line, under our keys
    if suite is not None:
        assert out.complete.cipher_suite == suite


@pytest.mark.parametrize("suite", ALL_SUITES, ids=lambda s: s.name)
def test_our_client_certificate_server(s_server, files: Files, suite: CipherSuite) -> None:  # type: ignore[no-untyped-def]
    port, ctx = s_server(*_cert_args(files), "-ciphersuites", OPENSSL_SUITES[suite])
    with ctx as server:
        out = our_client(port, client_config(), b"hello quichsd\n", b"\n")
        _ok(out, suite)
        assert out.complete.peer_certificates
        server.wait_for(b"CONNECTION CLOSED")


def test_our_client_certificate_when_required(s_server, files: Files) -> None:  # type: ignore[no-untyped-def]
    port, ctx = s_server(*_cert_args(files), "-Verify", "1", "-verify_return_error", "-CAfile", str(files.ca))
    with ctx as server:
        _ok(our_client(port, client_config(with_cert=True), b"hello quichsd\n", b"\n"))
        server.wait_for(b"CONNECTION CLOSED")


@pytest.mark.parametrize("suite", SHA256_SUITES, ids=lambda s: s.name)
def test_our_client_psk(s_server, suite: CipherSuite) -> None:  # type: ignore[no-untyped-def]
    port, ctx = s_server("-nocert", "-psk", PSK_KEY.hex(), "-psk_identity", PSK_IDENTITY.decode(),
                         "-ciphersuites", OPENSSL_SUITES[suite])
    with ctx:
        out = our_client(port, client_config(psk=PSK_KEY, suites=[suite]), b"hello quichsd\n", b"\n")
        _ok(out, suite)
        assert out.complete.psk_identity == PSK_IDENTITY and not out.complete.peer_certificates


def test_our_client_hello_retry_request(s_server, files: Files) -> None:  # type: ignore[no-untyped-def]
    port, ctx = s_server(*_cert_args(files), "-groups", "P-256")
    with ctx:
        # We send an X25519 share only; the server wants P-256: a HelloRetryRequest.
        out = our_client(port, client_config(groups=[NamedGroup.X25519, NamedGroup.SECP256R1]),
                         b"hello quichsd\n", b"\n")
        _ok(out)
        assert out.complete.group == NamedGroup.SECP256R1


def test_our_client_rejects_an_untrusted_server(s_server, files: Files) -> None:  # type: ignore[no-untyped-def]
    port, ctx = s_server(*_cert_args(files))
    with ctx as server:
        out = our_client(port, client_config(untrusted=True), b"x\n", b"\n")
        assert isinstance(out.error, LocalAlert), out.error
        assert out.error.alert in (AlertDescription.unknown_ca, AlertDescription.bad_certificate)
        # openssl decrypted our alert with the handshake key: it names it.
        server.wait_for(out.error.alert.name.replace("_", " ").encode())


def test_our_client_wrong_psk(s_server) -> None:  # type: ignore[no-untyped-def]
    port, ctx = s_server("-nocert", "-psk", PSK_KEY.hex(), "-psk_identity", PSK_IDENTITY.decode())
    with ctx as server:
        out = our_client(port, client_config(psk=bytes(32)), b"x\n", b"\n")
        assert isinstance(out.error, PeerAlert), out.error
        # OpenSSL 3.0 answers a binder that does not verify with illegal_parameter (RFC 8446
        # §4.2.11 says decrypt_error, which our server sends).
        assert out.error.alert in (AlertDescription.decrypt_error, AlertDescription.illegal_parameter)
        server.wait_for(b"binder does not verify")


# -- openssl s_client, our server ------------------------------------------------------------------


def _s_client(openssl: str, port: int, files: Files, *extra: str) -> list[str]:
    return [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3", "-quiet", *extra]


def _verify_us(files: Files, ca: Path | None = None) -> list[str]:
    return ["-CAfile", str(ca or files.ca), "-verify_return_error", "-verify_hostname", "localhost",
            "-servername", "localhost"]


def _serve(openssl: str, files: Files, config, *client_args: str):  # type: ignore[no-untyped-def]
    """Our server for one s_client; returns our outcome and the client's output."""
    server = OurServer(config, b"hello from quichsd\n", b"from openssl\n")
    argv = _s_client(openssl, server.port, files, *client_args)
    with peer(argv, stdin=b"from openssl\n") as client:
        outcome = server.join()
        if outcome.error is None:
            client.wait_for(b"hello from quichsd")
            return outcome, client.output()
        return outcome, client.exited_output()


@pytest.mark.parametrize("suite", ALL_SUITES, ids=lambda s: s.name)
def test_s_client_to_our_server_certificate(openssl: str, files: Files, suite: CipherSuite) -> None:
    out, _ = _serve(openssl, files, server_config(suites=[suite]), *_verify_us(files),
                    "-ciphersuites", OPENSSL_SUITES[suite])
    assert out.error is None, out.error
    assert out.received == b"from openssl\n" and out.complete.cipher_suite == suite
    assert out.complete.server_name == "localhost"
    # s_client is in middlebox compatibility mode: a session id (echoed) and one CCS (dropped).
    assert out.extra["ccs"] == 1


def test_s_client_certificate_to_our_server(openssl: str, files: Files) -> None:
    out, _ = _serve(openssl, files, server_config(client_auth=ClientAuth.OPTIONAL), *_verify_us(files),
                    "-cert", str(files.cert), "-key", str(files.key))
    assert out.error is None, out.error
    # s_client sends its chain as far as -CAfile builds it: our leaf first.
    assert out.complete.peer_certificates[0].subject.rfc4514_string() == "CN=localhost"


@pytest.mark.parametrize("suite", SHA256_SUITES, ids=lambda s: s.name)
def test_s_client_psk_to_our_server(openssl: str, files: Files, suite: CipherSuite) -> None:
    out, _ = _serve(openssl, files, server_config(psk=PSK_KEY, suites=[suite]), "-psk", PSK_KEY.hex(),
                    "-psk_identity", PSK_IDENTITY.decode(), "-ciphersuites", OPENSSL_SUITES[suite])
    assert out.error is None, out.error
    assert out.complete.psk_identity == PSK_IDENTITY and out.complete.cipher_suite == suite


def test_s_client_hello_retry_request_from_our_server(openssl: str, files: Files) -> None:
    # s_client sends an X25519 share; our server takes P-384 only.
    out, _ = _serve(openssl, files, server_config(groups=[NamedGroup.SECP384R1]), *_verify_us(files))
    assert out.error is None, out.error
    assert out.complete.group == NamedGroup.SECP384R1


def test_s_client_rejects_our_untrusted_certificate(openssl: str, files: Files) -> None:
    out, text = _serve(openssl, files, server_config(), *_verify_us(files, files.other_ca))
    assert isinstance(out.error, PeerAlert), out.error
    assert out.error.alert == AlertDescription.unknown_ca
    assert b"unable to get local issuer certificate" in text


def test_s_client_wrong_psk_to_our_server(openssl: str, files: Files) -> None:
    out, _ = _serve(openssl, files, server_config(psk=PSK_KEY), "-psk", bytes(32).hex(),
                    "-psk_identity", PSK_IDENTITY.decode())
    assert isinstance(out.error, LocalAlert), out.error
    assert out.error.alert == AlertDescription.decrypt_error
