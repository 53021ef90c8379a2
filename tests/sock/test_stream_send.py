"""Stream sendmsg semantics as the kernel module has them (net/quic/socket.c quic_msghdr_parse,
quic_sock_send_stream, quic_wait_for_stream_send; stream.c quic_stream_get; spec
kernel-quic-abi §1.5), run against the simulation here and against a real kernel wherever
IPPROTO_QUIC exists (the QEMU tier)."""
from __future__ import annotations

import errno
import socket
import threading
from typing import Any

import pytest

from quichsd import abi
from tests.sock.pairs import connected, read_streams
from tests.sockets import BACKENDS

L = abi.lib
MSG_DONTWAIT = socket.MSG_DONTWAIT
CREDIT = 4096  # the server's initial credit on streams the client opens


def errno_of(fn: Any, *args: Any, **kw: Any) -> int:
    with pytest.raises(OSError) as err:
        fn(*args, **kw)
    return err.value.errno


@pytest.mark.parametrize("backend", BACKENDS)
def test_stream_minus_one_is_the_active_stream(backend, pki) -> None:
    """Stream -1 is the stream last opened (ours, or the peer's bidirectional one) until
    its FIN; with none, MSG_QUIC_STREAM_NEW opens the next one and a send without it is
    EINVAL, as is NEW on a stream that has carried data."""
    with connected(backend, pki) as (client, server):
        assert errno_of(client.send, b"x") == errno.EINVAL  # nothing open yet
        assert client.send(b"a", -1, new=True) == 1  # opens stream 0
        assert client.send(b"b") == 1
        assert errno_of(client.send, b"c", -1, new=True) == errno.EINVAL
        assert client.send(b"d", -1, fin=True) == 1
        assert errno_of(client.send, b"e") == errno.EINVAL  # the FIN ended the active stream
        assert client.send(b"f", -1, new=True) == 1  # stream 4
        assert client.send(b"g", -1, fin=True) == 1
        assert read_streams(server, 2) == {0: b"abd", 4: b"fg"}
        # The server's active stream is the client's stream it saw opened last.
        assert server.send(b"up", -1, fin=True) == 2
        assert errno_of(server.send, b"z") == errno.EINVAL
        assert server.send(b"own", -1, new=True, fin=True) == 3  # its own first stream, 1
        assert read_streams(client, 2) == {4: b"up", 1: b"own"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_send_blocked_by_flow_control(backend, pki) -> None:
    """What the peer's credit lets in is accepted; with none left a send that may not wait
    (MSG_DONTWAIT) fails with ENOSPC, and so does a blocking one whose timeout ends without
    new credit."""
    data = bytes(range(256)) * 64
    with connected(backend, pki, max_stream_data_bidi_remote=CREDIT) as (client, server):
        assert client.send(data, -1, MSG_DONTWAIT, new=True) == CREDIT
        assert errno_of(client.send, data[CREDIT:], -1, MSG_DONTWAIT) == errno.ENOSPC
        client.settimeout(0.2)
        assert errno_of(client.send, data[CREDIT:]) == errno.ENOSPC
        client.settimeout(5)
        assert client.send(b"", -1, fin=True) == 0
        assert read_streams(server, 1) == {0: data[:CREDIT]}


def test_blocking_send_waits_for_credit(pki) -> None:
    """A blocking send on a flow-control-blocked stream waits for MAX_STREAM_DATA within
    the socket's timeout and returns once all its bytes are in (quic_sendmsg's
    quic_wait_for_stream_send loop). Simulation only: KernelQuicSocket sends with
    MSG_DONTWAIT and waits in poll(), whose POLLOUT follows connection credit only, so on
    a kernel the call returns the partial count (a gap of quichsd/sock/kernel.py)."""
    data = bytes(range(256)) * 256
    with connected("sim", pki, max_stream_data_bidi_remote=CREDIT) as (client, server):
        got: list[dict[int, bytes]] = []
        reader = threading.Thread(target=lambda: got.append(read_streams(server, 1)), daemon=True)
        reader.start()
        assert client.send(data, -1, new=True, fin=True) == len(data)
        reader.join(5)
        assert got == [{0: data}]
