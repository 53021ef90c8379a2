"""Greasing the QUIC bit (RFC 9287) against picoquic, which advertises grease_quic_bit and
greases towards peers that do: our client advertises it too, so both sides may clear the
bit; the echo crosses, we clear ours towards picoquic, and we take picoquic's 1-RTT
packets without it (our receiver's check, seen through a spy on it)."""
from __future__ import annotations

import socket

import pytest

from quichsd import QuicSocket, abi, quic_handshake
from quichsd.sock.sim.receiver import Receiver
from quichsd.sock.sim.simsocket import SimQuicSocket
from tests.interop.test_picoquic import PicoquicServer, _need_peer, our_client  # noqa: F401
from tests.sockets import exchange

pytestmark = pytest.mark.interop
L = abi.lib


def test_both_grease_the_quic_bit_with_picoquic(pki, monkeypatch) -> None:
    cleared: list[bool] = []
    original = Receiver._receive_packet

    def spy(self, data, header, now, opened=None):
        if not header.is_long:
            cleared.append(not data[header.start] & 0x40)
        return original(self, data, header, now, opened)

    monkeypatch.setattr(Receiver, "_receive_packet", spy)
    srv = PicoquicServer(pki, alpn="h3")
    try:
        sock = QuicSocket(socket.AF_INET, backend="sim")
        sock.setsockopt(L.QUIC_SOCKOPT_TRANSPORT_PARAM, abi.pack_transport_param(grease_quic_bit=1))
        sock.connect(("127.0.0.1", srv.port))
        with sock:
            quic_handshake(sock, our_client(pki, alpns=["h3"]))
            assert exchange(sock, b"greased both ways") == b"GREASED BOTH WAYS"
            backend = sock.backend
            assert isinstance(backend, SimQuicSocket) and backend.conn is not None
            assert backend.conn.params.peer["grease_quic_bit"] == 1  # so ours went without the bit
    finally:
        srv.stop()
    assert cleared and any(cleared)  # picoquic's 1-RTT packets came (some) without the bit
