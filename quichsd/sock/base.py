"""The socket facade both backends implement: the kernel's IPPROTO_QUIC socket
(sock/kernel.py) and the UDP simulation (sock/sim/).

The interface is the kernel ABI (spec kernel-quic-abi §1, §2.2, §2.3), not an
abstraction over it: options are SOL_QUIC option numbers whose values are the kernel's
struct bytes (pack/unpack them with quichsd.abi), levels are the kernel's level numbers,
one recv_item() is one recvmsg(), and every failure is an OSError carrying the errno the
kernel gives for it. That is what lets handshake.py run on either backend unchanged.

Blocking follows Python's socket model: settimeout(None) blocks, settimeout(0) (or
MSG_DONTWAIT in flags) raises BlockingIOError instead of waiting, settimeout(t) raises
TimeoutError after t seconds.
"""
from __future__ import annotations

import abc
import socket
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from ..kernel_numbers import MSG_EOR, MSG_QUIC_STREAM_FIN

__all__ = [
    "Address",
    "RecvKind",
    "RecvItem",
    "QuicSocketBackend",
]


# A socket address as Python's socket module spells it: (host, port[, flow, scope]).
Address = tuple[Any, ...]

# batch() on a backend that sends at each call as it comes (reusable: it holds no state).
_NO_BATCH: AbstractContextManager[None] = nullcontext()


class RecvKind(StrEnum):
    """What one recvmsg returned (spec §1.5: exactly one of these per call)."""

    HANDSHAKE = "HANDSHAKE"  # CRYPTO stream bytes; `level` says which (1 or 2)
    STREAM = "STREAM"  # stream bytes; `stream_id`, `stream_flags` (FIN)
    EVENT = "EVENT"  # MSG_QUIC_NOTIFICATION: data[0] = event type, then its payload
    DATAGRAM = "DATAGRAM"  # an unreliable DATAGRAM frame's payload


@dataclass(frozen=True, slots=True)
class RecvItem:
    """One received item. `level` is set for HANDSHAKE only; `stream_id` for STREAM
    only, and is -1 when the kernel's stream cmsg did not arrive (MSG_CTRUNC in
    msg_flags). A partial read (buffer too small) lacks MSG_EOR for the first three
    kinds; the rest comes with the next call."""

    kind: RecvKind
    data: bytes
    level: int | None = None
    stream_id: int | None = None
    stream_flags: int = 0
    msg_flags: int = 0

    def __post_init__(self) -> None:
        given: object = self.kind  # the kind's name (a str) is accepted too
        if not isinstance(given, RecvKind):
            object.__setattr__(self, "kind", RecvKind(str(given)))

    @property
    def eor(self) -> bool:
        """The item was read to its end (MSG_EOR)."""
        return bool(self.msg_flags & MSG_EOR)

    @property
    def fin(self) -> bool:
        """Stream data ending the stream (the FIN flag, from cmsg or msg_flags)."""
        return bool(self.stream_flags & MSG_QUIC_STREAM_FIN)


class QuicSocketBackend(abc.ABC):
    """One QUIC socket: unbound, listening, or a connection (ESTABLISHING/ESTABLISHED).

    Errors are OSError with the kernel's errno (BlockingIOError for EAGAIN,
    TimeoutError when the socket's timeout expires).
    """

    # True when batch() merges the transmit attempts of the calls inside it (the
    # simulation); False when it is a no-op and each call transmits as it comes (the
    # kernel). The handshake sends a server's ServerHello ahead of its flight only then.
    batches_output: ClassVar[bool] = False

    # An accepted connection: the peer's address as accept() learnt it, kept when the
    # connection has closed since (getpeername() then raises ENOTCONN, spec §9); None when
    # not known.
    accepted_peer: Address | None = None

    @property
    def sock(self) -> socket.socket | None:
        """The kernel socket underneath (for poll/selectors, SOL_SOCKET options such as
        SO_PROTOCOL), None when there is none (the simulation)."""
        return None

    def batch(self) -> AbstractContextManager[None]:
        """`with backend.batch():` the calls inside form one batch: a backend that can
        (the simulation) sends what they trigger once, with the batch's last send or at
        its end, instead of after each call; the connection's state changes at once
        either way. Batches nest. A no-op on the kernel, which transmits per call."""
        return _NO_BATCH

    # -- lifecycle (socket(2) semantics) ------------------------------------------------

    @abc.abstractmethod
    def bind(self, address: Address) -> None: ...

    @abc.abstractmethod
    def listen(self, backlog: int = 128) -> None:
        """backlog 0 on a listening socket stops listening (spec §1.1)."""

    @abc.abstractmethod
    def accept(self) -> QuicSocketBackend:
        """The next connection, in ESTABLISHING with the ClientHello already queued."""

    @abc.abstractmethod
    def connect(self, address: Address) -> None:
        """Installs the Initial keys and enters ESTABLISHING; sends nothing yet."""

    @abc.abstractmethod
    def shutdown(self, how: int = socket.SHUT_RDWR) -> None: ...

    @abc.abstractmethod
    def close(self) -> None:
        """Idempotent. ESTABLISHING sends CONNECTION_CLOSE 0x0c at Initial (§1.1)."""

    @abc.abstractmethod
    def fileno(self) -> int | None:
        """The kernel fd, or None when there is none (simulation, or closed)."""

    # -- SOL_QUIC options: values are the kernel's struct bytes -------------------------

    @abc.abstractmethod
    def setsockopt(self, optname: int, value: bytes | None = None) -> None:
        """setsockopt(SOL_QUIC, optname, value); None or b"" passes NULL/0."""

    @abc.abstractmethod
    def getsockopt(self, optname: int, buflen_or_input: int | bytes) -> bytes:
        """getsockopt(SOL_QUIC, optname). An int is the buffer size (zero filled); bytes
        are the buffer's initial content, for options that read input (TRANSPORT_PARAM
        `remote`, EVENT `type`, STREAM_OPEN, CONNECTION_ID `dest`). Returns the bytes
        the kernel reported (optlen)."""

    # -- data -----------------------------------------------------------------------------

    @abc.abstractmethod
    def send_handshake(self, level: int, data: bytes, flags: int = 0) -> int:
        """Append `data` to `level`'s CRYPTO stream (one QUIC_HANDSHAKE_INFO cmsg).
        MSG_MORE holds the frames until a send without it (spec §2.3)."""

    @abc.abstractmethod
    def recv_item(self, bufsize: int, flags: int = 0) -> RecvItem:
        """One recvmsg: handshake bytes, stream bytes, an event or a datagram."""

    @abc.abstractmethod
    def send_stream(
        self, data: bytes, stream_id: int = -1, stream_flags: int = 0, flags: int = 0
    ) -> int:
        """sendmsg with one QUIC_STREAM_INFO cmsg; stream_id -1 = the active stream
        (last opened, until its FIN or reset), or with none and MSG_QUIC_STREAM_NEW the
        next one (EINVAL without NEW). Blocked by flow control, a blocking send waits for
        credit within the timeout (socket.c quic_sendmsg). Returns the bytes accepted."""

    # -- blocking and names --------------------------------------------------------------

    @abc.abstractmethod
    def settimeout(self, timeout: float | None) -> None: ...

    @abc.abstractmethod
    def gettimeout(self) -> float | None: ...

    def setblocking(self, flag: bool) -> None:
        self.settimeout(None if flag else 0.0)

    @abc.abstractmethod
    def getsockname(self) -> Address: ...

    @abc.abstractmethod
    def getpeername(self) -> Address: ...

    def __enter__(self) -> QuicSocketBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
