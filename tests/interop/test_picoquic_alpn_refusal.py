"""picoquic (through aiopquic, .venv-peer) offering an ALPN our listener does not take gets
CONNECTION_CLOSE 0x178 (no_application_protocol, RFC 9001 §8.1) at once. picoquic's first
Initial starts with a PING, so the listener's peek sees no ALPN (spec §2.7) and any
listener takes it: the refusal comes from our handshake there, and from the endpoint
for a client whose hello comes first (tests/sim/test_version_negotiation.py, aioquic).

Version Negotiation is not tried with picoquic: aiopquic accepts only v1 and v2 as
supported_versions (ValueError otherwise), so its client cannot start in a version we do
not speak, and picoquic's server speaks both of ours."""
from __future__ import annotations

import pytest

from tests.interop import test_picoquic as pico
from tests.interop.test_picoquic import our_server, picoquic_client

pytestmark = pytest.mark.interop
_need_peer = pico._need_peer  # the autouse fixture: skips with what to install


def test_picoquic_client_gets_no_application_protocol_within_a_second(pki, server_factory) -> None:
    srv = server_factory("sim", our_server(pki))  # the listener takes h3 only
    report = picoquic_client(pki, srv.address[1], "--alpn", "other", "--timeout", "1")
    # aiopquic's connect() raises with the peer's close code (376 = 0x178), not a timeout
    assert report["error"].endswith("terminated during handshake (error_code=376)"), report
    assert report["alpn"] is None and report["echo"] is None
    (refused,) = srv.wait()
    assert refused.alert.name == "no_application_protocol"
