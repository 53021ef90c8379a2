"""Bulk transfers between our client and our server over real UDP through the impairing
relay (tests/sim/relay.py), both directions, each way impaired: intact at 5 % loss, at
20 ms delay with 10 % reordering, across a 2 s blackhole (issue 13), and with 10 % of the
datagrams duplicated. The default run moves 2 MiB; the 10 MiB runs are marked `slow`
(deselected unless `-m slow`; make test runs them)."""
from __future__ import annotations

import pytest

from quichsd import HandshakeConfig
from quichsd.sock.sim.congestion import CUBIC, Cubic
from quichsd.sock.sim.simsocket import SimQuicSocket
from tests.sim.relay import ImpairingRelay, Impairment
from tests.sim.transfer import Address, connected_pair, payload, transfer
from tests.sockets import Pki

MIB = 1 << 20
SCENARIOS = {
    "loss-5%": Impairment(loss=0.05),
    "delay-20ms-reorder-10%": Impairment(delay=0.020, reorder=0.10, reorder_extra=0.010),
    # 2 s of silence both ways once 500 datagrams went through (mid-transfer at 2 MiB too)
    "blackhole-2s": Impairment(blackhole_after=500, blackhole_for=2.0),
    # not asked by the issue: copies must be dropped as duplicates (RFC 9000 §12.3)
    "duplicate-10%": Impairment(duplicate=0.10),
}
SIZES = [2 * MIB, pytest.param(10 * MIB, marks=pytest.mark.slow)]


def _configs(pki: Pki) -> tuple[HandshakeConfig, HandshakeConfig]:
    server = HandshakeConfig(server=True, alpns=["bulk"], cert_file=pki.cert_file, key_file=pki.key_file,
                             timeout=10)
    client = HandshakeConfig(alpns=["bulk"], hostname="localhost", cafile=pki.ca_file, timeout=10)
    return server, client


@pytest.mark.parametrize("size", SIZES, ids=lambda n: f"{n // MIB}MiB")
@pytest.mark.parametrize("upload", [True, False], ids=["upload", "download"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_transfer_through_impairing_relay(pki: Pki, scenario: str, upload: bool, size: int) -> None:
    impairment = SCENARIOS[scenario]
    relays: list[ImpairingRelay] = []

    def route(server: Address) -> Address:
        relay = ImpairingRelay(server, to_server=impairment, to_client=impairment, seed=size + upload)
        relays.append(relay.start())
        return relay.address

    data = payload(size)
    try:
        with connected_pair(*_configs(pki), route) as (client, server):
            result = transfer(client, server, data, upload=upload, timeout=60)
    finally:
        for relay in relays:
            relay.stop()
    assert result.intact
    bulk, back = ("to_server", "to_client") if upload else ("to_client", "to_server")
    counters = relays[0].counters(bulk)
    if impairment.loss:
        assert counters.lost > 0 and relays[0].counters(back).lost > 0  # both ways really lost some
    if impairment.reorder:
        assert counters.reordered > 0
    if impairment.blackhole_for:
        assert counters.blackholed > 0
    if impairment.duplicate:
        assert counters.duplicated > 0
    # what the relay passed on is at least the payload: the data was carried, not conjured
    assert counters.forwarded * 1200 >= size
    print(f"{scenario} {'upload' if upload else 'download'} {size // MIB} MiB: {result.seconds:.2f} s, "
          f"{counters}")


@pytest.mark.parametrize("upload", [True, False], ids=["upload", "download"])
def test_cubic_transfer_at_5_percent_loss(pki: Pki, upload: bool) -> None:
    """CUBIC chosen through QUIC_SOCKOPT_CONFIG on both ends, as with the kernel."""
    impairment = SCENARIOS["loss-5%"]
    relays: list[ImpairingRelay] = []

    def route(server: Address) -> Address:
        relays.append(ImpairingRelay(server, to_server=impairment, to_client=impairment, seed=9).start())
        return relays[0].address

    try:
        with connected_pair(*_configs(pki), route, congestion=CUBIC) as (client, server):
            for end in (client, server):
                backend = end.backend
                assert isinstance(backend, SimQuicSocket) and backend.conn is not None
                assert isinstance(backend.conn.spaces.recovery.cc, Cubic)
            result = transfer(client, server, payload(2 * MIB), upload=upload, timeout=60)
    finally:
        for relay in relays:
            relay.stop()
    assert result.intact and relays[0].counters("to_server").lost > 0
