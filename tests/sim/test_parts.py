"""SimConnection is composed of parts (keys, connection IDs, timers, ...) and two halves
(Receiver, Sender) that refer to the parts, never back to the connection: a connection and
everything it holds is freed by reference counting alone when its socket lets go of it, not
left to the cyclic garbage collector (a cycle through every closed connection cost about 4 %
in bench/udp_handshake, commit b049e0b)."""
from __future__ import annotations

import gc
from collections.abc import Iterator

from quichsd.sock.sim.connection import SimConnection
from quichsd.sock.sim.state import ConnState
from tests.sim.driver import SimServer, handshake, sim_client


def _reachable(start: object) -> Iterator[object]:
    """Every object reachable from `start` through the simulation's own objects and the
    containers they hold (not through modules, classes or functions)."""
    seen: set[int] = set()
    todo = [start]
    while todo:
        for ref in gc.get_referents(todo.pop()):
            if id(ref) in seen or isinstance(ref, type) or callable(ref):
                continue
            seen.add(id(ref))
            yield ref
            module = getattr(type(ref), "__module__", "")
            if module.startswith("quichsd.sock.sim") or isinstance(ref, (dict, list, tuple, set)):
                todo.append(ref)


def test_no_part_refers_back_to_the_connection() -> None:
    client, server = sim_client(), SimServer()
    handshake(client, server)
    for conn in (client.conn, server.conn):
        assert isinstance(conn, SimConnection) and conn.state is ConnState.ESTABLISHED
        conn.close()
        reached = list(_reachable(conn))
        parts = {type(o).__name__ for o in reached}
        assert {"Lifecycle", "Receiver", "Sender", "LevelKeys", "ConnectionIds", "Timers"} <= parts
        assert not any(o is conn for o in reached)


def test_a_dropped_connection_leaves_nothing_to_the_cycle_collector() -> None:
    client, server = sim_client(), SimServer()
    handshake(client, server)
    conns = [client.conn, server.conn]
    client.conn = server.conn = None
    gc.collect()
    gc.disable()
    try:
        tracked = len(gc.get_objects())
        for conn in conns:
            assert conn is not None
            conn.close()
            conn.datagrams_to_send(0.0)
        del conn
        conns.clear()
        freed = len(gc.get_objects())
        assert freed < tracked  # the parts went with their connections
        assert gc.collect() == 0  # and nothing was left for the collector
    finally:
        gc.enable()
