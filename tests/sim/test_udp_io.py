"""UdpIO (quichsd/sock/sim/udp_io.py) on real loopback sockets: runs of datagrams leave in
one UDP_SEGMENT send and arrive as the same datagrams, cut apart again after a UDP_GRO
read or separate for a socket without it; a socket whose kernel refuses segmentation
falls back to one datagram per send and stops trying."""
from __future__ import annotations

import errno
import os
import select
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from quichsd.sock.sim.udp_io import MAX_SEGMENTS, RECEIVE_BUFFER, UdpIO


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def _read_all(io: UdpIO, expected: int) -> list[list[bytes]]:
    """What each read returned, until `expected` datagrams came (the sender is done)."""
    reads: list[list[bytes]] = []
    got = 0
    while got < expected:
        if not select.select([io.sock], [], [], 5.0)[0]:
            raise AssertionError(f"{got} of {expected} datagrams arrived")
        datagrams, _ = io.receive()
        reads.append(datagrams)
        got += len(datagrams)
    return reads


@pytest.fixture
def pair() -> Iterator[tuple[UdpIO, UdpIO]]:
    tx, rx = _socket(), _socket()
    try:
        yield UdpIO(tx), UdpIO(rx)
    finally:
        tx.close()
        rx.close()


def _datagrams(sizes: list[int]) -> list[bytes]:
    return [os.urandom(n) for n in sizes]


def test_a_run_arrives_as_the_datagrams_sent(pair: tuple[UdpIO, UdpIO]) -> None:
    tx, rx = pair
    sent = _datagrams([1200] * 10 + [700])
    tx.send([(d, rx.sock.getsockname()) for d in sent])
    reads = _read_all(rx, len(sent))
    assert [d for read in reads for d in read] == sent
    if tx.segmenting and rx.coalescing:
        assert len(reads) == 1  # one send, one read: the kernel kept the run whole


def test_runs_break_at_a_new_address_a_larger_datagram_and_after_a_shorter_one(
        pair: tuple[UdpIO, UdpIO]) -> None:
    tx, rx = pair
    other = _socket()
    try:
        to_rx, to_other = rx.sock.getsockname(), other.getsockname()
        sizes = [1200, 1200, 600, 1200, 1200, 1300, 1300]
        sent = _datagrams(sizes)
        plan: list[tuple[bytes, Any]] = [(d, to_rx) for d in sent]
        plan.insert(2, (b"elsewhere", to_other))
        tx.send(plan)
        reads = _read_all(rx, len(sent))
        assert [d for read in reads for d in read] == sent
        assert other.recv(2048) == b"elsewhere"
        if tx.segmenting and rx.coalescing:
            # [1200, 1200] | other | [600] ... a shorter one ends a run: [600] alone, then
            # [1200, 1200], then [1300, 1300] (larger than the run's size: a new run).
            assert [len(read) for read in reads] == [2, 1, 2, 2]
    finally:
        other.close()


def test_no_run_exceeds_the_segment_limit(pair: tuple[UdpIO, UdpIO]) -> None:
    tx, rx = pair
    sent = _datagrams([100] * (MAX_SEGMENTS + 5))
    tx.send([(d, rx.sock.getsockname()) for d in sent])
    reads = _read_all(rx, len(sent))
    assert [d for read in reads for d in read] == sent
    assert max(len(read) for read in reads) <= MAX_SEGMENTS


def test_a_receiver_without_gro_reads_separate_datagrams(pair: tuple[UdpIO, UdpIO]) -> None:
    """As a relay or another stack reads what we send: one datagram per recvfrom."""
    tx, _ = pair
    plain = _socket()
    try:
        sent = _datagrams([1200] * 5)
        tx.send([(d, plain.getsockname()) for d in sent])
        got = []
        while len(got) < len(sent) and select.select([plain], [], [], 5.0)[0]:
            got.append(plain.recv(65536))
        assert got == sent
    finally:
        plain.close()


class _NoSegmentation(socket.socket):
    """A socket on a kernel or device that refuses UDP_SEGMENT (EIO, as a device without
    checksum offload answers); everything else is the real socket."""

    refused = 0

    def sendmsg(self, buffers: Any, ancdata: Any = (), flags: int = 0, address: Any = None) -> int:
        if ancdata:
            self.refused += 1
            raise OSError(errno.EIO, "segmentation refused")
        return super().sendmsg(buffers, ancdata, flags, address)


def test_refused_segmentation_falls_back_for_good() -> None:
    tx = _NoSegmentation(socket.AF_INET, socket.SOCK_DGRAM)
    rx = _socket()
    try:
        tx.bind(("127.0.0.1", 0))
        io, rx_io = UdpIO(tx), UdpIO(rx)
        if not io.segmenting:
            pytest.skip("no UDP_SEGMENT here: nothing to fall back from")
        first, second = _datagrams([1200] * 4), _datagrams([1200] * 4)
        io.send([(d, rx.getsockname()) for d in first])
        io.send([(d, rx.getsockname()) for d in second])
        reads = _read_all(rx_io, 8)
        assert [d for read in reads for d in read] == first + second
        assert not io.segmenting and tx.refused == 1  # asked once, then one at a time
    finally:
        tx.close()
        rx.close()


def test_the_receive_buffer_holds_more_than_the_default(pair: tuple[UdpIO, UdpIO]) -> None:
    """A coalesced run that does not fit is dropped whole: the buffer is raised to
    RECEIVE_BUFFER, as far as net.core.rmem_max lets it (Linux reports twice the size set)."""
    _, rx = pair
    try:
        with open("/proc/sys/net/core/rmem_max") as f:
            rmem_max = int(f.read())
    except OSError:
        pytest.skip("no /proc/sys/net/core/rmem_max: not Linux")
    with open("/proc/sys/net/core/rmem_default") as f:
        default = int(f.read())
    expected = 2 * min(RECEIVE_BUFFER, rmem_max)
    if expected <= 2 * default:
        pytest.skip(f"net.core.rmem_max {rmem_max} leaves no room above the default {default}")
    assert rx.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == expected
