"""QuicSocket: one socket API over the kernel's IPPROTO_QUIC or the UDP simulation."""
from __future__ import annotations

import logging
import socket
from contextlib import AbstractContextManager

from ..kernel_numbers import MSG_QUIC_STREAM_FIN, MSG_QUIC_STREAM_NEW, MSG_QUIC_STREAM_UNI
from .base import Address, QuicSocketBackend, RecvItem

log = logging.getLogger(__name__)

BACKENDS = ("auto", "kernel", "sim")


def _make_backend(family: int, backend: str) -> tuple[QuicSocketBackend, str]:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    if backend in ("auto", "kernel"):
        from .kernel import KernelQuicSocket, kernel_quic_available

        if kernel_quic_available():
            return KernelQuicSocket(family), "kernel"
        if backend == "kernel":
            raise OSError("IPPROTO_QUIC is not available in this kernel (load the quic module)")
    from .sim.simsocket import SimQuicSocket

    return SimQuicSocket(family), "sim"


class QuicSocket:
    """`QuicSocket(AF_INET, backend="auto")`: the kernel when socket(AF_INET, SOCK_DGRAM,
    IPPROTO_QUIC) works, the simulation otherwise; `.backend_name` says which."""

    def __init__(self, family: int = socket.AF_INET, backend: str = "auto", *,
                 _wrap: QuicSocketBackend | None = None, _name: str = "") -> None:
        self.family = family
        self.backend: QuicSocketBackend
        if _wrap is not None:
            self.backend, self.backend_name = _wrap, _name
        else:
            self.backend, self.backend_name = _make_backend(family, backend)
            if backend == "auto":
                log.info("QUIC socket backend: %s", self.backend_name)

    def __enter__(self) -> QuicSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<QuicSocket backend={self.backend_name}>"

    def accept(self) -> tuple[QuicSocket, Address | None]:
        """The next connection and its peer's address. accept() does not fail because the
        peer has closed the connection already (the kernel hands such connections out,
        spec §9; their handshake then fails): getpeername() on it raises ENOTCONN, so the
        address is the one the backend learnt at accept (`accepted_peer`), or None when
        there is none."""
        child = self.backend.accept()
        peer: Address | None
        try:
            peer = child.getpeername()
        except OSError:
            peer = child.accepted_peer
        return QuicSocket(self.family, _wrap=child, _name=self.backend_name), peer

    def send(self, data: bytes, stream_id: int = -1, flags: int = 0, *, fin: bool = False,
             new: bool = False, uni: bool = False) -> int:
        """libquic's quic_sendmsg(): data on a stream. -1 is the stream last opened (by
        us, or a bidirectional one by the peer) until its FIN or reset; with none, `new`
        opens the next one (without it: EINVAL), as the kernel resolves it. A send the
        peer's flow control blocks waits for credit within the socket's timeout, as the
        kernel's blocking sendmsg does (socket.c quic_sendmsg, quic_wait_for_stream_send),
        on both backends; what was accepted when the wait ends is returned, ENOSPC if
        nothing. MSG_DONTWAIT (or timeout 0) answers at once."""
        sflags = (MSG_QUIC_STREAM_FIN if fin else 0) | (MSG_QUIC_STREAM_NEW if new else 0)
        sflags |= MSG_QUIC_STREAM_UNI if uni else 0
        return self.backend.send_stream(data, stream_id, sflags, flags)

    def recv(self, bufsize: int = 65536, flags: int = 0) -> tuple[bytes, int, bool]:
        """libquic's quic_recvmsg(): (data, stream_id, fin) of the next stream data."""
        while True:
            item = self.backend.recv_item(bufsize, flags)
            if item.kind == "STREAM":
                stream_id = -1 if item.stream_id is None else item.stream_id
                return item.data, stream_id, bool(item.stream_flags & MSG_QUIC_STREAM_FIN)

    # -- the rest of the contract, as the backend does it (quichsd/sock/base.py) ---------

    def bind(self, address: Address) -> None:
        self.backend.bind(address)

    def listen(self, backlog: int = 128) -> None:
        self.backend.listen(backlog)

    def connect(self, address: Address) -> None:
        self.backend.connect(address)

    def shutdown(self, how: int = socket.SHUT_RDWR) -> None:
        self.backend.shutdown(how)

    def close(self) -> None:
        self.backend.close()

    def fileno(self) -> int | None:
        return self.backend.fileno()

    def setsockopt(self, optname: int, value: bytes | None = None) -> None:
        self.backend.setsockopt(optname, value)

    def getsockopt(self, optname: int, buflen_or_input: int | bytes) -> bytes:
        return self.backend.getsockopt(optname, buflen_or_input)

    def send_handshake(self, level: int, data: bytes, flags: int = 0) -> int:
        return self.backend.send_handshake(level, data, flags)

    def recv_item(self, bufsize: int, flags: int = 0) -> RecvItem:
        return self.backend.recv_item(bufsize, flags)

    def send_stream(self, data: bytes, stream_id: int = -1, stream_flags: int = 0, flags: int = 0) -> int:
        return self.backend.send_stream(data, stream_id, stream_flags, flags)

    def settimeout(self, timeout: float | None) -> None:
        self.backend.settimeout(timeout)

    def gettimeout(self) -> float | None:
        return self.backend.gettimeout()

    def setblocking(self, flag: bool) -> None:
        self.backend.setblocking(flag)

    def getsockname(self) -> Address:
        return self.backend.getsockname()

    def getpeername(self) -> Address:
        return self.backend.getpeername()

    def batch(self) -> AbstractContextManager[None]:
        return self.backend.batch()

    @property
    def batches_output(self) -> bool:
        return self.backend.batches_output

    @property
    def accepted_peer(self) -> Address | None:
        return self.backend.accepted_peer

    @property
    def sock(self) -> socket.socket | None:
        return self.backend.sock


# What the handshake calls, the asyncio forms and the daemon take as a socket.
SocketLike = QuicSocket | QuicSocketBackend | socket.socket | int


def as_backend(sock: SocketLike) -> QuicSocketBackend:
    """The backend to drive for `sock`: a QuicSocket's own, a backend as it is, and for a
    socket.socket or a bare fd of an IPPROTO_QUIC socket a KernelQuicSocket over a dup of
    its fd (closing that leaves the caller's fd open). TypeError for anything else."""
    if isinstance(sock, QuicSocket):
        return sock.backend
    if isinstance(sock, QuicSocketBackend):
        return sock
    if isinstance(sock, (socket.socket, int)):
        from .kernel import KernelQuicSocket

        return KernelQuicSocket.from_fd(sock.fileno() if isinstance(sock, socket.socket) else sock)
    raise TypeError(f"not a QUIC socket: {sock!r}")
