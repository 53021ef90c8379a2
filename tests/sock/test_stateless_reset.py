"""Stateless reset (RFC 9000 §10.3) over real UDP. A listener answers a 1-RTT packet for no
connection with a reset one byte shorter than it (at most 64 bytes; none for 22 bytes or
less), short header with the fixed bit, as the kernel's listener does (net/quic/packet.c
quic_packet_stateless_reset_create_and_xmit) -- checked on both backends; on the simulation
the token is its endpoint's static-key token of the packet's DCID, and a client whose
server connection vanished is closed by the reset (errcode 0x100, as the kernel reports)."""
from __future__ import annotations

import errno
import os
import socket

import pytest

from quichsd import QuicSocket, abi
from quichsd.sock.sim.cids import reset_token
from quichsd.sock.sim.simsocket import SimQuicSocket
from tests.sock.pairs import connected
from tests.sockets import BACKENDS

L = abi.lib
CID_LEN = 8  # the connection IDs both backends issue


def short_packet(size: int) -> bytes:
    """A 1-RTT-looking packet (short header, fixed bit) for a connection nobody has."""
    body = os.urandom(size)
    return bytes((0x40 | (body[0] & 0x3F),)) + body[1:]


@pytest.mark.parametrize("backend", BACKENDS)
def test_listener_answers_unknown_1rtt_packets_with_smaller_resets(backend) -> None:
    listener = QuicSocket(socket.AF_INET, backend=backend)
    listener.setsockopt(L.QUIC_SOCKOPT_ALPN, b"h3")
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.settimeout(2)
    with listener, probe:
        address = listener.getsockname()[:2]
        for size, expected in ((200, 64), (40, 39), (23, 22)):
            trigger = short_packet(size)
            probe.sendto(trigger, address)
            reset, _ = probe.recvfrom(2048)
            assert len(reset) == expected
            assert reset[0] & 0xC0 == 0x40  # short header, fixed bit
            if isinstance(listener.backend, SimQuicSocket):
                endpoint = listener.backend.endpoint
                assert endpoint is not None
                assert reset[-16:] == reset_token(endpoint.reset_key, trigger[1:1 + CID_LEN])
        # 22 bytes cannot be answered with a smaller reset: nothing comes (so two endpoints
        # answering each other's resets stop, RFC 9000 §10.3.3).
        probe.settimeout(0.5)
        probe.sendto(short_packet(22), address)
        with pytest.raises(TimeoutError):
            probe.recvfrom(2048)


def test_a_reset_closes_the_client_whose_server_connection_vanished(pki) -> None:
    """The server connection is dropped without a word (as after a crash); the client's
    next packet draws a reset that carries the token the server gave for its CID."""
    with connected("sim", pki, stateless_reset=1) as (client, server):
        sim = server.backend
        assert isinstance(sim, SimQuicSocket) and sim.endpoint is not None and sim.conn is not None
        sim.endpoint.remove_connection(sim.conn)
        client.send(b"anyone there?", -1, new=True, fin=True)
        with pytest.raises(OSError) as failure:
            client.recv()
        assert failure.value.errno == errno.ENOTCONN
        close = abi.unpack_connection_close(client.getsockopt(L.QUIC_SOCKOPT_CONNECTION_CLOSE, 256))
        assert close.errcode == 0x100
