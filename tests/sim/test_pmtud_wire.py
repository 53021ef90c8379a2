"""PLPMTUD on SimConnections in memory (driver.py's Wire, simulated clock): the probes find
a path MTU that drops larger datagrams, data then leaves at that size intact, lost probes
are no congestion signal, a black hole falls back to 1200, and nothing probes by default."""
from __future__ import annotations

import hashlib

from quichsd.sock.sim.pmtud import BASE_PLPMTU, PlState

from .driver import SimServer, Wire, handshake, sim_client

INTERVAL_US = 5_000_000  # the kernel's smallest plpmtud_probe_interval
CONFIG = {"plpmtud_probe_interval": INTERVAL_US}
LONG_IDLE = {"max_idle_timeout": 3_600_000_000}  # us: lost probes get no answer, no idle close


def probing_pair(path_mtu: int) -> tuple[Wire, object, SimServer]:
    client = sim_client(config=CONFIG, local_params=dict(LONG_IDLE))
    server = SimServer(config=CONFIG, local_params=dict(LONG_IDLE))
    wire = handshake(client, server)
    wire.mtu = path_mtu  # type: ignore[attr-defined]
    wire.drop = lambda name, index, data: len(data) > wire.mtu  # type: ignore[attr-defined]
    return wire, client, server


# A search that completes in a step that sends nothing is only seen once the next timer (the
# 30-interval raise timer) is reached: the runs below allow for it.
SEARCH_TIME = 40 * INTERVAL_US / 1e6


def search_done(agent: object) -> bool:
    pmtu = agent.conn.sender.pmtu  # type: ignore[attr-defined]
    return pmtu is not None and pmtu.search.state is PlState.COMPLETE


def test_probes_find_the_path_mtu_and_data_uses_it() -> None:
    wire, client, server = probing_pair(1452)
    cwnd = client.conn.spaces.recovery.cc.cwnd
    wire.run(lambda: search_done(client) and search_done(server), max_time=SEARCH_TIME, max_steps=20000)
    for agent in (client, server):
        assert agent.conn.sender.max_datagram == 1452
    assert wire.dropped  # some probes were too big for the path
    cc = client.conn.spaces.recovery.cc
    assert cc.recovery_start is None and cc.cwnd >= cwnd  # their loss is no congestion event
    data = bytes(range(256)) * 2000  # 512000 bytes, echoed back
    sid = client.conn.open_stream(False)
    client.conn.stream_send(sid, data, fin=True)
    start = len(wire.log)
    wire.run(lambda: sid in client.finished, max_time=60.0, max_steps=20000)
    assert hashlib.sha256(bytes(client.received[sid])).digest() == hashlib.sha256(data).digest()
    sizes = [size for _, size in wire.log[start:]]
    assert sizes.count(1452) > len(data) // 1452  # both ways, at the size found
    assert {size for size in sizes if size > 1452} <= {1456}  # only the raise timer's probes


def test_black_hole_falls_back_to_base() -> None:
    wire, client, server = probing_pair(1400)
    wire.run(lambda: search_done(client), max_time=SEARCH_TIME, max_steps=20000)
    assert client.conn.sender.max_datagram == 1400
    wire.mtu = 1300  # type: ignore[attr-defined]  # the route changed under the connection
    search = client.conn.sender.pmtu.search
    # the raise timer (30 intervals) probes the confirmed size: three losses are a black hole
    wire.run(lambda: search.state is PlState.SEARCH and client.conn.sender.max_datagram == BASE_PLPMTU,
             max_time=2 * SEARCH_TIME, max_steps=20000)
    wire.run(lambda: search_done(client), max_time=SEARCH_TIME, max_steps=20000)
    assert client.conn.sender.max_datagram == 1300
    assert client.conn.state.name == "ESTABLISHED"


def test_no_probes_without_the_config() -> None:
    client, server = sim_client(), SimServer()
    wire = handshake(client, server)
    assert client.conn.sender.pmtu is None
    sid = client.conn.open_stream(False)
    client.conn.stream_send(sid, b"x" * 100_000, fin=True)
    wire.run(lambda: sid in client.finished, max_time=60.0, max_steps=20000)
    assert max(size for _, size in wire.log) == BASE_PLPMTU
