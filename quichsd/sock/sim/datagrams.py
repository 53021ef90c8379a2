"""RFC 9221 DATAGRAM frames each way (MSG_QUIC_DATAGRAM): queued until sent or read."""
from __future__ import annotations

import errno

from .errors import sim_error
from .recovery import MAX_DATAGRAM
from .small_queue import SmallQueue

__all__ = ["DatagramQueues"]


class DatagramQueues:
    __slots__ = ("inbound", "outbound")

    def __init__(self) -> None:
        self.inbound: SmallQueue[bytes] = SmallQueue()
        self.outbound: SmallQueue[bytes] = SmallQueue()

    def queue_send(self, data: bytes, peer_limit: int) -> None:
        """`peer_limit`: the peer's max_datagram_frame_size (0: it takes none)."""
        if not peer_limit:
            raise sim_error(errno.EINVAL, "the peer does not accept DATAGRAM frames")
        if not data or len(data) + 3 > min(peer_limit, MAX_DATAGRAM - 64):
            raise sim_error(errno.EMSGSIZE, "datagram empty or too large")
        self.outbound.append(bytes(data))

    def receive(self) -> bytes | None:
        return self.inbound.popleft() if self.inbound else None

    def read(self, max_len: int) -> tuple[bytes, bool] | None:
        """recvmsg of a datagram (socket.c quic_recvmsg): up to `max_len` bytes and whether
        that ended it (MSG_EOR); a short buffer leaves the rest for the next call."""
        if not self.inbound:
            return None
        data = self.inbound.popleft()
        if len(data) <= max_len:
            return data, True
        self.inbound.insert(0, data[max_len:])
        return data[:max_len], False
