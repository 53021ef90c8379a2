"""KernelQuicSocket: the socket facade on a real IPPROTO_QUIC socket.

bind/listen/connect/shutdown/close and the address calls go through Python's
socket.socket; everything that carries SOL_QUIC data (options, handshake and stream
sendmsg, recvmsg of any item) goes through the C helpers of csrc/quic_sock.c, because
CPython's getsockopt cannot pass input and caps buffers at 1024 bytes (spec §7).

Blocking: every send/recv is issued with MSG_DONTWAIT and, when the kernel says EAGAIN,
waits in poll() for the socket's timeout. A stream send that stream flow control holds
back (which poll() does not report) finishes in a blocking sendmsg bounded by
SO_SNDTIMEO, so the kernel itself waits for the credit. The fd's O_NONBLOCK is never changed, so an fd
the caller (or the kernel's handshake upcall) owns keeps its mode; a timed accept() on a
blocking listener is the one place it is set for the duration of one accept4 call.
"""
from __future__ import annotations

import errno
import functools
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import abi
from ..abi import ffi, lib
from ..kernel_numbers import IPPROTO_QUIC, MSG_DONTWAIT, MSG_QUIC_STREAM_NEW
from ..quic.close_text import describe_peer_close
from .base import Address, QuicSocketBackend, RecvItem, RecvKind

__all__ = ["KernelQuicSocket", "kernel_quic_available"]

_KINDS: dict[int, RecvKind] = {
    lib.QUICHSD_RECV_HANDSHAKE: RecvKind.HANDSHAKE,
    lib.QUICHSD_RECV_STREAM: RecvKind.STREAM,
    lib.QUICHSD_RECV_EVENT: RecvKind.EVENT,
    lib.QUICHSD_RECV_DATAGRAM: RecvKind.DATAGRAM,
}
_TIMEVAL = struct.Struct("@ll")  # struct timeval (SO_SNDTIMEO)
_WOULD_BLOCK = frozenset({errno.EAGAIN, errno.EWOULDBLOCK})
_POLL_TROUBLE = select.POLLHUP | select.POLLERR
_CLOSED = frozenset({errno.ENOTCONN, errno.EPIPE})  # a call on a closed connection (spec §1.5)
_CLOSE_INFO_SIZE = ffi.sizeof("struct quic_connection_close")


# Receive buffers are not zeroed: only the bytes the kernel wrote are read back.
_UNCLEARED = ffi.new_allocator(should_clear_after_alloc=False)
_SCRATCH_KEEP = 65536  # larger buffers are made per call, not kept


class _RecvScratch(threading.local):
    """recv_item's C outputs and buffer, made once per thread instead of six allocations
    (and a zeroed 64 KiB) per call. The C helper resets the outputs on every call."""

    def __init__(self) -> None:
        self.kind = ffi.new("int *")
        self.level = ffi.new("uint8_t *")
        self.stream_id = ffi.new("int64_t *")
        self.stream_flags = ffi.new("uint32_t *")
        self.msg_flags = ffi.new("int *")
        self._buf: Any = None
        self._size = 0

    def buffer(self, size: int) -> Any:
        if size > _SCRATCH_KEEP:
            return _UNCLEARED("char[]", size)
        if size > self._size:
            self._buf, self._size = _UNCLEARED("char[]", size), size
        return self._buf


_SCRATCH = _RecvScratch()


def _error(code: int, what: str | None = None) -> OSError:
    """OSError for `code`; Python picks the subclass (BlockingIOError, ...)."""
    message = os.strerror(code)
    return OSError(code, f"{what}: {message}" if what else message)


@functools.cache
def kernel_quic_available() -> bool:
    """True when this kernel makes IPPROTO_QUIC sockets (probed once per process)."""
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, IPPROTO_QUIC)
    except OSError:
        return False
    probe.close()
    return True


def _wrap_fd(fd: int) -> socket.socket:
    """socket.socket over `fd`, leaving the file's O_NONBLOCK as it was (a process-wide
    socket.setdefaulttimeout() would otherwise switch it on; without one, the constructor
    does not touch it, and two fcntl calls are saved)."""
    if socket.getdefaulttimeout() is None:
        return socket.socket(fileno=fd)
    was_blocking = os.get_blocking(fd)
    sock = socket.socket(fileno=fd)
    if os.get_blocking(fd) != was_blocking:
        os.set_blocking(fd, was_blocking)
    return sock


class KernelQuicSocket(QuicSocketBackend):
    """An IPPROTO_QUIC socket (spec kernel-quic-abi §1).

    KernelQuicSocket(family) makes a new socket; KernelQuicSocket(sock=s) adopts a
    socket.socket (closing this object closes it); KernelQuicSocket.from_fd(fd) works on
    a duplicate of a bare fd, e.g. one the kernel handed over, leaving `fd` to its owner.
    The helpers do not check the protocol, so any datagram socket can stand in for tests.
    """

    def __init__(
        self,
        family: int = socket.AF_INET,
        type: int = socket.SOCK_DGRAM,
        *,
        sock: socket.socket | None = None,
    ) -> None:
        if sock is None:
            sock = socket.socket(family, type, IPPROTO_QUIC)
        self._sock = sock
        self._timeout: float | None = sock.gettimeout()
        # An accepted socket: the peer's address as the accept() call reported it.
        self.accepted_peer: Address | None = None
        self._shut_down = False  # shutdown() was called here: a close is ours, not the peer's

    @classmethod
    def from_fd(cls, fd: int, *, dup: bool = True) -> KernelQuicSocket:
        """Wrap a bare fd. dup=True (default) works on os.dup(fd): closing this object
        leaves the caller's fd open. dup=False takes ownership of `fd` itself."""
        own = os.dup(fd) if dup else fd
        try:
            sock = _wrap_fd(own)
        except BaseException:
            if dup:
                os.close(own)
            raise
        wrapped = cls(sock=sock)
        wrapped._timeout = None if os.get_blocking(own) else 0.0
        return wrapped

    # -- properties ----------------------------------------------------------------------

    @property
    def family(self) -> int:
        return int(self._sock.family)

    @property
    def sock(self) -> socket.socket:
        """The underlying socket.socket (for poll/selectors, SOL_SOCKET options)."""
        return self._sock

    def __repr__(self) -> str:
        return f"<KernelQuicSocket fd={self.fileno()} family={self._sock.family!r}>"

    # -- lifecycle -----------------------------------------------------------------------

    def bind(self, address: Address) -> None:
        self._sock.bind(address)

    def listen(self, backlog: int = 128) -> None:
        self._sock.listen(backlog)

    def connect(self, address: Address) -> None:
        self._sock.connect(address)

    def accept(self) -> KernelQuicSocket:
        """The next connection. It may be one the peer has closed already (spec §9), whose
        getpeername() fails with ENOTCONN; `accepted_peer` then still has the address the
        accept() call reported (the kernel reads it whatever the state), or None."""
        fd = self._fd()
        nonblocking = self._timeout == 0
        deadline = self._deadline()
        while True:
            conn, peer = self._accept_once(fd, wait=self._timeout is None)
            if conn >= 0:
                break
            if -conn == errno.EINTR:
                continue
            if -conn not in _WOULD_BLOCK or nonblocking:
                raise _error(-conn, "accept")
            self._wait(fd, select.POLLIN, deadline)
        try:
            child = KernelQuicSocket(sock=_wrap_fd(conn))
        except BaseException:
            os.close(conn)
            raise
        child._timeout = self._timeout
        child.accepted_peer = peer
        return child

    def _accept_once(self, fd: int, *, wait: bool) -> tuple[int, Address | None]:
        """One accept4: (fd or -errno, the peer's address or None). A blocking fd with no
        timeout may block in the kernel; with a timeout, O_NONBLOCK is set just for this
        call (there is no MSG_DONTWAIT for accept) and then put back."""
        if wait or not os.get_blocking(fd):
            return self._accept4(fd)
        os.set_blocking(fd, False)
        try:
            return self._accept4(fd)
        finally:
            os.set_blocking(fd, True)

    def _accept4(self, fd: int) -> tuple[int, Address | None]:
        # Python's own accept reads the address the accept4 call returns. It makes exactly
        # one accept4 call (CLOEXEC, EINTR retried) when its socket object has no timeout
        # of its own, the usual case (no socket.setdefaulttimeout()); otherwise it would
        # poll on that timeout, so the address-less C helper does the call instead.
        if self._sock.gettimeout() is not None:
            return int(lib.quic_accept(fd)), None
        try:
            # CPython's accept4 wrapper: (fd, address); typeshed does not declare it.
            conn, peer = self._sock._accept()  # type: ignore[attr-defined]
        except OSError as exc:
            return -(exc.errno or errno.EIO), None
        return conn, peer or None

    def shutdown(self, how: int = socket.SHUT_RDWR) -> None:
        self._shut_down = True
        self._sock.shutdown(how)

    def close(self) -> None:
        self._sock.close()

    def fileno(self) -> int | None:
        fd = self._sock.fileno()
        return None if fd < 0 else fd

    def _fd(self) -> int:
        fd = self._sock.fileno()
        if fd < 0:
            raise _error(errno.EBADF)
        return fd

    # -- SOL_QUIC options ----------------------------------------------------------------

    def setsockopt(self, optname: int, value: bytes | None = None) -> None:
        fd = self._fd()
        if value:
            data = ffi.from_buffer(value)
            rc = lib.quic_setsockopt(fd, optname, data, len(data))
        else:
            rc = lib.quic_setsockopt(fd, optname, ffi.NULL, 0)
        if rc < 0:
            raise _error(-rc, f"setsockopt(SOL_QUIC, {optname})")

    def getsockopt(self, optname: int, buflen_or_input: int | bytes) -> bytes:
        fd = self._fd()
        buf, length = _inout_buffer(buflen_or_input)
        rc = lib.quic_getsockopt_inout(fd, optname, buf, length)
        if rc < 0:
            raise _error(-rc, f"getsockopt(SOL_QUIC, {optname})")
        value: bytes = ffi.buffer(buf, length[0])[:]
        return value

    # -- data ----------------------------------------------------------------------------

    def send_handshake(self, level: int, data: bytes, flags: int = 0) -> int:
        fd = self._fd()
        payload = ffi.from_buffer(data)
        return self._io(
            lambda f: lib.quic_sendmsg_handshake(fd, payload, len(payload), level, f),
            select.POLLOUT, flags, "sendmsg",
        )

    def send_stream(
        self, data: bytes, stream_id: int = -1, stream_flags: int = 0, flags: int = 0
    ) -> int:
        fd = self._fd()
        payload = ffi.from_buffer(data)
        deadline = self._deadline()
        may_wait = not flags & MSG_DONTWAIT and self._timeout != 0
        try:
            sent = self._io(
                lambda f: lib.quic_sendmsg_stream(
                    fd, payload, len(payload), stream_id, stream_flags, f
                ),
                select.POLLOUT, flags, "sendmsg",
            )
        except OSError as exc:
            if exc.errno != errno.ENOSPC or not may_wait:
                raise
            sent = 0
        if sent == len(payload) or not may_wait:
            return sent
        # Held back by stream flow control, which poll() does not report (its POLLOUT
        # follows connection credit only): the rest goes through the kernel's own
        # blocking sendmsg, whose quic_wait_for_stream_send sleeps until MAX_STREAM_DATA.
        rest_flags = stream_flags & ~MSG_QUIC_STREAM_NEW if sent else stream_flags
        return sent + self._send_stream_waiting(
            fd, payload, sent, stream_id, rest_flags, flags, deadline
        )

    def _send_stream_waiting(
        self, fd: int, payload: Any, start: int, stream_id: int, stream_flags: int,
        flags: int, deadline: float | None,
    ) -> int:
        """payload[start:] by a blocking sendmsg bounded by SO_SNDTIMEO (set to what is
        left of the socket's timeout, then restored): socket.c quic_sendmsg loops over
        the message, waiting for credit, and returns what went in when the wait ends.
        Returns the bytes accepted; ENOSPC (or EAGAIN) when none were, as the kernel."""
        if not os.get_blocking(fd):
            if start:
                return 0
            raise _error(errno.ENOSPC, "sendmsg")  # the fd's O_NONBLOCK forbids the wait
        saved = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _TIMEVAL.size)
        try:
            while True:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    if start:
                        return 0
                    raise _error(errno.ENOSPC, "sendmsg")
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(remaining))
                result = int(lib.quic_sendmsg_stream(
                    fd, payload + start, len(payload) - start, stream_id, stream_flags,
                    flags & ~MSG_DONTWAIT,
                ))
                if result >= 0:
                    return result
                if -result == errno.EINTR:
                    continue  # PEP 475: nothing went in; wait for what is left of the timeout
                if start:
                    return 0  # the wait ended after some bytes went in: the partial count
                raise self._io_error(-result, "sendmsg")
        finally:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, saved)

    def recv_item(self, bufsize: int, flags: int = 0) -> RecvItem:
        if bufsize < 0:
            raise ValueError("negative buffer size in recv_item")
        fd = self._fd()
        scratch = _SCRATCH
        buf = scratch.buffer(bufsize or 1)
        kind, level, stream_id = scratch.kind, scratch.level, scratch.stream_id
        stream_flags, msg_flags = scratch.stream_flags, scratch.msg_flags
        got = self._io(
            lambda f: lib.quic_recvmsg_any(
                fd, buf, bufsize, f, kind, level, stream_id, stream_flags, msg_flags
            ),
            select.POLLIN, flags, "recvmsg",
        )
        what = _KINDS[kind[0]]
        return RecvItem(
            kind=what,
            data=ffi.buffer(buf, got)[:],
            level=int(level[0]) if what is RecvKind.HANDSHAKE else None,
            stream_id=int(stream_id[0]) if what is RecvKind.STREAM else None,
            stream_flags=int(stream_flags[0]),
            msg_flags=int(msg_flags[0]),
        )

    def _io(self, attempt: Callable[[int], int], events: int, flags: int, what: str) -> int:
        """Run `attempt(flags | MSG_DONTWAIT)` (a helper returning n or -errno) until it
        succeeds, waiting in poll() on EAGAIN within the socket's timeout."""
        nonblocking = bool(flags & MSG_DONTWAIT) or self._timeout == 0
        deadline = self._deadline()
        fd = self._fd()
        troubled = False
        while True:
            result = int(attempt(flags | MSG_DONTWAIT))
            if result >= 0:
                return result
            code = -result
            if code == errno.EINTR:
                continue  # PEP 475; a signal handler that raises has run by now
            if code not in _WOULD_BLOCK or nonblocking:
                raise self._io_error(code, what)
            if troubled:
                # poll said hang-up/error but the call still would block: report it
                # rather than spin (a QUIC socket answers ENOTCONN/EPIPE itself).
                raise self._io_error(errno.ENOTCONN, what)
            revents = self._wait(fd, events, deadline)
            troubled = bool(revents & _POLL_TROUBLE) and not revents & events

    def _io_error(self, code: int, what: str) -> OSError:
        """The error of a send/recv; on a connection the peer closed (ENOTCONN, EPIPE) its
        message names the peer's close as the simulation's does (quic/close_text.py)."""
        if code in _CLOSED and not self._shut_down:
            peer = self._peer_close_text()
            if peer is not None:
                what = f"{what}, {peer}"
        return _error(code, what)

    def _peer_close_text(self) -> str | None:
        """QUIC_SOCKOPT_CONNECTION_CLOSE in words (getsockopt works in any state, even
        CLOSED; a received CONNECTION_CLOSE overwrites what was there, spec §1.4). None
        for an all-zero close: an idle timeout, or a peer's close() with no code or phrase,
        which the kernel does not tell apart. The kernel keeps no bit saying whether the
        peer's close was an application's, so the code is read in the transport space."""
        try:
            info = abi.unpack_connection_close(self.getsockopt(lib.QUIC_SOCKOPT_CONNECTION_CLOSE,
                                                               _CLOSE_INFO_SIZE))
        except OSError:  # closed here (EBADF), or the option refused
            return None
        if not info.errcode and not info.phrase:
            return None
        return describe_peer_close(info.errcode, info.phrase, app=None)

    def _deadline(self) -> float | None:
        return None if self._timeout is None else time.monotonic() + self._timeout

    @staticmethod
    def _wait(fd: int, events: int, deadline: float | None) -> int:
        """poll() until `fd` has `events`, the deadline passes (TimeoutError), or
        trouble; returns the revents."""
        poller = select.poll()
        poller.register(fd, events)
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise TimeoutError("timed out")
        ready = poller.poll(None if remaining is None else remaining * 1000.0)
        if not ready:
            raise TimeoutError("timed out")
        revents = ready[0][1]
        if revents & select.POLLNVAL:
            raise _error(errno.EBADF)
        return revents

    # -- blocking and names --------------------------------------------------------------

    def settimeout(self, timeout: float | None) -> None:
        if timeout is not None:
            timeout = float(timeout)
            if timeout < 0:
                raise ValueError("Timeout value out of range")
        self._timeout = timeout

    def gettimeout(self) -> float | None:
        return self._timeout

    def getsockname(self) -> Address:
        name: Address = self._sock.getsockname()
        return name

    def getpeername(self) -> Address:
        name: Address = self._sock.getpeername()
        return name


def _timeval(seconds: float | None) -> bytes:
    """A struct timeval for SO_SNDTIMEO; None (and 0) mean no limit, so a positive
    timeout too small for microseconds becomes 1 us."""
    if not seconds:
        return _TIMEVAL.pack(0, 0)
    whole = int(seconds)
    micros = max(int((seconds - whole) * 1e6), 0 if whole else 1)
    return _TIMEVAL.pack(whole, micros)


def _inout_buffer(buflen_or_input: int | bytes) -> tuple[Any, Any]:
    """A zeroed C buffer and its in/out length for getsockopt: `n` bytes, or a copy of
    the input bytes the option reads."""
    if isinstance(buflen_or_input, int):
        if buflen_or_input < 0:
            raise ValueError("negative getsockopt buffer length")
        size, data = buflen_or_input, b""
    else:
        data = bytes(buflen_or_input)
        size = len(data)
    buf = ffi.new("char[]", size or 1)
    ffi.memmove(buf, data, len(data))
    return buf, ffi.new("unsigned int *", size)
