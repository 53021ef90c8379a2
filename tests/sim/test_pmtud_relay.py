"""PLPMTUD over real UDP through the impairing relay, which drops datagrams above 1452 bytes
as a smaller path MTU would: both ends find 1452 and a transfer then leaves in datagrams of
that size, intact. The kernel's smallest probe interval is 5 s and a failed size costs three
intervals, so the search takes about 20-30 s: marked `slow`. The QUIC_SOCKOPT_CONFIG check
of the interval (EINVAL below 5 s, as the kernel) runs by default."""
from __future__ import annotations

import errno
import socket
import time

import pytest

from quichsd import HandshakeConfig, QuicSocket, abi
from quichsd.sock.sim.pmtud import MIN_PROBE_INTERVAL_US, PlState
from quichsd.sock.sim.simsocket import SimQuicSocket
from tests.sim.relay import ImpairingRelay, Impairment
from tests.sim.transfer import Address, connected_pair, payload, transfer
from tests.sockets import Pki

PATH_MTU = 1452


def _configs(pki: Pki) -> tuple[HandshakeConfig, HandshakeConfig]:
    server = HandshakeConfig(server=True, alpns=["bulk"], cert_file=pki.cert_file, key_file=pki.key_file,
                             timeout=10)
    client = HandshakeConfig(alpns=["bulk"], hostname="localhost", cafile=pki.ca_file, timeout=10)
    return server, client


def test_probe_interval_below_the_kernel_minimum_is_einval() -> None:
    with QuicSocket(socket.AF_INET, backend="sim") as sock:
        with pytest.raises(OSError) as e:
            sock.setsockopt(abi.lib.QUIC_SOCKOPT_CONFIG, abi.pack_config(plpmtud_probe_interval=1_000_000))
        assert e.value.errno == errno.EINVAL
        smallest = abi.pack_config(plpmtud_probe_interval=MIN_PROBE_INTERVAL_US)
        sock.setsockopt(abi.lib.QUIC_SOCKOPT_CONFIG, smallest)  # accepted


@pytest.mark.slow
def test_both_ends_find_the_relays_mtu_then_transfer_intact(pki: Pki) -> None:
    impairment = Impairment(max_size=PATH_MTU)
    relays: list[ImpairingRelay] = []

    def route(server: Address) -> Address:
        relays.append(ImpairingRelay(server, to_server=impairment, to_client=impairment).start())
        return relays[0].address

    config = {"plpmtud_probe_interval": MIN_PROBE_INTERVAL_US}
    try:
        with connected_pair(*_configs(pki), route, config=config) as (client, server):
            conns = []
            for end in (client, server):
                backend = end.backend
                assert isinstance(backend, SimQuicSocket) and backend.conn is not None
                conns.append(backend.conn)
            deadline = time.monotonic() + 60
            while not all(c.sender.pmtu is not None and c.sender.pmtu.search.state is PlState.COMPLETE
                          for c in conns):
                assert time.monotonic() < deadline, [c.sender.max_datagram for c in conns]
                time.sleep(0.2)  # polling the search state: the relay and reactor do the work
            assert [c.sender.max_datagram for c in conns] == [PATH_MTU, PATH_MTU]
            too_big = relays[0].counters("to_server").too_big
            assert too_big > 0  # the search really lost probes above the limit
            before = relays[0].counters("to_server").forwarded
            data = payload(1 << 20)
            result = transfer(client, server, data, upload=True, timeout=60)
    finally:
        for relay in relays:
            relay.stop()
    assert result.intact
    # 1200-byte datagrams carry at most 1170 bytes of stream data each: fewer datagrams than
    # that allows means larger ones carried the megabyte (about 1410 bytes each at 1452)
    sent = relays[0].counters("to_server").forwarded - before
    assert sent < len(data) // 1170, sent
    print(f"1 MiB upload in {sent} datagrams at a path MTU of {PATH_MTU}")
