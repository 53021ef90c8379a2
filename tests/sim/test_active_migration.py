"""Connection migration in the sans-I/O connection (quichsd/sock/sim/path.py, migration.py),
on a simulated clock: who probes which path with which CID, where PATH_RESPONSE goes
(RFC 9000 §8.2.2), the PATH_CHALLENGE resends and giving up (the kernel's PATH timer), and
the preferred_address transport parameter (§9.6, §18.2)."""
from __future__ import annotations

import errno
import socket

import pytest

from quichsd.kernel_numbers import CryptoLevel, QuicEvent
from quichsd.quic.transport_params import TransportParameters
from quichsd.sock.sim import SimConnection
from quichsd.sock.sim.errors import SimError
from quichsd.sock.sim.migration import decode_preferred, encode_preferred
from quichsd.sock.sim.path import MAX_PROBES, MIN_PATH_TIMEOUT, PathProbe, Route
from quichsd.sock.sockaddr import pack_sockaddr, unpack_sockaddr
from tests.sim.driver import ADDR_C, ADDR_S, SimAgent, SimServer, Wire, handshake, sim_client

NEW_LOCAL = ("127.0.0.9", 5000)  # the client's new local address (a Route's, never bound here)
CLIENT_MOVED = ("127.0.0.9", 5000)  # where the server sees the client after the move
MIGRATION = int(QuicEvent.CONNECTION_MIGRATION)
APP = int(CryptoLevel.APP)


def _confirmed_pair() -> tuple[SimAgent, SimServer, Wire]:
    client, server = sim_client(), SimServer()
    wire = handshake(client, server)
    assert client.conn is not None and server.conn is not None
    # HANDSHAKE_DONE and both sides' NEW_CONNECTION_IDs (issued CID_ISSUE_DELAY later).
    wire.run(lambda: client.conn.handshake_confirmed and len(client.conn.cids.peer) > 1
             and len(server.conn.cids.peer) > 1)
    for agent in (client, server):
        agent.conn.event_mask = 1 << MIGRATION
    return client, server, wire


def _out(conn: SimConnection, now: float) -> list[tuple[bytes, object]]:
    return conn.datagrams_to_send(now)


def test_active_migration_moves_both_ends_to_new_cids() -> None:
    client, server, wire = _confirmed_pair()
    c, s = client.conn, server.conn
    assert c is not None and s is not None
    c_dcid, s_dcid = c.peer_cid, s.peer_cid
    route = Route(ADDR_S, NEW_LOCAL)
    now = wire.now
    c.migrate(route, now)
    with pytest.raises(SimError) as busy:
        c.migrate(route, now)
    assert busy.value.errno == errno.EAGAIN  # socket.c: a switch is pending
    challenge = [d for d, addr in _out(c, now) if addr == route]
    assert len(challenge) == 1 and len(challenge[0]) >= 1200  # §8.2.1: expanded
    assert challenge[0][1:9] == c.cids.peer[c.cids.alt_seq][0] != c_dcid  # §9.5: a new CID on the new path
    # The server gets it from the client's new address: it answers there (§8.2.2), and
    # probes that address itself before moving (§9.3).
    s.receive_datagram(challenge[0], CLIENT_MOVED, now)
    answers = _out(s, now)
    assert {addr for _, addr in answers} == {CLIENT_MOVED}
    assert len(answers) == 2 and s.peer_addr == ADDR_C  # not moved yet
    for data, _ in answers:
        c.receive_datagram(data, route, now)
    assert c.peer_addr == route and c.peer_cid != c_dcid
    assert c.events == [bytes((MIGRATION, 1))]  # our own address changed
    back = _out(c, now)
    assert back and {addr for _, addr in back} == {route}
    for data, _ in back:
        s.receive_datagram(data, CLIENT_MOVED, now)
    assert s.peer_addr == CLIENT_MOVED and s.peer_cid != s_dcid  # the client's CID changed: ours too (§9.5)
    assert s.events == [bytes((MIGRATION, 0))]  # the peer moved, not us


def test_nat_rebinding_keeps_the_cid() -> None:
    """A packet from a new address with the CID in use (a NAT rebinding): the server probes
    with the same CID (connid.h quic_conn_id_select_alt, RFC 9000 §9.5 allows it)."""
    client, server, wire = _confirmed_pair()
    c, s = client.conn, server.conn
    assert c is not None and s is not None
    s_dcid = s.peer_cid
    c.stream_send(0, b"hello", fin=False)
    packets = _out(c, wire.now)
    for data, _ in packets:
        s.receive_datagram(data, ("127.0.0.1", 40999), wire.now)
    probes = [d for d, addr in _out(s, wire.now) if addr == ("127.0.0.1", 40999)]
    assert len(probes) == 1 and probes[0][1:9] == s_dcid


def test_a_parked_packet_from_a_new_address_is_probed_when_replayed() -> None:
    """A 1-RTT packet that waited for its receive key (spec §2.4) is judged on the address
    it came from when it is replayed, as the kernel replays each buffered skb with its own:
    from a new address, the server probes that address (it used to take the address of the
    datagram that was being read when the key came in, and probe nothing)."""
    client, server, wire = _confirmed_pair()
    c, s = client.conn, server.conn
    assert c is not None and s is not None
    elsewhere = ("127.0.0.1", 40998)
    c.stream_send(0, b"hello", fin=False)
    packets = _out(c, wire.now)
    key = s.keys.recv.pop(APP)  # as before the 1-RTT receive key is installed
    for data, _ in packets:
        s.receive_datagram(data, elsewhere, wire.now)
    assert not [d for d, addr in _out(s, wire.now) if addr == elsewhere]  # parked, not read
    c.stream_send(0, b"again", fin=False)
    for data, _ in _out(c, wire.now):  # a later packet from the client's own address, parked too
        s.receive_datagram(data, ADDR_C, wire.now)
    s.keys.recv[APP] = key
    s.receiver.replay_parked(APP)
    probes = [d for d, addr in _out(s, wire.now) if addr == elsewhere]
    assert len(probes) == 1 and s.peer_addr == ADDR_C  # probed; not moved before it answers


def test_unanswered_challenge_is_resent_then_given_up() -> None:
    """The kernel's PATH timer: max(2 PTO, 1.5 s), three resends, then the path is dropped;
    the connection stays where it was, with its CID, and may try again."""
    client, _server, wire = _confirmed_pair()
    c = client.conn
    assert c is not None
    dcid = c.peer_cid
    route = Route(ADDR_S, NEW_LOCAL)
    now = wire.now
    c.migrate(route, now)
    sent_at: list[float] = []
    for _ in range(200):
        sent_at += [now for _, addr in _out(c, now) if addr == route]
        if not c.address.path.busy:
            break
        timer = c.get_timer()
        assert timer is not None
        now = max(now, timer)
        c.handle_timer(now)
    assert len(sent_at) == 1 + MAX_PROBES
    gaps = [b - a for a, b in zip(sent_at, sent_at[1:], strict=False)]
    assert all(gap >= MIN_PATH_TIMEOUT for gap in gaps)
    assert not c.address.path.busy and c.cids.alt_seq is None
    assert c.peer_addr == ADDR_S and c.peer_cid == dcid and c.events == []
    assert now - sent_at[0] >= (1 + MAX_PROBES) * MIN_PATH_TIMEOUT  # given up at the 4th expiry
    c.migrate(route, now)  # a new attempt is allowed
    assert c.address.path.busy


def test_path_probe_timer_unit() -> None:
    probe = PathProbe()
    probe.start("p", 0.0, 2.0)
    assert probe.challenge_due and probe.deadline == 2.0
    probe.challenge_due = False
    assert probe.on_timer(1.9, 2.0) is None and not probe.challenge_due  # not due yet
    for i in range(MAX_PROBES):
        assert probe.on_timer(2.0 * (i + 1), 2.0) is None and probe.challenge_due
        probe.challenge_due = False
    assert probe.on_timer(2.0 * (MAX_PROBES + 1), 2.0) == "p"
    assert not probe.busy and probe.deadline is None


def test_forged_response_does_not_move() -> None:
    client, _server, wire = _confirmed_pair()
    c = client.conn
    assert c is not None
    c.migrate(Route(ADDR_S, NEW_LOCAL), wire.now)
    assert c.address.path.on_response(b"\x00" * 8) is None
    assert c.address.path.busy and c.peer_addr == ADDR_S


def test_preferred_address_round_trip() -> None:
    """The server's parameter carries its CID of sequence number 1 and that CID's reset
    token; the client moves there after HANDSHAKE_DONE with that CID, from the same socket
    (so its event says 0), and the server's event says 1 (its local address changed)."""
    pref = ("127.0.0.7", 6000)
    client = sim_client()
    server = SimServer()

    original_recv = server.recv

    def recv(data: bytes, now: float) -> None:
        fresh = server.conn is None
        original_recv(data, now)
        if fresh and server.conn is not None:
            server.conn.set_preferred_address(pref)

    server.recv = recv  # type: ignore[method-assign]
    wire = handshake(client, server)
    c, s = client.conn, server.conn
    assert c is not None and s is not None
    blob = s.cids.local[1]
    assert c.cids.peer[1] == (blob, s.cids.reset_token(blob))
    for agent in (client, server):
        agent.conn.event_mask = 1 << MIGRATION
    wire.run(lambda: c.handshake_confirmed)
    out = _out(c, wire.now)
    probes = [d for d, addr in out if addr == pref]
    assert len(probes) == 1 and probes[0][1:9] == blob  # §9.6: CID seq 1
    server_route = Route(ADDR_C, pref)
    s.receive_datagram(probes[0], server_route, wire.now)
    for data, addr in _out(s, wire.now):
        assert addr == server_route
        c.receive_datagram(data, pref, wire.now)
    assert c.peer_addr == pref and c.events == [bytes((MIGRATION, 0))]
    for data, addr in _out(c, wire.now):
        assert addr == pref
        s.receive_datagram(data, server_route, wire.now)
    assert s.peer_addr == server_route and s.events == [bytes((MIGRATION, 1))]
    assert not s.address.path.busy


def test_preferred_address_refused_on_a_client_and_after_disable_active_migration() -> None:
    client = sim_client()
    assert client.conn is not None
    with pytest.raises(SimError) as exc:
        client.conn.set_preferred_address(("127.0.0.7", 6000))
    assert exc.value.errno == errno.EINVAL
    server = SimConnection(is_client=False, original_dcid=b"o" * 8, peer_cid=b"p" * 8, now=0.0,
                           peer_addr=ADDR_C)
    server.params.peer_set = True
    server.params.peer = {**server.params.peer, "disable_active_migration": 1}
    with pytest.raises(SimError) as exc:
        server.set_preferred_address(("127.0.0.7", 6000))
    assert exc.value.errno == errno.EINVAL


def test_preferred_address_in_the_blob_and_its_choice() -> None:
    server = SimConnection(is_client=False, original_dcid=b"o" * 8, peer_cid=b"p" * 8, now=0.0,
                           peer_addr=ADDR_C)
    server.set_preferred_address(("127.0.0.7", 6000))
    tp = TransportParameters.decode(server.local_transport_params_blob(), "server")
    pa = tp.preferred_address
    assert pa is not None and str(pa.ipv4_address) == "127.0.0.7" and pa.ipv4_port == 6000
    assert pa.ipv6_port == 0 and pa.connection_id == server.cids.local[1]
    assert decode_preferred(pa, socket.AF_INET) == ("127.0.0.7", 6000)
    assert decode_preferred(pa, socket.AF_INET6) == ("::ffff:127.0.0.7", 6000, 0, 0)
    v6 = encode_preferred(("::2", 7000, 0, 0), b"c" * 8, b"t" * 16)
    assert decode_preferred(v6, socket.AF_INET6) == ("::2", 7000, 0, 0)
    assert decode_preferred(v6, socket.AF_INET) is None  # no IPv4 half


@pytest.mark.parametrize("addr", [("127.0.0.1", 443), ("::1", 8443, 0, 0), ("fe80::1", 1, 5, 2)])
def test_sockaddr_round_trip(addr: tuple) -> None:
    packed = pack_sockaddr(addr)
    assert len(packed) == (16 if len(addr) == 2 else 28)
    assert unpack_sockaddr(packed) == addr


def test_sockaddr_rejects_garbage() -> None:
    with pytest.raises(OSError) as exc:
        unpack_sockaddr(b"\x01\x00")
    assert exc.value.errno == errno.EINVAL
