"""An endpoint's UDP socket, several datagrams per system call where Linux allows it.

Sending: a run of datagrams to the same address, all of one size but the last (which may
be shorter), leaves in one sendmsg with UDP_SEGMENT (generic segmentation offload, Linux
4.18): the kernel cuts it into the same datagrams it would have sent one by one, so
nothing on the wire changes (a relay or a peer reads separate datagrams). Receiving: with
UDP_GRO (Linux 5.0) a socket may get such a run back whole from one recvmsg, the segment
size in a control message; it is cut here into the datagrams that were sent.

Where the kernel or the route refuses segmentation (no UDP_SEGMENT, or a device without
checksum offload: EIO; ENOTSUPP, EOPNOTSUPP, EINVAL), the run goes out one datagram at a
time and the socket does not try again. Any other failure of a batch (a full send buffer)
is retried one datagram at a time, so no more is lost than without batching; what still
fails is lost as on UDP (a retransmission follows).
"""
from __future__ import annotations

import contextlib
import errno
import logging
import socket
import struct
import sys
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["UdpIO", "MAX_SEGMENTS", "MAX_BATCH_BYTES"]

Address = tuple[Any, ...]

SOL_UDP = 17
UDP_SEGMENT = 103  # linux/udp.h
UDP_GRO = 104
MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS of older kernels (newer ones allow 128)
MAX_BATCH_BYTES = 65000  # what one UDP datagram of IPv4 or IPv6 can carry, with room
RECV_BUFFER = 65536
# The socket's receive buffer: a coalesced run is dropped whole when it does not fit, and
# the default (208 KiB on Linux, ~3 runs of 64 datagrams) overflowed in bulk transfers.
RECEIVE_BUFFER = 1 << 21
ENOTSUPP = 524  # the kernel's internal "not supported", seen by UDP_SEGMENT callers
_NO_SEGMENTATION = frozenset({errno.EIO, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOPROTOOPT, ENOTSUPP})
_GRO_CMSG_SPACE = socket.CMSG_SPACE(4) if hasattr(socket, "CMSG_SPACE") else 0
_SEGMENT_SIZES: dict[int, list[tuple[int, int, bytes]]] = {}


def _segment_cmsg(size: int) -> list[tuple[int, int, bytes]]:
    cmsg = _SEGMENT_SIZES.get(size)
    if cmsg is None:
        cmsg = _SEGMENT_SIZES[size] = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))]
    return cmsg


class UdpIO:
    """Batched sends and receives on one non-blocking UDP socket."""

    __slots__ = ("sock", "segmenting", "coalescing")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        # Tried at the first run of two datagrams or more; off for good once refused.
        self.segmenting = hasattr(socket, "CMSG_SPACE") and sock.family in (socket.AF_INET, socket.AF_INET6)
        self.coalescing = False
        with contextlib.suppress(OSError):  # the kernel caps it at net.core.rmem_max
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        if self.segmenting:
            try:
                sock.setsockopt(SOL_UDP, UDP_GRO, 1)
                self.coalescing = True
            except OSError:  # before Linux 5.0: one datagram per recvfrom
                pass

    # -- sending ---------------------------------------------------------------------------

    def send(self, datagrams: Iterable[tuple[bytes, Address]]) -> None:
        """Send `datagrams` in order, runs of them per system call where possible."""
        run: list[bytes] = []
        run_addr: Address | None = None
        size = total = 0
        for data, addr in datagrams:
            n = len(data)
            if run and (addr != run_addr or n > size or total + n > MAX_BATCH_BYTES
                        or len(run) >= MAX_SEGMENTS or len(run[-1]) < size):
                self._send_run(run, run_addr)
                run = []
            if not run:
                run_addr, size, total = addr, n, 0
            run.append(data)
            total += n
        if run:
            self._send_run(run, run_addr)

    def send_one(self, data: bytes, addr: Address) -> None:
        try:
            self.sock.sendto(data, addr)
        except OSError as exc:
            log.debug("sendto %s: %s", addr, exc)

    def _send_run(self, run: list[bytes], addr: Address | None) -> None:
        assert addr is not None
        if len(run) == 1 or not self.segmenting:
            for data in run:
                self.send_one(data, addr)
            return
        try:
            self.sock.sendmsg(run, _segment_cmsg(len(run[0])), 0, addr)
            return
        except OSError as exc:
            if exc.errno in _NO_SEGMENTATION:
                self.segmenting = False
                log.debug("UDP_SEGMENT refused (%s): one datagram per send from now on", exc)
            else:
                log.debug("sendmsg of %d datagrams to %s: %s; one at a time", len(run), addr, exc)
        for data in run:
            self.send_one(data, addr)

    # -- receiving -------------------------------------------------------------------------

    def receive(self) -> tuple[list[bytes], Address]:
        """The datagrams of one read and where they came from; BlockingIOError when there
        is nothing to read (other OSErrors as recvfrom raises them)."""
        if not self.coalescing:
            data, addr = self.sock.recvfrom(RECV_BUFFER)
            return [data], addr
        data, ancdata, _, addr = self.sock.recvmsg(RECV_BUFFER, _GRO_CMSG_SPACE)
        for level, kind, value in ancdata:
            if level == SOL_UDP and kind == UDP_GRO and len(value) >= 4:
                size = int.from_bytes(value[:4], sys.byteorder)
                if 0 < size < len(data):
                    return [data[i:i + size] for i in range(0, len(data), size)], addr
        return [data], addr
