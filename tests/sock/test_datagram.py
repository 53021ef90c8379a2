"""RFC 9221 DATAGRAM frames through the socket API as the kernel ABI has them (spec
kernel-quic-abi §1.5; net/quic/socket.c quic_sendmsg/quic_recvmsg): sendmsg with
MSG_QUIC_DATAGRAM, recvmsg items flagged MSG_QUIC_DATAGRAM (MSG_EOR once whole), each side's
max_datagram_frame_size set with QUIC_SOCKOPT_TRANSPORT_PARAM. Run against the simulation
here and against a real kernel wherever IPPROTO_QUIC exists (the QEMU tier)."""
from __future__ import annotations

import errno

import pytest

from quichsd import QuicSocket, abi
from quichsd.sock.base import RecvItem, RecvKind
from tests.sock.pairs import connected
from tests.sockets import BACKENDS

pytestmark = pytest.mark.parametrize("backend", BACKENDS)
L = abi.lib
DGRAM = L.MSG_QUIC_DATAGRAM
EOR = 0x80
LIMIT = 1400  # max_datagram_frame_size both ways


def errno_of(fn, *args) -> int:
    with pytest.raises(OSError) as err:
        fn(*args)
    return err.value.errno


def next_item(sock: QuicSocket, bufsize: int = 65536) -> RecvItem:
    """The next item that is not an event."""
    while True:
        item = sock.recv_item(bufsize)
        if item.kind is not RecvKind.EVENT:
            return item


def test_datagrams_both_ways(backend, pki) -> None:
    with connected(backend, pki, client_params={"max_datagram_frame_size": LIMIT},
                   max_datagram_frame_size=LIMIT) as (client, server):
        assert client.send_stream(b"ping", -1, 0, DGRAM) == 4
        item = next_item(server)
        assert (item.kind, item.data) == (RecvKind.DATAGRAM, b"ping")
        assert item.msg_flags & (DGRAM | EOR) == DGRAM | EOR
        assert server.send_stream(b"pong" * 100, -1, 0, DGRAM) == 400
        item = next_item(client)
        assert (item.kind, item.data) == (RecvKind.DATAGRAM, b"pong" * 100)
        # A short buffer: the rest comes with the next call, MSG_EOR on the last part.
        client.send_stream(b"0123456789", -1, 0, DGRAM)
        first = next_item(server, 4)
        assert (first.kind, first.data, bool(first.msg_flags & EOR)) == (RecvKind.DATAGRAM, b"0123", False)
        rest = next_item(server, 64)
        assert (rest.kind, rest.data, bool(rest.msg_flags & EOR)) == (RecvKind.DATAGRAM, b"456789", True)
        # Datagrams and stream data side by side.
        client.send(b"on a stream", -1, new=True, fin=True)
        client.send_stream(b"beside it", -1, 0, DGRAM)
        seen = {(i.kind, i.data) for i in (next_item(server), next_item(server))}
        assert seen == {(RecvKind.STREAM, b"on a stream"), (RecvKind.DATAGRAM, b"beside it")}


def test_datagram_errors(backend, pki) -> None:
    """EMSGSIZE for an empty datagram or one over the peer's max_datagram_frame_size;
    EINVAL towards a peer that takes none."""
    with connected(backend, pki, max_datagram_frame_size=LIMIT) as (client, server):
        assert errno_of(client.send_stream, b"", -1, 0, DGRAM) == errno.EMSGSIZE
        assert errno_of(client.send_stream, bytes(LIMIT + 100), -1, 0, DGRAM) == errno.EMSGSIZE
        # The client advertised no max_datagram_frame_size: the server may send none.
        assert errno_of(server.send_stream, b"x", -1, 0, DGRAM) == errno.EINVAL
