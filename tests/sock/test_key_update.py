"""1-RTT key updates through the socket API (RFC 9001 §6; spec kernel-quic-abi §1.4, §1.5):
QUIC_SOCKOPT_KEY_UPDATE starts one (EPIPE unless established, EINVAL while the last one is
pending: net/quic/socket.c quic_sock_key_update), and the side that follows a peer's update
gets a QUIC_EVENT_KEY_UPDATE whose payload is the new phase (packet.c; the initiator gets
none)."""
from __future__ import annotations

import errno
import hashlib
import random
import socket
import threading

import pytest

from quichsd import QuicSocket, abi
from quichsd.kernel_numbers import QuicEvent
from tests.sock.pairs import connected, stream_to_fin
from tests.sockets import BACKENDS, client_socket

L = abi.lib
KEY_UPDATE_EVENT = bytes((QuicEvent.KEY_UPDATE, 1))
MIB = 1 << 20


def errno_of(fn, *args) -> int:
    with pytest.raises(OSError) as err:
        fn(*args)
    return err.value.errno


def try_key_update(sock: QuicSocket) -> bool:
    """One KEY_UPDATE attempt: False while the last update is pending (EINVAL)."""
    try:
        sock.setsockopt(L.QUIC_SOCKOPT_KEY_UPDATE)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return False
    return True


@pytest.mark.parametrize("backend", BACKENDS)
def test_key_update_option_and_event(backend, pki) -> None:
    """EPIPE before the connection is established; an update, then EINVAL for a second
    one before the first is answered; data crosses; the peer is told the new phase (1)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    with listener, client_socket(backend, listener.getsockname()) as sock:
        assert errno_of(sock.setsockopt, L.QUIC_SOCKOPT_KEY_UPDATE) == errno.EPIPE
    with connected(backend, pki) as (client, server):
        server.setsockopt(L.QUIC_SOCKOPT_EVENT, KEY_UPDATE_EVENT)
        client.setsockopt(L.QUIC_SOCKOPT_EVENT, KEY_UPDATE_EVENT)
        client.send(b"before", -1, new=True, fin=True)
        server_events: list[bytes] = []
        assert stream_to_fin(server, server_events) == b"before"
        # An answer read after the server's HANDSHAKE_DONE: the client has confirmed the
        # handshake, which an update needs (RFC 9001 §6.1).
        server.send(b"ok", -1, fin=True)
        client_events: list[bytes] = []
        assert stream_to_fin(client, client_events) == b"ok"
        client.setsockopt(L.QUIC_SOCKOPT_KEY_UPDATE)
        assert errno_of(client.setsockopt, L.QUIC_SOCKOPT_KEY_UPDATE) == errno.EINVAL
        client.send(b"after", -1, new=True, fin=True)
        assert stream_to_fin(server, server_events) == b"after"
        assert server_events == [bytes((QuicEvent.KEY_UPDATE, 1))]
        server.send(b"answer", -1, fin=True)
        assert stream_to_fin(client, client_events) == b"answer"
        assert client_events == []  # the initiator is not told


def test_key_updates_during_a_10_mib_transfer(pki) -> None:
    """10 MiB client to server arrive intact across a key update the client starts after
    3 MiB and one the server starts after reading 6 MiB; each side is told of the other's.
    Simulation only: the blocking sends need the wait for credit that the kernel backend
    does not do (tests/sock/test_stream_send.py)."""
    data = random.Random(13).randbytes(10 * MIB)
    with connected("sim", pki) as (client, server):
        for sock in (client, server):
            sock.setsockopt(L.QUIC_SOCKOPT_EVENT, KEY_UPDATE_EVENT)
            sock.settimeout(30)
        server_events: list[bytes] = []
        server_updated: list[int] = []
        failures: list[BaseException] = []

        def maybe_update(read: int) -> None:
            if read >= 6 * MIB and not server_updated and try_key_update(server):
                server_updated.append(read)

        def serve() -> None:
            try:
                got = stream_to_fin(server, server_events, maybe_update)
                server.send(hashlib.sha256(got).digest(), -1, fin=True)
            except BaseException as exc:  # surfaced below
                failures.append(exc)

        reader = threading.Thread(target=serve, daemon=True)
        reader.start()
        client_updated = []
        for offset in range(0, len(data), MIB // 4):
            if offset >= 3 * MIB and not client_updated and try_key_update(client):
                client_updated.append(offset)
            last = offset + MIB // 4 >= len(data)
            assert client.send(data[offset:offset + MIB // 4], -1, new=offset == 0, fin=last) == MIB // 4
        client_events: list[bytes] = []
        digest = stream_to_fin(client, client_events)
        reader.join(30)
        assert not failures, failures
        assert digest == hashlib.sha256(data).digest()
        assert client_updated and server_updated and server_updated[0] < len(data)
        assert server_events == [bytes((QuicEvent.KEY_UPDATE, 1))]  # the client's update
        assert client_events == [bytes((QuicEvent.KEY_UPDATE, 0))]  # the server's, back to 0
