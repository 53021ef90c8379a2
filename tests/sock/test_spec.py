"""`quichsd spec` against `quichsd server` (sim backend) as separate processes on loopback:
every check passes against our server, and the checker itself can fail (a wrong code, no
close at all) and says what came instead."""
from __future__ import annotations

import re
import subprocess

import pytest

from quichsd.cli import main
from quichsd.quic.errors import QuicErrorCode
from quichsd.sock.sim import frames as fr
from quichsd.sock.sim.rewrite import SendRewriter
from quichsd.spec.checks import CHECKS, Check
from quichsd.spec.mischief import APP, packet_edit
from quichsd.spec.outcome import Outcome, Verdict
from quichsd.spec.probe import Settings
from quichsd.spec.runner import resolve, run_checks
from quichsd.tls.certs import TrustStore
from tests.processes import QUICHSD, quichsd_server, stop
from tests.sockets import free_port


@pytest.fixture(scope="module")
def server(pki):
    port = free_port()
    proc = quichsd_server(pki, port, stderr=subprocess.PIPE)
    try:
        yield port
    finally:
        _, errors = stop(proc)
    # However broken the clients were, the server said so without a traceback.
    assert "Traceback" not in errors, errors


def spec(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*QUICHSD, "spec", *args], capture_output=True, text=True,
                          timeout=120)


def test_our_server_passes_every_check(server, pki) -> None:
    result = spec("127.0.0.1", str(server), "--ca", pki.ca_file, "--sni", "localhost", "--timeout", "10")
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    summary = re.fullmatch(r"(\d+) passed, 0 failed in [\d.]+ s", lines[-1])
    assert summary is not None, lines[-1]
    assert int(summary[1]) == len(CHECKS) >= 20
    names = [line.split()[1] for line in lines[:-1]]
    assert names == [c.name for c in CHECKS]
    assert all(line.startswith("PASS ") for line in lines[:-1])


def run_main(*argv: str) -> int:
    """The CLI in this process (argparse's usage errors exit)."""
    try:
        return main(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)


def _settings(pki, timeout: float = 3.0) -> Settings:
    return Settings((b"h3",), trust=TrustStore.from_file(pki.ca_file), timeout=timeout)


def test_a_server_that_never_closes_fails_the_check(server, pki) -> None:
    """No mischief at all: the handshake completes, nothing closes, and the verdict says so."""
    check = Check("nothing-wrong", "-", "breaks no rule", (QuicErrorCode.PROTOCOL_VIOLATION,),
                  lambda peer: SendRewriter())
    (result,) = run_checks([check], resolve("127.0.0.1", server), _settings(pki, timeout=2.0))
    assert result.verdict is Verdict.FAIL
    assert result.observed.outcome is Outcome.TIMEOUT and result.observed.handshake_complete
    assert result.detail == "no CONNECTION_CLOSE within the timeout (handshake completed)"


def test_another_code_fails_the_check_and_is_named(server, pki) -> None:
    check = Check("new-token-wrong-expectation", "-", "sends NEW_TOKEN",
                  (QuicErrorCode.FRAME_ENCODING_ERROR,),
                  packet_edit(APP, fr.NewToken(b"x").encode()))
    (result,) = run_checks([check], resolve("127.0.0.1", server), _settings(pki))
    assert result.verdict is Verdict.FAIL
    assert result.observed.outcome is Outcome.CLOSED
    assert result.observed.code == QuicErrorCode.PROTOCOL_VIOLATION
    assert result.detail.startswith("PROTOCOL_VIOLATION (0x0a)")


def test_only_the_selected_checks_run_and_a_failure_sets_the_status(server, pki) -> None:
    """Without --ca our client cannot verify the test certificate: a check that needs the
    handshake to complete ends as our client's error, counted as a failure."""
    result = spec("127.0.0.1", str(server), "-k", "handshake-done,tp-no-initial", "--timeout", "5")
    lines = result.stdout.splitlines()
    assert result.returncode == 1
    assert lines[0].startswith("PASS  tp-no-initial-source-cid (RFC 9000 §7.3)")
    assert lines[1].startswith("ERROR handshake-done-from-client (RFC 9000 §19.20): "
                               "expected PROTOCOL_VIOLATION")
    assert "our client closed the connection: CRYPTO_ERROR" in lines[1]
    assert re.fullmatch(r"1 passed, 1 failed \(1 of them could not be carried out by our client\)"
                        r" in [\d.]+ s", lines[2])


@pytest.mark.parametrize(("args", "status", "message"), [
    (("no-such-host.invalid", "443"), 1, "quichsd spec: cannot resolve 'no-such-host.invalid'"),
    (("127.0.0.1", "70000"), 2, "quichsd spec: argument PORT: a port is 1-65535, got 70000"),
    (("127.0.0.1",), 2, "quichsd spec: needs HOST and PORT (or --list)"),
    (("127.0.0.1", "443", "-k", "no-such-check"), 2, "quichsd spec: no check name contains any of"),
    (("127.0.0.1", "443", "--ca", "/nonexistent/ca.pem"), 2,
     "quichsd spec: --ca /nonexistent/ca.pem: cannot use it"),
])
def test_user_errors_are_one_line(args, status, message, capsys) -> None:
    assert run_main("spec", *args) == status
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith(message), err


def test_list_names_every_check_with_its_section_and_expected_error(capsys) -> None:
    assert run_main("spec", "--list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(CHECKS)
    assert ("no-quic-transport-parameters (RFC 9001 §8.2): sends no quic_transport_parameters extension; "
            "expects CRYPTO_ERROR missing_extension (0x16d)") in lines
