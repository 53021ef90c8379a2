"""SimConnection against SimConnection, each driven by our TLS engine as the kernel and the
handshake agent would be (tests/sim/driver.py): handshakes in v1 and v2, stream data both
ways, the session ticket capture, 0-RTT, and recovery from lost datagrams."""
from __future__ import annotations

import random

import pytest

from quichsd.sock.sim.levels import APP
from quichsd.sock.sim.state import ConnState
from tests.sim.driver import START, V1, V2, SimServer, Wire, handshake, packet_kinds, sim_client


def server_flight_delivered() -> tuple[object, SimServer, Wire]:
    """A client whose ClientHello the server answered, the answer delivered to the client's
    socket but not yet read by its agent."""
    client, server = sim_client(), SimServer()
    wire = Wire(client, server)
    client.start(wire.now)
    (first,) = client.send(wire.now)
    server.recv(first, wire.now)
    server.pump(wire.now)
    for data in server.send(wire.now):
        client.recv(data, wire.now)
    return client, server, wire


@pytest.mark.parametrize("version", [V1, V2], ids=["v1", "v2"])
def test_handshake_streams_and_ticket(version):
    client, server = sim_client(version=version), SimServer(config={"version": version})
    wire = handshake(client, server)
    cc, sc = client.conn, server.conn
    assert cc.state == sc.state == ConnState.ESTABLISHED
    assert cc.version == sc.version == version
    assert client.done is not None and server.done is not None
    assert client.done.alpn == b"quichsd-sim"
    # the client's first flight is one padded Initial; the server's coalesces Initial and
    # Handshake packets in its first datagram
    assert wire.log[0] == ("c2s", 1200)

    # client -> server, echoed back (bidi), and a server-initiated uni stream
    sid = cc.open_stream(uni=False)
    payload = bytes(range(256)) * 300
    assert cc.stream_send(sid, payload, fin=True) == len(payload)
    wire.run(lambda: sid in client.finished)
    assert bytes(client.received[sid]) == payload
    assert bytes(server.received[sid]) == payload
    usid = sc.open_stream(uni=True)
    assert usid == 3
    sc.stream_send(usid, b"from the server", fin=True)
    wire.run(lambda: usid in client.finished)
    assert bytes(client.received[usid]) == b"from the server"

    # spec §2.6: the client captures the first NewSessionTicket from APP-level CRYPTO
    wire.run(lambda: bool(cc.session_ticket()))
    ticket = cc.session_ticket()
    assert ticket[0] == 4 and len(ticket) == 4 + int.from_bytes(ticket[1:4], "big")
    client.feed_ticket(wire.now)
    assert client.session is not None
    # NEW_TOKEN and HANDSHAKE_DONE arrived; the client issued NEW_CONNECTION_IDs
    wire.run(lambda: cc.token != b"" and cc.handshake_confirmed)
    assert len(sc.local_cids()) > 1 and len(cc.local_cids()) > 1


def test_first_flight_is_coalesced():
    client, server = sim_client(), SimServer()
    wire = Wire(client, server)
    client.start(wire.now)
    (first,) = client.send(wire.now)
    assert len(first) == 1200 and packet_kinds(first)[0][0]
    server.recv(first, wire.now)
    assert server.send(wire.now) == []  # no ACK alone while the hello waits for the agent
    server.pump(wire.now)
    flight = server.send(wire.now)
    kinds = packet_kinds(flight[0])
    assert len(kinds) >= 2 and all(is_long for is_long, _ in kinds)  # Initial + Handshake
    assert len(flight[0]) >= 1200  # carries an ack-eliciting Initial: padded
    client.recv(flight[0], wire.now)
    assert client.conn.spaces.by_id[1].largest_acked == 0  # the ACK rode with the ServerHello


def test_held_ack_leaves_alone_after_a_short_hold():
    """The ACK of a ClientHello waits for the agent's answer to carry it, but only for
    HANDSHAKE_ACK_HOLD (2 ms): Initial and Handshake packets are acknowledged without
    max_ack_delay (RFC 9000 §13.2.1), so a slow agent still gets the Initial acknowledged."""
    from quichsd.sock.sim.receiver import HANDSHAKE_ACK_HOLD

    client, server = sim_client(), SimServer()
    wire = Wire(client, server)
    client.start(wire.now)
    (first,) = client.send(wire.now)
    server.recv(first, wire.now)
    assert server.send(wire.now + HANDSHAKE_ACK_HOLD / 2) == []
    assert server.conn.get_timer() == pytest.approx(wire.now + HANDSHAKE_ACK_HOLD)
    (ack,) = server.send(wire.now + HANDSHAKE_ACK_HOLD)
    assert len(ack) < 1200 and packet_kinds(ack) == [(True, ack[0])]  # an unpadded ACK-only Initial


def test_client_finished_carries_the_acks_only():
    """The client's answer to the server's flight is one datagram: Initial ACK, Handshake
    ACK + Finished; no 1-RTT packet (its completion step's NEW_CONNECTION_IDs wait for idle
    time), so its 1-RTT send key is not even derived yet. They follow in a datagram of
    their own."""
    client, server, wire = server_flight_delivered()
    assert client.send(wire.now) == []  # nothing alone while the agent works
    client.pump(wire.now)
    (answer,) = client.send(wire.now)
    assert len(answer) == 1200  # it carries an Initial: padded (RFC 9000 §14.1)
    headers = [(is_long, first_byte & 0x30 if is_long else None)
               for is_long, first_byte in packet_kinds(answer)]
    assert headers == [(True, 0x00), (True, 0x20)]  # Initial, Handshake (v1 types)
    conn = client.conn
    assert conn.state == ConnState.ESTABLISHED and not conn.keys.send[APP].derived
    assert conn.idle_work()  # the agent waits: the NEW_CONNECTION_IDs are queued
    (cids,) = client.send(wire.now)
    assert packet_kinds(cids) == [(False, cids[0])]  # one 1-RTT packet


def test_more_holds_the_flight():
    """MSG_MORE: nothing leaves until a send without it (spec §2.3)."""
    client = sim_client()
    conn = client.conn
    conn.send_crypto(1, b"\x01\x00\x00\x02ab", more=True)
    assert conn.datagrams_to_send(START) == []
    conn.send_crypto(1, b"cd")
    assert len(conn.datagrams_to_send(START)) == 1


@pytest.mark.parametrize("client_version,server_version,expected", [
    (V1, V2, V2),  # the server prefers v2 and the client offered it: switch
    (V2, 0, V2),  # a server with no configured version stays on the client's (kernel, seen in QEMU)
    (V2, V1, V1),  # the server prefers v1 and the client offered it: switch
])
def test_compatible_version_negotiation(client_version, server_version, expected):
    client, server = sim_client(version=client_version), SimServer(config={"version": server_version})
    handshake(client, server)
    assert client.conn.version == server.conn.version == expected


def test_client_follows_version_change_after_an_ack_in_the_old_version():
    """An endpoint flushes the server's ACK (still v2) before the agent has read the
    ClientHello and switched the connection to v1 (spec §5, kernel version selection)."""
    client, server = sim_client(version=V2), SimServer(config={"version": V1})
    wire = Wire(client, server)
    client.start(wire.now)
    for data in client.send(wire.now):
        server.recv(data, wire.now)
    (ack,) = server.send(wire.now)  # ACK-only Initial, v2, not padded: no hold (see below)
    assert ack[1:5] == V2.to_bytes(4, "big") and len(ack) < 1200
    client.recv(ack, wire.now)
    server.pump(wire.now)  # now the hook sets the client's blob: the server moves to v1
    wire.run(lambda: client.completed and server.conn.state == ConnState.ESTABLISHED)
    assert client.conn.version == server.conn.version == V1


def test_zero_rtt():
    client, server = sim_client(), SimServer(early_data=True)
    wire = handshake(client, server)
    wire.run(lambda: bool(client.conn.session_ticket()))
    client.feed_ticket(wire.now)
    remote = client.conn.get_transport_param(remote=True)

    # spec §2.6: restore the server's parameters, queue data, the EARLY key releases it
    again = sim_client(now=wire.now, session=client.session, early_data=True, remote_params=remote)
    sid = again.conn.open_stream(uni=False)
    again.conn.stream_send(sid, b"early bird", fin=True)
    server2 = SimServer(early_data=True)
    wire2 = Wire(again, server2, now=wire.now)
    again.start(wire2.now)
    (first,) = again.send(wire2.now)
    assert len(packet_kinds(first)) == 2  # Initial + 0-RTT in one datagram
    server2.recv(first, wire2.now)
    server2.pump(wire2.now)
    # decrypted, but held on the "early list" until the 1-RTT receive key
    assert server2.conn.streams.readable()
    assert server2.conn.stream_recv(100) is None
    wire2.run(lambda: sid in again.finished)
    assert again.done.early_data_accepted and again.done.resumed
    assert bytes(again.received[sid]) == b"early bird"
    assert wire2.sent["c2s"] <= 3


def test_stream_send_before_handshake_needs_peer_limits():
    client = sim_client()
    with pytest.raises(OSError) as info:
        client.conn.open_stream(uni=False)
    assert info.value.errno == 22  # EINVAL: no remote params, stream limit 0


# ---- loss ------------------------------------------------------------------------------------


LOSS_PATTERNS = {
    "client-initial": {("c2s", 0)},
    "server-first-flight": {("s2c", 0), ("s2c", 1)},
    "both-first": {("c2s", 0), ("s2c", 0)},
    "client-finished": {("c2s", 1)},
    "handshake-done": {("s2c", 2), ("s2c", 3)},
}


@pytest.mark.parametrize("pattern", LOSS_PATTERNS, ids=list(LOSS_PATTERNS))
def test_handshake_recovers_from_loss(pattern):
    lost = LOSS_PATTERNS[pattern]
    client, server = sim_client(), SimServer()
    wire = handshake(client, server, drop=lambda d, i, _data: (d, i) in lost)
    sid = client.conn.open_stream(uni=False)
    client.conn.stream_send(sid, b"after loss", fin=True)
    wire.run(lambda: sid in client.finished)
    assert bytes(client.received[sid]) == b"after loss"
    wire.run(lambda: client.conn.handshake_confirmed)
    assert set(wire.dropped) == lost


@pytest.mark.parametrize("seed", range(4))
def test_transfer_under_random_loss(seed):
    rng = random.Random(seed)
    client, server = sim_client(version=(V1, V2)[seed % 2]), SimServer(config={"version": (V1, V2)[seed % 2]})
    wire = handshake(client, server, drop=lambda *_: rng.random() < 0.2)
    payload = rng.randbytes(150_000)
    sid = client.conn.open_stream(uni=False)
    assert client.conn.stream_send(sid, payload, fin=True) == len(payload)
    wire.run(lambda: sid in client.finished, max_time=300, max_steps=20000)
    assert bytes(client.received[sid]) == payload
    assert wire.dropped


def test_flow_control_credit_is_refilled():
    """More data than the peer's initial stream credit: MAX_STREAM_DATA / MAX_DATA
    updates let the rest through, and stream_send takes what the credit allows."""
    small = {"max_stream_data_bidi_remote": 4000, "max_data": 6000}
    client, server = sim_client(), SimServer(local_params=small)
    wire = handshake(client, server)
    sid = client.conn.open_stream(uni=False)
    payload = bytes(50_000)
    sent = client.conn.stream_send(sid, payload)
    assert sent == 4000
    with pytest.raises(OSError) as info:
        client.conn.stream_send(sid, payload[sent:])
    assert info.value.errno == 11  # EAGAIN

    def refill():
        nonlocal sent
        while sent < len(payload):
            try:
                sent += client.conn.stream_send(sid, payload[sent:], fin=True)
            except OSError:
                return False
        return sid in client.finished

    wire.run(refill)
    assert bytes(client.received[sid]) == payload


def test_key_update_both_ways():
    client, server = sim_client(), SimServer()
    wire = handshake(client, server)
    wire.run(lambda: client.conn.handshake_confirmed)
    cc, sc = client.conn, server.conn
    for initiator in (cc, sc, cc):
        before = initiator.key_phase
        initiator.key_update()
        with pytest.raises(OSError) as info:
            initiator.key_update()  # the previous one is not answered yet
        assert info.value.errno == 22
        sid = cc.open_stream(uni=False)
        cc.stream_send(sid, b"across a key update", fin=True)
        wire.run(lambda sid=sid: sid in client.finished)
        assert bytes(client.received[sid]) == b"across a key update"
        assert cc.key_phase == sc.key_phase == 1 - before
        # a new update waits until a packet of this phase is acknowledged: one more exchange
        sid = cc.open_stream(uni=False)
        cc.stream_send(sid, b"settle", fin=True)
        wire.run(lambda sid=sid: sid in client.finished)


def test_stream_reset_and_stop_sending():
    client, server = sim_client(), SimServer()
    server.echo = False
    wire = handshake(client, server)
    cc, sc = client.conn, server.conn
    sid = cc.open_stream(uni=False)
    cc.stream_send(sid, b"partial")
    wire.run(lambda: sid in server.received)
    # the server asks the client to stop: the client answers with RESET_STREAM
    sc.stream_stop_sending(sid, 0x77)
    with pytest.raises(OSError) as info:
        sc.stream_stop_sending(sid, 0x77)
    assert info.value.errno == 11  # EAGAIN: one is in flight
    wire.run(lambda: cc.streams.streams.get(sid) is None or cc.streams.streams[sid].reset_pending is not None)
    # and the client resets a stream it opened itself
    sid2 = cc.open_stream(uni=True)
    cc.stream_send(sid2, b"x" * 100)
    cc.stream_reset(sid2, 9)
    with pytest.raises(OSError):
        cc.stream_reset(sid2, 9)
    wire.run(lambda: sc.streams.peer_closed[True] == 1)  # the peer's uni stream is done
    with pytest.raises(OSError) as info:
        cc.stream_reset(999 * 4, 1)
    assert info.value.errno == 22


def test_datagrams():
    params = {"max_datagram_frame_size": 1200}
    client, server = sim_client(local_params=params), SimServer(local_params=params)
    wire = handshake(client, server)
    client.conn.datagram_send(b"unreliable")
    wire.run(lambda: server.conn.pending_readable())
    assert server.conn.datagram_recv() == b"unreliable"
    plain_client, plain_server = sim_client(), SimServer()
    handshake(plain_client, plain_server)
    with pytest.raises(OSError) as info:
        plain_client.conn.datagram_send(b"x")
    assert info.value.errno == 22


def test_close_datagrams_never_put_a_short_header_first():
    """RFC 9000 §12.2: nothing may follow a short-header packet in a datagram. An established
    client closes with a 1-RTT packet alone; one still in the handshake with long headers."""
    client, server = sim_client(), SimServer()
    handshake(client, server)
    client.conn.close(0)
    (datagram,) = client.send(START + 10)
    assert [is_long for is_long, _ in packet_kinds(datagram)] == [False]

    client, server, wire = server_flight_delivered()  # its agent has not read it yet
    client.conn.close(0)
    for datagram in client.send(wire.now):
        kinds = [is_long for is_long, _ in packet_kinds(datagram)]
        assert kinds and all(kinds)


def test_receive_key_whose_replayed_packets_close_the_connection_is_epipe():
    """spec §9, as the kernel's CRYPTO_SECRET handler: installing a receive key replays the
    packets that waited for it; when one is a CONNECTION_CLOSE (a client that closed right
    after its handshake, before the server installed its 1-RTT receive key), the install
    itself fails with EPIPE, and the connection is closed."""
    import errno

    from quichsd.tls.constants import CryptoLevel, Direction
    from quichsd.tls.events import InstallSecret

    client, server, wire = server_flight_delivered()
    client.pump(wire.now)
    assert client.completed  # both 1-RTT keys in, its Finished queued
    finished = client.send(wire.now)
    client.conn.close(0)
    closing = client.send(wire.now)
    assert finished and closing
    for datagram in finished + closing:
        server.recv(datagram, wire.now)  # the close waits for the 1-RTT receive key
    level, data, _ = server.conn.recv_crypto(65536)
    events = server.engine.receive(CryptoLevel(level), data, wire.now)
    (install,) = [e for e in events if isinstance(e, InstallSecret)]
    assert install.level == CryptoLevel.APP and install.direction == Direction.RECV
    with pytest.raises(OSError) as info:
        server.conn.install_secret(int(install.level), False, install.cipher_type, install.secret)
    assert info.value.errno == errno.EPIPE
    assert server.conn.state == ConnState.CLOSED and server.conn.close_info[0] == 0
