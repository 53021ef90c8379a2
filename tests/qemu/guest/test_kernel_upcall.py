"""The kernel's `handshake` upcall, end to end, with no QUIC module: our consumer module
(kmod/quichsd_upcall.c) submits requests through net/handshake on kernel TCP sockets, and
`quichsd daemon` must answer each with exactly one DONE."""
from __future__ import annotations

import errno
import os
import signal
import time

import pytest

from tests.pki import leaf, test_ca
from tests.qemu.guest.kernel import add_user_key, open_fds, quichsd_daemon, upcall

# One side each: the other end of the connection is nobody's, so a handshake waits for an
# answer that never comes and fails at its timeout with EACCES (GnuTLS's own timeout in
# tlshd, spec §3.3). (An unauth server, EIO in §3.2, cannot be asked for: the kernel API
# has no anonymous server; tests/daemon/test_tcp_request.py covers it.)
TCP_REQUESTS = [
    ("tcp client anon peername=localhost", errno.EACCES),
    ("tcp client x509 peername=localhost", errno.EACCES),
    ("tcp client psk psk={psk}", errno.EACCES),
    ("tcp server x509", errno.EACCES),
    ("tcp server psk", errno.EACCES),
]


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> str:
    from cryptography.hazmat.primitives import serialization
    d = tmp_path_factory.mktemp("pki")
    cert, key = leaf("p256")
    (d / "ca.pem").write_bytes(test_ca().cert.public_bytes(serialization.Encoding.PEM))
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return "".join(
        f"[authenticate.{side}]\nx509.truststore = {d}/ca.pem\n"
        f"x509.certificate = {d}/cert.pem\nx509.private_key = {d}/key.pem\n\n"
        for side in ("client", "server"))


@pytest.fixture(scope="module")
def psk() -> int:
    return add_user_key("quichsd-upcall-psk", bytes(range(32)))


def test_no_daemon_request_fails_at_submit() -> None:
    """Nobody in the `tlshd` group: the kernel refuses the request at once (ESRCH)."""
    report = upcall("tcp client anon")
    assert report.sides["client"].status == -errno.ESRCH
    assert report.cancelled == 0


@pytest.mark.parametrize(("command", "status"), TCP_REQUESTS)
def test_daemon_answers_tcp_requests(tmp_path, config, psk, command, status) -> None:
    """Every TCP request gets its one DONE, with the status tlshd gives."""
    with quichsd_daemon(tmp_path, config) as daemon:
        report = upcall(command.format(psk=psk) + " timeout=1000")
        assert report.cancelled == 0, daemon.output()
        side = "client" if " client " in command else "server"
        assert report.sides[side].status == -status, daemon.output()
        assert report.sides[side].peerid == 0


def test_stalled_daemon_leaves_the_timeout_to_the_consumer(tmp_path, config) -> None:
    """A daemon that never answers: the kernel has no timeout of its own, the consumer's
    deadline fires and tls_handshake_cancel() withdraws the request. The daemon, once it
    runs again, finds nothing to ACCEPT and serves the next request."""
    with quichsd_daemon(tmp_path, config) as daemon:
        os.killpg(daemon.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            report = upcall("tcp client anon timeout=1000 wait=2000")
            waited = time.monotonic() - started
        finally:
            os.killpg(daemon.proc.pid, signal.SIGCONT)
        assert report.cancelled == 1
        assert report.sides["client"].status == -errno.ETIMEDOUT
        assert waited >= 1.9
        report = upcall("tcp pair anon peername=localhost timeout=20000")
        assert report.cancelled == 0, daemon.output()
        assert (report.sides["client"].status, report.sides["server"].status) == (0, 0), daemon.output()
        assert daemon.proc.poll() is None


def test_fifty_requests_leave_no_fd_behind(tmp_path, config) -> None:
    with quichsd_daemon(tmp_path, config) as daemon:
        # Fifty whole handshakes (both ends, kTLS installed on each) after one for the
        # worker's first-use fds.
        upcall("tcp pair anon peername=localhost timeout=20000")
        before = open_fds(daemon.pids())
        report = upcall("tcp pair anon peername=localhost n=50 timeout=20000")
        assert (report.done, report.cancelled) == (50, 0), daemon.output()
        assert (report.ok, report.first_status) == (50, 0), daemon.output()
        deadline = time.monotonic() + 10
        while open_fds(daemon.pids()) != before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert open_fds(daemon.pids()) == before
