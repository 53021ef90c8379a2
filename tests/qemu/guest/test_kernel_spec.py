"""`quichsd spec` inside the guest against `quichsd server` on the KERNEL backend.

There the kernel module (lxin/quic) does the transport: packets, frames, transport parameter
checks and the CONNECTION_CLOSE on the wire; quichsd only does TLS. So what fails here is
the kernel's behaviour (a finding about lxin/quic, not hidden): the report goes to the
results directory (spec-kernel.txt, the server's log beside it) and into the assertion
message, and the failures seen are pinned below so a change on either side shows. Every
check must still come to a verdict of its own (no ERROR: our client carried each one out).
"""
from __future__ import annotations

import io
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from quichsd.spec.checks import CHECKS
from quichsd.spec.outcome import Outcome, Verdict
from quichsd.spec.probe import Settings
from quichsd.spec.runner import report, resolve, run_checks
from quichsd.tls.certs import TrustStore
from tests.sockets import free_port

RESULTS = Path("/run/quichsd-results")
# Python runs 10-20x slower under TCG than on the host: a handshake takes about a second.
CHECK_TIMEOUT = 20.0
SERVER_START = 120.0

APPLICATION_ERROR, PROTOCOL_VIOLATION = 0x0C, 0x0A
Seen = tuple[Outcome, int, bool]  # how the connection ended, the code, handshake completed
TIMEOUT_COMPLETED: Seen = (Outcome.TIMEOUT, 0, True)
TIMEOUT_NO_ANSWER: Seen = (Outcome.TIMEOUT, 0, False)
# What lxin/quic fails (its tree in ~/.cache/quichsd/quic-src, Debian's 6.12 kernel under
# QEMU), with quichsd server on the kernel backend: 33 passed, 17 failed, the same checks in
# each of three boots; where the answer varied between boots, every answer seen is listed.
KERNEL_FAILS: dict[str, set[Seen]] = {
    # RFC 9001 §4.8: a TLS alert goes out as CRYPTO_ERROR 0x100 + alert. While the handshake
    # runs, the kernel sends the agent's close (QUIC_SOCKOPT_CONNECTION_CLOSE with 0x100 +
    # alert) as APPLICATION_ERROR, the alert's name left as reason phrase (outqueue.c,
    # quic_outq_transmit_app_close): no handshake agent can pass a TLS check there. In one
    # boot of three, three of them got a PROTOCOL_VIOLATION without a reason instead.
    **{name: {(Outcome.CLOSED, APPLICATION_ERROR, False), (Outcome.CLOSED, PROTOCOL_VIOLATION, False)}
       for name in ("alpn-no-overlap", "alpn-missing", "no-quic-transport-parameters",
                    "no-supported-versions", "no-signature-algorithms", "key-share-without-groups",
                    "no-cipher-suite-overlap",
                    "compression-not-null", "pre-shared-key-not-last", "pre-shared-key-without-modes")},
    # RFC 9000 §4.6: initial_max_streams over 2^60 is taken (capped at 4096), not refused;
    # once (before 1-RTT edits waited for HANDSHAKE_DONE) a PROTOCOL_VIOLATION came later.
    "tp-max-streams-bidi": {TIMEOUT_COMPLETED, (Outcome.CLOSED, PROTOCOL_VIOLATION, True)},
    "tp-max-streams-uni": {TIMEOUT_COMPLETED},
    # A first Initial with its reserved bits set, or with a MAX_DATA frame: no answer at all.
    "reserved-bits-initial": {TIMEOUT_NO_ANSWER},
    "max-data-in-initial-packet": {TIMEOUT_NO_ANSWER},
    # RFC 9000 §19.10, §19.5: MAX_STREAM_DATA or STOP_SENDING for a server stream not opened
    # yet opens it (stream.c, quic_stream_get with MSG_QUIC_STREAM_NEW) instead of failing.
    "max-stream-data-unopened-stream": {TIMEOUT_COMPLETED},
    "stop-sending-unopened-stream": {TIMEOUT_COMPLETED},
    # RFC 9000 §19.15: a zero-length CID in NEW_CONNECTION_ID is not refused.
    "new-connection-id-empty-cid": {TIMEOUT_COMPLETED},
}


pytestmark = pytest.mark.usefixtures("quic_module")


@pytest.fixture
def kernel_server(pki):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "quichsd", "server", "--listen", f"127.0.0.1:{port}", "--cert", pki.cert_file,
         "--key", pki.key_file, "--alpn", "smb,h3", "--backend", "kernel"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    first: list[str] = []
    reader = threading.Thread(target=lambda: first.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(SERVER_START)
    try:
        assert first and "listening on" in first[0] and "kernel backend" in first[0], first
        yield port
    finally:
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        if RESULTS.is_dir():  # what the server said about each connection
            (RESULTS / "spec-kernel-server.log").write_text("".join(first) + out + err)


def test_spec_against_quichsd_server_on_the_kernel(kernel_server, pki) -> None:
    settings = Settings((b"h3",), trust=TrustStore.from_file(pki.ca_file), timeout=CHECK_TIMEOUT)
    results = run_checks(CHECKS, resolve("127.0.0.1", kernel_server), settings, jobs=8)
    text = io.StringIO()
    report(CHECKS, results, text)
    if RESULTS.is_dir():
        (RESULTS / "spec-kernel.txt").write_text(text.getvalue())
    print(text.getvalue())
    errors = [(r.name, r.detail) for r in results if r.verdict is Verdict.ERROR]
    assert errors == []
    failed: dict[str, Seen] = {r.name: (r.observed.outcome, r.observed.code, r.observed.handshake_complete)
                               for r in results if r.verdict is Verdict.FAIL}
    assert failed.keys() == KERNEL_FAILS.keys(), text.getvalue()
    unseen = {name: seen for name, seen in failed.items() if seen not in KERNEL_FAILS[name]}
    assert unseen == {}, text.getvalue()
