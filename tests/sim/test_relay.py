"""The impairing relay itself (tests/sim/relay.py), with plain UDP sockets on loopback: what
each impairment does to datagrams, per direction, repeatable with a seed."""
from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tests.sim.relay import Counters, ImpairingRelay, Impairment


def _udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    return sock


@pytest.fixture
def ends() -> Iterator[tuple[socket.socket, socket.socket]]:
    client, server = _udp(), _udp()
    yield client, server
    client.close()
    server.close()


def _send(client: socket.socket, relay: ImpairingRelay, n: int) -> None:
    """Datagrams 0..n-1 (fewer than the server's socket buffer holds: about 250)."""
    for i in range(n):
        client.sendto(i.to_bytes(4, "big"), relay.address)


def test_loss_and_duplication_follow_the_seed(ends):
    client, server = ends
    imp = Impairment(loss=0.2, duplicate=0.1)
    runs = []
    for _ in range(2):
        with ImpairingRelay(server.getsockname(), to_server=imp, seed=5) as relay:
            got = []
            for batch in range(6):  # in batches the server's socket buffer holds
                for i in range(batch * 50, batch * 50 + 50):
                    client.sendto(i.to_bytes(4, "big"), relay.address)
                c = relay.wait_for("to_server", lambda c, n=batch * 50 + 50: c.received == n
                                   and c.forwarded == n - c.lost + c.duplicated)
                got += [server.recv(64) for _ in range(c.forwarded - len(got))]
            runs.append((c.lost, c.duplicated, got))
            assert 30 < c.lost < 90 and 10 < c.duplicated < 50  # about 20 % and 10 % of 300
            assert len(set(got)) == 300 - c.lost  # the duplicates are copies of what went through
    assert runs[0] == runs[1]  # the same seed, the same choices, the same datagrams


def test_delay_and_reordering(ends):
    client, server = ends
    imp = Impairment(delay=0.030, reorder=0.5, reorder_extra=0.050)
    with ImpairingRelay(server.getsockname(), to_server=imp, seed=3) as relay:
        start = time.monotonic()
        _send(client, relay, 20)
        got = [int.from_bytes(server.recv(64), "big") for _ in range(20)]
        assert time.monotonic() - start >= 0.030  # nothing arrives before the fixed delay
        assert sorted(got) == list(range(20)) and got != list(range(20))
        assert relay.counters("to_server").reordered > 0


def test_answers_return_and_a_blackhole_drops_for_its_window(ends):
    client, server = ends
    imp = Impairment(blackhole_after=1, blackhole_for=0.2)
    with ImpairingRelay(server.getsockname(), to_server=imp) as relay:
        client.sendto(b"first", relay.address)  # the trigger: one datagram goes through
        data, addr = server.recvfrom(64)
        server.sendto(b"answer", addr)
        assert data == b"first" and client.recv(64) == b"answer"  # the other way is not impaired
        client.sendto(b"dropped", relay.address)
        c: Counters = relay.wait_for("to_server", lambda c: c.received == 2)
        assert c.blackholed == 1
        # the window ends: a datagram after it goes through (resent until one does)
        server.settimeout(0.1)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            client.sendto(b"later", relay.address)
            try:
                assert server.recv(64) == b"later"
                break
            except TimeoutError:
                continue
        c = relay.wait_for("to_server", lambda c: c.forwarded == 2)
        assert c.blackholed >= 1
        assert relay.counters("to_client").blackholed == 0
