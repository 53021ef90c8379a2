"""Wire compatibility: our SimConnection (driven by our TLS engine) against aioquic's
sans-I/O QuicConnection, in memory, both roles, QUIC v1 and v2."""
from __future__ import annotations

import random

import pytest

pytest.importorskip("aioquic")

from quichsd.sock.sim.state import ConnState  # noqa: E402
from tests.sim.driver import V1, V2, AioPeer, SimServer, Wire, handshake, sim_client  # noqa: E402


@pytest.mark.parametrize("version,supported,expected", [
    (V1, [V1], V1),
    (V2, [V2, V1], V2),
    # aioquic takes the first of our available versions (v2, v1) it supports: compatible
    # version negotiation (RFC 9368) moves the connection to v2, the sim client follows
    (V1, [V1, V2], V2),
], ids=["v1", "v2", "v1-upgraded-to-v2"])
def test_sim_client_vs_aioquic_server(version, supported, expected):
    client, server = sim_client(version=version), AioPeer(is_client=False, supported=supported)
    wire = handshake(client, server)
    assert client.conn.state == ConnState.ESTABLISHED and client.done is not None
    assert client.conn.version == expected and server.quic._version == expected

    sid = client.conn.open_stream(uni=False)
    payload = random.Random(1).randbytes(40_000)
    assert client.conn.stream_send(sid, payload, fin=True) == len(payload)
    wire.run(lambda: sid in client.finished)
    assert bytes(server.received[sid]) == payload
    assert bytes(client.received[sid]) == payload
    wire.run(lambda: client.conn.handshake_confirmed)  # aioquic's HANDSHAKE_DONE

    client.conn.close(7, b"done")
    wire.run(lambda: server.terminated is not None)
    assert server.terminated.error_code == 7 and server.terminated.reason_phrase == "done"


@pytest.mark.parametrize("version", [V1, V2], ids=["v1", "v2"])
def test_aioquic_client_vs_sim_server(version):
    server = SimServer(config={"version": version})
    client = AioPeer(is_client=True, version=version)
    wire = Wire(client, server)
    client.connect(wire.now)
    wire.run(lambda: client.handshake_done and server.conn is not None
             and server.conn.state == ConnState.ESTABLISHED)
    assert server.conn.version == version and client.quic._version == version
    assert server.done.alpn == b"quichsd-sim"

    sid = client.quic.get_next_available_stream_id()
    payload = random.Random(2).randbytes(40_000)
    client.quic.send_stream_data(sid, payload, end_stream=True)
    wire.run(lambda: sid in client.finished)
    assert bytes(client.received[sid]) == payload

    # the sim server's session ticket (sent by our engine at level APP) reaches aioquic,
    # and the application close reaches it too
    server.conn.close(0x42, b"bye")
    wire.run(lambda: client.terminated is not None)
    assert client.terminated.error_code == 0x42


def test_aioquic_close_during_handshake_reaches_sim():
    """A peer's CONNECTION_CLOSE is stored verbatim for getsockopt(CONNECTION_CLOSE)."""
    client, server = sim_client(), AioPeer(is_client=False, supported=[V1])
    wire = Wire(client, server)
    client.start(wire.now)
    wire.step()  # ClientHello -> aioquic
    # a transport close, as a TLS failure gives (0x100 + handshake_failure)
    server.quic.close(error_code=0x128, frame_type=0x06, reason_phrase="go away")
    wire.run(lambda: client.conn.state == ConnState.CLOSED)
    assert client.conn.close_info == (0x128, 0x06, b"go away")


@pytest.mark.parametrize("seed", range(2))
def test_lossy_interop(seed):
    rng = random.Random(seed)
    drop = lambda *_: rng.random() < 0.2  # noqa: E731
    client, server = sim_client(), AioPeer(is_client=False, supported=[V1])
    wire = handshake(client, server, drop=drop)
    sid = client.conn.open_stream(uni=False)
    payload = rng.randbytes(60_000)
    client.conn.stream_send(sid, payload, fin=True)
    wire.run(lambda: sid in client.finished, max_time=300, max_steps=20000)
    assert bytes(client.received[sid]) == payload

    server2 = SimServer()
    client2 = AioPeer(is_client=True)
    wire2 = Wire(client2, server2, drop=drop)
    client2.connect(wire2.now)
    wire2.run(lambda: client2.handshake_done and server2.conn.state == ConnState.ESTABLISHED, max_time=120)
    sid2 = client2.quic.get_next_available_stream_id()
    client2.quic.send_stream_data(sid2, payload, end_stream=True)
    wire2.run(lambda: sid2 in client2.finished, max_time=300, max_steps=20000)
    assert bytes(client2.received[sid2]) == payload


def test_key_updates_with_aioquic():
    client, server = sim_client(), AioPeer(is_client=False, supported=[V1])
    wire = handshake(client, server)
    wire.run(lambda: client.conn.handshake_confirmed)

    def echo(data: bytes) -> None:
        sid = client.conn.open_stream(uni=False)
        client.conn.stream_send(sid, data, fin=True)
        wire.run(lambda: sid in client.finished)
        assert bytes(client.received[sid]) == data

    echo(b"before")
    client.conn.key_update()  # we start one; aioquic follows
    echo(b"after ours")
    assert client.conn.key_phase == 1
    echo(b"settle")
    server.quic.request_key_update()  # aioquic starts one; we follow
    echo(b"after theirs")
    assert client.conn.key_phase == 0 and client.conn.state == ConnState.ESTABLISHED


# The completion step's NEW_CONNECTION_IDs leave in idle time (tests/sim/test_cid_issuance.py):
# aioquic still gets the full set, with the reset tokens, and may retire and switch CIDs.
AIOQUIC_LIMIT = 8  # aioquic's active_connection_id_limit; ours caps at CONN_ID_LIMIT (8)


def test_aioquic_client_gets_our_cids_and_retires_one():
    server, client = SimServer(), AioPeer(is_client=True)
    wire = Wire(client, server)
    client.connect(wire.now)
    wire.run(lambda: client.handshake_done and len(client.quic._peer_cid_available) == AIOQUIC_LIMIT - 1)
    conn = server.conn
    issued = {cid for seq, cid in conn.cids.local.items() if seq}
    assert {c.cid for c in client.quic._peer_cid_available} == issued
    assert {c.stateless_reset_token for c in client.quic._peer_cid_available} == {
        conn.cids.reset_token(cid) for cid in issued}

    client.quic.change_connection_id()  # RETIRE_CONNECTION_ID 0, then uses sequence 1
    sid = client.quic.get_next_available_stream_id()
    client.quic.send_stream_data(sid, b"on a new CID", end_stream=True)
    wire.run(lambda: sid in client.finished and 0 not in conn.cids.local
             and len(client.quic._peer_cid_available) == AIOQUIC_LIMIT - 1)
    assert bytes(client.received[sid]) == b"on a new CID"
    assert len(conn.cids.local) == AIOQUIC_LIMIT and conn.cids.next_seq == AIOQUIC_LIMIT + 1
    assert conn.local_cid == conn.cids.local[1]


def test_aioquic_server_gets_our_cids():
    client, server = sim_client(), AioPeer(is_client=False, supported=[V1])
    wire = handshake(client, server)
    wire.run(lambda: len(server.quic._peer_cid_available) == AIOQUIC_LIMIT - 1)
    assert {c.cid for c in server.quic._peer_cid_available} == {
        cid for seq, cid in client.conn.cids.local.items() if seq}
