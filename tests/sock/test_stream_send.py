"""Stream sendmsg semantics as the kernel module has them (net/quic/socket.c quic_msghdr_parse,
quic_sock_send_stream, quic_wait_for_stream_send; stream.c quic_stream_get; spec
kernel-quic-abi §1.5), run against the simulation here and against a real kernel wherever
IPPROTO_QUIC exists (the QEMU tier)."""
from __future__ import annotations

import contextlib
import errno
import socket
import threading
import time
from typing import Any

import pytest

from quichsd import abi, quic_handshake
from quichsd.sock.kernel import kernel_quic_available
from tests.sock.pairs import connected, read_streams
from tests.sock.test_handshake import client_config, server_config
from tests.sockets import BACKENDS, NO_QUIC, client_socket

L = abi.lib
MSG_DONTWAIT = socket.MSG_DONTWAIT
CREDIT = 4096  # the server's initial credit on streams the client opens
SMALL_READ = 1000  # under one STREAM frame


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
    the socket's timeout and returns once all its bytes are in: socket.c quic_sendmsg
    loops over the whole message, sleeping in quic_wait_for_stream_send whenever the
    stream has no credit. The kernel's side of this is
    test_kernel_blocking_send_waits_out_its_timeout."""
    data = bytes(range(256)) * 256
    with connected("sim", pki, max_stream_data_bidi_remote=CREDIT) as (client, server):
        got: list[dict[int, bytes]] = []
        reader = threading.Thread(target=lambda: got.append(read_streams(server, 1)), daemon=True)
        reader.start()
        assert client.send(data, -1, new=True, fin=True) == len(data)
        reader.join(5)
        assert got == [{0: data}]


@pytest.mark.skipif(not kernel_quic_available(), reason=NO_QUIC)
def test_kernel_blocking_send_waits_out_its_timeout(pki) -> None:
    """On a real kernel the blocking send waits in quic_wait_for_stream_send (the backend
    hands what poll() cannot wait for to a blocking sendmsg bounded by SO_SNDTIMEO) and
    returns the partial count when its timeout ends: with a kernel peer no credit comes,
    even though the reader drains the window in pieces under one STREAM frame (lxin/quic
    03a9c7c on 6.12: in 3 s of MSG_DONTWAIT retries none came either; its
    quic_inq_flow_control builds MAX_STREAM_DATA before raising the limit it carries).
    Before, the partial count came back at once. The lower bound on the time cannot
    fail from load: a wait only gets longer."""
    data = bytes(range(256)) * 256
    with connected("kernel", pki, max_stream_data_bidi_remote=CREDIT) as (client, server):
        got: list[bytes] = []

        def read_in_small_pieces() -> None:
            with contextlib.suppress(TimeoutError):
                while True:
                    got.append(server.recv(SMALL_READ)[0])

        server.settimeout(1)
        reader = threading.Thread(target=read_in_small_pieces, daemon=True)
        reader.start()
        client.settimeout(0.5)
        started = time.monotonic()
        assert client.send(data, -1, new=True, fin=True) == CREDIT
        assert time.monotonic() - started >= 0.45
        reader.join(5)
        assert b"".join(got) == data[:CREDIT]


class _ResumedStream:
    """A server's `after`: on the resumed connection, the client's stream to its FIN."""

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.done = threading.Event()

    def __call__(self, conn: Any, result: Any) -> None:
        if not result.resumed:
            return  # the first connection only brought the ticket
        conn.settimeout(10)
        try:
            self.got.append(read_streams(conn, 1)[0])
        finally:
            self.done.set()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("accepted", [True, False], ids=["0rtt-accepted", "0rtt-refused"])
def test_0rtt_stream_data_beyond_the_credit_does_not_stall(backend, accepted, pki, server_factory) -> None:
    """quic_handshake queues early_stream_data before its ClientHello leaves; what goes
    beyond the remembered credit must not wait (credit comes only after the handshake
    this same thread drives: blocking, it waited out the handshake's timeout), and on a
    kernel socket it must leave the send buffer room for the client's own flights: 4 MiB
    filled it, the ClientHello was never queued and the idle timer ended the handshake
    with EPIPE after 31 s (QEMU, lxin/quic 03a9c7c). The count comes back in
    early_data_sent, the stream stays open, and the bytes that went in arrive, as 0-RTT
    or, refused, resent in 1-RTT."""
    data = bytes(range(256)) * (4 << 12)  # 4 MiB
    stream = _ResumedStream()
    srv = server_factory(backend, server_config(pki, early_data=accepted), after=stream)
    with client_socket(backend, srv.address) as sock:
        first = quic_handshake(sock, client_config(pki, ticket_wait=3))
    with client_socket(backend, srv.address) as sock:
        second = quic_handshake(sock, client_config(pki, session_data=first.session_data, early_data=True,
                                                    early_stream_data=data))
        assert second.resumed and second.early_data_accepted is accepted
        assert 0 < second.early_data_sent < len(data)
        sock.settimeout(5)
        assert sock.send(b"", -1, fin=True) == 0
        assert stream.done.wait(15)
    assert not srv.errors, srv.errors
    assert stream.got == [data[:second.early_data_sent]]
