"""Passive connection migration on the wire (RFC 9000 §9.3, issue 13): the relay
(tests/sim/relay.py) plays a NAT that rebinds the client's source port mid-transfer, or an
attacker that sends a copy of a client packet from another address first. The server probes a
new address with PATH_CHALLENGE and moves there only once it answers, as the kernel does
(packet.c quic_packet_path_alt_process, frame.c quic_frame_path_response_process), with a
CONNECTION_MIGRATION event whose byte is 0 (the peer moved, not us)."""
from __future__ import annotations

import threading

import pytest

from quichsd import HandshakeConfig
from quichsd.abi import lib as L
from quichsd.abi import pack_event_option
from quichsd.kernel_numbers import QuicEvent
from quichsd.sock import QuicSocket
from tests.sim.relay import ImpairingRelay
from tests.sim.transfer import Address, connected_pair, payload, transfer
from tests.sock.pairs import stream_to_fin
from tests.sockets import Pki

MIB = 1 << 20


def _configs(pki: Pki) -> tuple[HandshakeConfig, HandshakeConfig]:
    server = HandshakeConfig(server=True, alpns=["bulk"], cert_file=pki.cert_file, key_file=pki.key_file,
                             timeout=10)
    client = HandshakeConfig(alpns=["bulk"], hostname="localhost", cafile=pki.ca_file, timeout=10)
    return server, client


def _through(relays: list[ImpairingRelay], **options: int):  # type: ignore[no-untyped-def]
    def route(server: Address) -> Address:
        relays.append(ImpairingRelay(server, **options).start())
        return relays[0].address
    return route


@pytest.mark.parametrize("upload", [True, False], ids=["upload", "download"])
def test_nat_rebinding_mid_transfer_keeps_the_connection(pki: Pki, upload: bool) -> None:
    relays: list[ImpairingRelay] = []
    data = payload(MIB)
    try:
        with connected_pair(*_configs(pki), _through(relays, rebind_after=20)) as (client, server):
            before = server.getpeername()
            result = transfer(client, server, data, upload=upload, timeout=30)
            after = server.getpeername()
            assert relays[0].rebind_after == 0  # the rebinding happened
            now_at = relays[0].upstream_address()
    finally:
        for relay in relays:
            relay.stop()
    assert result.intact
    assert tuple(before) != now_at and tuple(after) == now_at  # moved to the new port


def test_spoofed_source_does_not_move_the_path(pki: Pki) -> None:
    """A copy of a client packet from another address arrives first: the server probes that
    address (it gets a PATH_CHALLENGE within 3x what it sent, §8.1), nobody answers, and the
    connection stays where it was."""
    relays: list[ImpairingRelay] = []
    data = payload(MIB // 2)
    try:
        with connected_pair(*_configs(pki), _through(relays, spoof_at=15)) as (client, server):
            # An upload: the copied datagram is a full data packet. (In a download the client
            # sends only ACKs, and on a fast run its 15th datagram was already its
            # CONNECTION_CLOSE, which rightly probes nothing.)
            result = transfer(client, server, data, upload=True, timeout=30)
            peer = server.getpeername()
            relay = relays[0]
            probes = relay.spoofer_received(wait=5.0)
            real = relay.upstream_address()
    finally:
        for relay in relays:
            relay.stop()
    assert result.intact
    assert tuple(peer) == real and real != relay.spoofed_from
    # Probed, and within the limit for an address that sent one datagram (§8.1: what the
    # challenge's retransmissions add counts too).
    assert probes and sum(len(p) for p in probes) <= 3 * relay.spoofed_size


def test_migration_event_on_the_server(pki: Pki) -> None:
    """The kernel tells the server's application (QUIC_EVENT_CONNECTION_MIGRATION, payload
    u8 local = 0); the client, which did not move its own socket, gets no event."""
    relays: list[ImpairingRelay] = []
    events: dict[str, list[bytes]] = {"server": [], "client": []}
    option = pack_event_option(QuicEvent.CONNECTION_MIGRATION, True)
    try:
        with connected_pair(*_configs(pki), _through(relays)) as (client, server):
            server.setsockopt(L.QUIC_SOCKOPT_EVENT, option)
            client.setsockopt(L.QUIC_SOCKOPT_EVENT, option)
            relays[0].rebind_now()
            thread = threading.Thread(target=_echo_after_event, args=(server, events["server"]), daemon=True)
            thread.start()
            client.send(b"ping", 0, fin=True)
            echoed = stream_to_fin(client, events["client"], want_event=False)
            thread.join(10)
            assert server.getpeername() == relays[0].upstream_address()
    finally:
        for relay in relays:
            relay.stop()
    assert echoed == b"ping"
    assert events == {"server": [bytes((QuicEvent.CONNECTION_MIGRATION, 0))], "client": []}


def _echo_after_event(sock: QuicSocket, events: list[bytes]) -> None:
    data = stream_to_fin(sock, events, want_event=True)
    sock.send(data, 0, fin=True)
