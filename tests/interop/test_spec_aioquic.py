"""`quichsd spec`'s checks against aioquic's asyncio server (a QUIC stack no one here wrote).

Every check must come to a verdict of its own (PASS or FAIL: never an ERROR of our
client's). What aioquic 1.7.2 fails is aioquic's behaviour, pinned here as observed so a
change on either side shows; the README lists it too.
"""
from __future__ import annotations

import pytest

from quichsd.spec.checks import CHECKS
from quichsd.spec.outcome import Outcome, Verdict
from quichsd.spec.probe import Settings
from quichsd.spec.runner import resolve, run_checks
from quichsd.tls.certs import TrustStore

aioquic = pytest.importorskip("aioquic", reason="aioquic (the test peer) is not installed")
from tests.interop.test_aioquic_udp import AioquicServer  # noqa: E402

pytestmark = pytest.mark.interop

HANDSHAKE_FAILURE, PROTOCOL_VIOLATION = 0x128, 0x0A
# check -> (how the connection ended, the code aioquic closed with, handshake completed)
AIOQUIC_1_7_2_FAILS = {
    # RFC 8446 §9.2 wants missing_extension; aioquic answers handshake_failure.
    "no-signature-algorithms": (Outcome.CLOSED, HANDSHAKE_FAILURE, False),
    # RFC 8446 §9.2: key_share without supported_groups; aioquic completes the handshake.
    "key-share-without-groups": (Outcome.TIMEOUT, 0, True),
    # RFC 8446 §4.1.2 wants illegal_parameter; aioquic answers handshake_failure.
    "compression-not-null": (Outcome.CLOSED, HANDSHAKE_FAILURE, False),
    # RFC 8446 §4.2.9/§9.2: pre_shared_key without psk_key_exchange_modes; aioquic ignores it.
    "pre-shared-key-without-modes": (Outcome.TIMEOUT, 0, True),
    # RFC 9000 §17.2: aioquic does close, but before it has learnt the client's SCID, so its
    # CONNECTION_CLOSE goes to a connection ID the client never chose and is dropped.
    "reserved-bits-initial": (Outcome.TIMEOUT, 0, False),
    # RFC 9000 §19.15 wants FRAME_ENCODING_ERROR; aioquic says PROTOCOL_VIOLATION.
    "new-connection-id-retire-prior-to": (Outcome.CLOSED, PROTOCOL_VIOLATION, True),
}


@pytest.fixture
def aioquic_server(pki):
    server = AioquicServer(pki)
    yield server
    server.stop()


def test_every_check_gets_a_verdict_and_aioquic_fails_these(aioquic_server, pki) -> None:
    settings = Settings((b"h3",), trust=TrustStore.from_file(pki.ca_file), timeout=3.0)
    results = run_checks(CHECKS, resolve("127.0.0.1", aioquic_server.port), settings)
    assert [r.verdict for r in results if r.verdict is Verdict.ERROR] == [], \
        [(r.name, r.detail) for r in results if r.verdict is Verdict.ERROR]
    failed = {r.name: (r.observed.outcome, r.observed.code, r.observed.handshake_complete)
              for r in results if r.verdict is Verdict.FAIL}
    assert failed == AIOQUIC_1_7_2_FAILS
    assert sum(r.verdict is Verdict.PASS for r in results) == len(CHECKS) - len(AIOQUIC_1_7_2_FAILS)
