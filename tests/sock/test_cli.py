"""`quichsd server` and `quichsd client` as separate processes on loopback."""
from __future__ import annotations

import stat
import subprocess

import pytest

from tests.processes import QUICHSD, quichsd_server, stop
from tests.sockets import free_port


@pytest.fixture
def server(pki):
    port = free_port()
    proc = quichsd_server(pki, port)
    try:
        yield f"127.0.0.1:{port}", proc
    finally:
        stop(proc)


def client(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*QUICHSD, "client", *args, "--backend", "sim"],
                          capture_output=True, text=True, timeout=60)


def test_client_server_echo_and_resumption(server, pki, tmp_path) -> None:
    address, proc = server
    session = tmp_path / "sessions" / "session"
    session.parent.mkdir()
    session.touch(0o644)  # an existing file, readable by all: the secret must not inherit that
    session.chmod(0o644)
    first = client(address, "--alpn", "h3", "--cafile", pki.ca_file, "--sni", "localhost",
                   "--session", str(session), "--data", "ping")
    assert first.returncode == 0, first.stderr
    assert "resumed=no" in first.stdout and "echo: ping" in first.stdout
    assert stat.S_IMODE(session.stat().st_mode) == 0o600 and session.stat().st_size > 0
    second = client(address, "--alpn", "h3", "--cafile", pki.ca_file, "--sni", "localhost",
                    "--session", str(session), "--early-data", "early", "--data", "pong")
    assert second.returncode == 0, second.stderr
    assert "resumed=yes 0rtt=yes" in second.stdout
    assert "echo of 0-RTT data: early" in second.stdout and "echo: pong" in second.stdout
    assert stat.S_IMODE(session.stat().st_mode) == 0o600
    assert [p.name for p in session.parent.iterdir()] == ["session"]  # no temporary file left
    line = proc.stdout.readline()
    assert "succeeded: alpn=h3" in line


def test_client_reports_a_failed_verification(server, tmp_path) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    from tests.pki import make_ca

    other = tmp_path / "other-ca.pem"
    other.write_bytes(make_ca("not the server's CA").cert.public_bytes(Encoding.PEM))
    address, _ = server
    result = client(address, "--alpn", "h3", "--sni", "localhost", "--cafile", str(other))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr  # one line, on stderr
    assert result.stderr.startswith("quichsd client: handshake failed") and "unknown_ca" in result.stderr


def test_insecure_is_explicit_and_logged(server) -> None:
    address, _ = server
    result = client(address, "--alpn", "h3", "--insecure", "--data", "x")
    assert result.returncode == 0 and "echo: x" in result.stdout
    assert "verification is OFF" in result.stderr
