"""Greasing the QUIC bit (RFC 9287) in memory: a sender clears the fixed bit of its 1-RTT and
Handshake packets once the peer advertised grease_quic_bit, as the kernel does
(net/quic/packet.c; Initial and 0-RTT keep it); a receiver takes 1-RTT packets with the bit
cleared only when it advertised the parameter itself (RFC 9000 §17.3.1)."""
from __future__ import annotations

from tests.sim.driver import SimServer, handshake, packet_kinds, sim_client

GREASE = {"grease_quic_bit": 1}


def _recording() -> tuple[list[tuple[str, bool, int]], object]:
    """A drop callback that keeps (direction, is_long, first byte) of every packet."""
    seen: list[tuple[str, bool, int]] = []

    def record(direction: str, index: int, datagram: bytes) -> bool:
        seen.extend((direction, is_long, first) for is_long, first in packet_kinds(datagram))
        return False

    return seen, record


def _long_type(first: int) -> int:
    return (first >> 4) & 0x03  # v1: 0 Initial, 1 0-RTT, 2 Handshake


def test_only_the_side_whose_peer_advertised_it_clears_the_bit() -> None:
    """The server advertises grease_quic_bit, the client does not: the client's 1-RTT and
    Handshake packets go without the bit, its Initials with it; all of the server's
    packets keep it; data crosses both ways."""
    seen, record = _recording()
    client, server = sim_client(), SimServer(local_params=GREASE)
    wire = handshake(client, server, drop=record)
    sid = client.conn.open_stream(uni=False)
    client.conn.stream_send(sid, b"greased", fin=True)
    wire.run(lambda: sid in client.finished)
    assert bytes(client.received[sid]) == b"greased"  # echoed by the server
    ours = [(is_long, first) for d, is_long, first in seen if d == "c2s"]
    client_short = [first for is_long, first in ours if not is_long]
    client_handshake = [first for is_long, first in ours if is_long and _long_type(first) == 2]
    client_initial = [first for is_long, first in ours if is_long and _long_type(first) == 0]
    assert client_short and client_handshake and client_initial
    assert all(not first & 0x40 for first in client_short + client_handshake)
    assert all(first & 0x40 for first in client_initial)
    assert all(first & 0x40 for d, _, first in seen if d == "s2c")


def test_a_cleared_bit_is_dropped_unless_we_advertised_it() -> None:
    """A client that clears the bit though the server never advertised grease_quic_bit:
    the server drops those 1-RTT packets; once the client sets it again the data (sent
    again after the loss) arrives."""
    client, server = sim_client(), SimServer()
    wire = handshake(client, server)
    params = client.conn.params
    honest = params.peer
    params.peer = {**honest, "grease_quic_bit": 1}  # the client wrongly believes it may
    seen, record = _recording()
    wire.drop = record  # type: ignore[assignment]
    sid = client.conn.open_stream(uni=False)
    client.conn.stream_send(sid, b"dropped first", fin=True)
    wire.run(lambda: len([d for d, _, _ in seen if d == "c2s"]) >= 2, max_time=5)  # and a retransmission
    sent = [first for d, _, first in seen if d == "c2s"]
    assert all(not first & 0x40 for first in sent)  # delivered to the server, bit cleared
    assert sid not in server.received
    params.peer = honest
    wire.run(lambda: sid in client.finished)
    assert bytes(server.received[sid]) == b"dropped first"


def test_both_advertise_and_both_clear() -> None:
    seen, record = _recording()
    client, server = sim_client(local_params=GREASE), SimServer(local_params=GREASE)
    wire = handshake(client, server, drop=record)
    sid = client.conn.open_stream(uni=False)
    client.conn.stream_send(sid, bytes(5000), fin=True)
    wire.run(lambda: sid in client.finished)
    assert bytes(client.received[sid]) == bytes(5000)
    short = [(d, first) for d, is_long, first in seen if not is_long]
    assert {d for d, _ in short} == {"c2s", "s2c"}
    assert all(not first & 0x40 for _, first in short)
