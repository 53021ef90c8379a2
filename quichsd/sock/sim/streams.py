"""Streams (RFC 9000 §2-4): ids and their implicit opening, per-stream and connection flow
control in both directions, MAX_DATA / MAX_STREAM_DATA / MAX_STREAMS updates, and the
receive queue the socket reads from.

Sending is limited at write time: `write()` accepts at most the credit the peer gave
(stream and connection), so queued data never needs a flow-control check on the wire.
Received data is queued in arrival order; consecutive in-order data of one stream merges
into one entry (the kernel's recvmsg may merge them too, spec §1.5).
"""
from __future__ import annotations

import errno
from collections import deque
from collections.abc import Iterator, Mapping

from ...quic.errors import QuicError, QuicErrorCode
from ...quic.varint import varint_size
from . import frames as fr
from .crypto_stream import Reassembly
from .errors import sim_error
from .sendbuf import SendBuffer

__all__ = ["Stream", "StreamManager", "is_uni", "is_local"]


def is_uni(stream_id: int) -> bool:
    return bool(stream_id & 0x02)


def is_local(stream_id: int, is_client: bool) -> bool:
    return bool(stream_id & 0x01) != is_client


class Stream:
    __slots__ = ("id", "send", "send_max", "recv", "recv_window", "recv_max", "recv_highest",
                 "recv_final", "recv_consumed", "recv_done", "msd_pending", "reset_pending",
                 "stop_pending", "stop_inflight", "reset_done", "counted")

    def __init__(self, stream_id: int, *, can_send: bool, can_recv: bool, send_max: int,
                 recv_window: int) -> None:
        self.id = stream_id
        self.send = SendBuffer() if can_send else None
        self.send_max = send_max  # the peer's credit, as an absolute offset
        self.recv = Reassembly(error=QuicErrorCode.FLOW_CONTROL_ERROR) if can_recv else None
        self.recv_window = recv_window
        self.recv_max = recv_window  # the credit we advertised
        self.recv_highest = 0
        self.recv_final: int | None = None
        self.recv_consumed = 0
        self.recv_done = not can_recv  # FIN read by the application, or reset
        self.msd_pending = False
        self.reset_pending: int | None = None  # error code of a RESET_STREAM to send
        self.stop_pending: int | None = None  # error code of a STOP_SENDING to send
        self.stop_inflight = False  # our STOP_SENDING is not acknowledged yet
        self.reset_done = False  # our RESET_STREAM was acknowledged
        self.counted = False

    @property
    def send_done(self) -> bool:
        return self.send is None or self.send.all_acked or self.reset_done


_NO_PEER: Mapping[str, int] = {}  # the peer's parameters before they are known (never written)
_EMPTY_QUEUE: tuple[()] = ()  # the receive queue until data arrives (_enqueue makes a deque)


class Received:
    """An entry of the receive queue: in-order data of one stream, read up to `pos`."""

    __slots__ = ("stream_id", "buf", "pos", "fin")

    def __init__(self, stream_id: int, data: bytes, fin: bool) -> None:
        self.stream_id = stream_id
        self.buf = bytearray(data)
        self.pos = 0
        self.fin = fin


class StreamManager:
    """All streams of one connection, and the flow-control state between them.

    Every connection has one from its first Initial, and most half-open ones never carry a
    stream, so it starts small: slots, [bidi, uni] pairs as lists indexed by `uni` (a bool),
    and no receive deque until data arrives (tests/unit/test_sim_halfopen_memory.py)."""

    __slots__ = ("is_client", "streams", "local", "peer", "next_local", "peer_max_streams",
                 "local_max_streams", "peer_opened", "peer_closed", "max_streams_pending",
                 "send_max_data", "send_written", "recv_max_data", "recv_highest_total",
                 "recv_consumed_total", "max_data_pending", "queue", "_rr", "active",
                 "credit_due")

    def __init__(self, is_client: bool, local: Mapping[str, int]) -> None:
        self.is_client = is_client
        self.streams: dict[int, Stream] = {}
        self.local = local
        self.peer: Mapping[str, int] = _NO_PEER
        base = 0 if is_client else 1
        # [bidi, uni] pairs, indexed by `uni`
        self.next_local = [base, base + 2]
        self.peer_max_streams = [0, 0]  # how many streams we may open
        self.local_max_streams = [local["max_streams_bidi"], local["max_streams_uni"]]
        self.peer_opened = [0, 0]  # peer-initiated streams opened so far
        self.peer_closed = [0, 0]
        self.max_streams_pending = [False, False]
        # connection-level flow control
        self.send_max_data = 0
        self.send_written = 0
        self.recv_max_data = local["max_data"]
        self.recv_highest_total = 0
        self.recv_consumed_total = 0
        self.max_data_pending = False
        self.queue: deque[Received] | tuple[()] = _EMPTY_QUEUE
        self._rr = 0  # round-robin start for sending
        # The kernel's active_stream_id: the stream last opened that we may send on (ours,
        # or a peer's bidirectional one), until its FIN is queued or it is reset; what a
        # socket send to stream -1 goes to (net/quic/socket.c quic_msghdr_parse).
        self.active = -1
        # A read raised a credit limit: the socket sends the update now, as the kernel's
        # recvmsg does (inqueue.c quic_inq_flow_control), not with the next packet (a
        # blocked peer sends none).
        self.credit_due = False

    # -- parameters ------------------------------------------------------------------------

    def apply_peer_params(self, peer: Mapping[str, int]) -> None:
        self.peer = peer
        self.peer_max_streams[False] = max(self.peer_max_streams[False], peer["max_streams_bidi"])
        self.peer_max_streams[True] = max(self.peer_max_streams[True], peer["max_streams_uni"])
        self.send_max_data = max(self.send_max_data, peer["max_data"])
        for stream in self.streams.values():
            if stream.send is not None:
                stream.send_max = max(stream.send_max, self._initial_send_max(stream.id))

    def apply_local_params(self, local: Mapping[str, int]) -> None:
        self.local = local
        self.local_max_streams[False] = max(self.local_max_streams[False], local["max_streams_bidi"])
        self.local_max_streams[True] = max(self.local_max_streams[True], local["max_streams_uni"])
        self.recv_max_data = max(self.recv_max_data, local["max_data"])

    def _initial_send_max(self, stream_id: int) -> int:
        p = self.peer
        if not p:
            return 0
        if is_uni(stream_id):
            return p["max_stream_data_uni"]
        # The peer's "bidi_local" covers streams it opened; "bidi_remote" the ones we opened.
        if is_local(stream_id, self.is_client):
            return p["max_stream_data_bidi_remote"]
        return p["max_stream_data_bidi_local"]

    def _initial_recv_window(self, stream_id: int) -> int:
        loc = self.local
        if is_uni(stream_id):
            return loc["max_stream_data_uni"]
        if is_local(stream_id, self.is_client):
            return loc["max_stream_data_bidi_local"]
        return loc["max_stream_data_bidi_remote"]

    def _new(self, stream_id: int) -> Stream:
        local = is_local(stream_id, self.is_client)
        uni = is_uni(stream_id)
        stream = Stream(stream_id, can_send=local or not uni, can_recv=not local or not uni,
                        send_max=self._initial_send_max(stream_id),
                        recv_window=self._initial_recv_window(stream_id))
        self.streams[stream_id] = stream
        return stream

    # -- opening -----------------------------------------------------------------------------

    def open_local(self, uni: bool, limit_errno: int) -> int:
        stream_id = self.next_local[uni]
        self._open_local_upto(stream_id, limit_errno)
        return stream_id

    def _open_local_upto(self, stream_id: int, limit_errno: int) -> None:
        uni = is_uni(stream_id)
        if stream_id // 4 >= self.peer_max_streams[uni]:
            raise sim_error(limit_errno, f"stream {stream_id} is over the peer's stream limit")
        while self.next_local[uni] <= stream_id:
            self._new(self.next_local[uni])
            self.next_local[uni] += 4
        self.active = stream_id

    def app_send_target(self, stream_id: int, new: bool, uni: bool) -> int:
        """The stream a socket send names, as the kernel resolves it (spec §1.5;
        net/quic/socket.c quic_msghdr_parse, stream.c quic_stream_get): -1 is the active
        stream, or with no active one the next id of ours, which only MSG_QUIC_STREAM_NEW
        may open (EINVAL without it). NEW on a stream that has carried data: EINVAL."""
        if stream_id == -1:
            stream_id = self.active if self.active != -1 else self.next_local[uni]
            if stream_id not in self.streams and not new:
                raise sim_error(errno.EINVAL, "stream -1: none active, and no MSG_QUIC_STREAM_NEW")
        stream = self.streams.get(stream_id)
        if new and stream is not None and stream.send is not None and (stream.send.end or stream.send.fin):
            raise sim_error(errno.EINVAL, f"MSG_QUIC_STREAM_NEW on stream {stream_id}, which has data")
        return stream_id

    def can_write(self, stream_id: int) -> bool:
        """A blocked socket send may try again: the stream (opened or to be opened) has
        flow-control credit, or its id came under the peer's stream limit."""
        stream = self.streams.get(stream_id)
        if stream is None:
            return stream_id // 4 < self.peer_max_streams[is_uni(stream_id)]
        if stream.send is None or stream.reset_pending is not None:
            return True  # the retry fails at once with the reason
        return min(stream.send_max - stream.send.end, self.send_max_data - self.send_written) > 0

    def stream_for_send(self, stream_id: int, limit_errno: int) -> Stream:
        if stream_id < 0 or stream_id >= 1 << 62:
            raise sim_error(errno.EINVAL, f"bad stream id {stream_id}")
        stream = self.streams.get(stream_id)
        if stream is not None:
            if stream.send is None:
                raise sim_error(errno.EINVAL, f"stream {stream_id} is receive-only")
            return stream
        if is_local(stream_id, self.is_client):
            if stream_id < self.next_local[is_uni(stream_id)]:
                raise sim_error(errno.EINVAL, f"stream {stream_id} is closed")
            self._open_local_upto(stream_id, limit_errno)
            return self.streams[stream_id]
        raise sim_error(errno.EINVAL, f"stream {stream_id} was not opened by the peer")

    def _stream_for_recv(self, stream_id: int, frame_type: int) -> Stream | None:
        """The stream a peer frame names, opening peer streams implicitly; None if it is
        already closed and forgotten."""
        stream = self.streams.get(stream_id)
        if stream is not None:
            return stream
        uni = is_uni(stream_id)
        if is_local(stream_id, self.is_client):
            if stream_id >= self.next_local[uni]:
                raise QuicError(QuicErrorCode.STREAM_STATE_ERROR,
                                f"frame for our stream {stream_id} that we never opened", frame_type)
            return None
        index = stream_id // 4
        if index >= self.local_max_streams[uni]:
            raise QuicError(QuicErrorCode.STREAM_LIMIT_ERROR,
                            f"stream {stream_id} over our limit", frame_type)
        if index < self.peer_opened[uni]:
            return None
        base = stream_id & 0x03
        for i in range(self.peer_opened[uni], index + 1):
            self._new(i * 4 + base)
        self.peer_opened[uni] = index + 1
        if not uni:
            self.active = stream_id  # ours to answer on too (stream.c quic_stream_get)
        return self.streams[stream_id]

    # -- sending -----------------------------------------------------------------------------

    def write(self, stream: Stream, data: bytes, fin: bool) -> int:
        """Accept what the flow-control credit allows; FIN only with the last byte."""
        send = stream.send
        assert send is not None
        credit = min(stream.send_max - send.end, self.send_max_data - self.send_written)
        n = max(0, min(len(data), credit))
        if n == 0 and data:
            raise sim_error(errno.EAGAIN, f"stream {stream.id} is blocked by flow control")
        send.write(data[:n] if n < len(data) else data, fin and n == len(data))
        self.send_written += n
        if send.fin and self.active == stream.id:
            self.active = -1  # outqueue.c: a queued FIN ends the active stream
        return n

    def has_data(self) -> bool:
        return any(s.send is not None and s.reset_pending is None and s.send.has_pending()
                   for s in self.streams.values())

    def next_stream_frame(self, room: int) -> tuple[int, int, bytes, bool] | None:
        """(stream id, offset, data, fin) of a frame that fits `room` bytes, or None."""
        if room < 4 or not self.streams:
            return None
        ids = list(self.streams)
        n = len(ids)
        start = self._rr % n
        for k in range(n):
            stream = self.streams[ids[(start + k) % n]]
            send = stream.send
            if send is None or stream.reset_pending is not None or not send.has_pending():
                continue
            header = 1 + varint_size(stream.id) + varint_size(send.end) + 2
            if room <= header:
                return None
            chunk = send.next_chunk(min(room - header, 16383))
            if chunk is None:
                continue
            self._rr = (start + k + 1) % n
            offset, data, fin = chunk
            return stream.id, offset, data, fin
        return None

    def retransmit_all(self) -> None:
        for stream in self.streams.values():
            if stream.send is not None and stream.reset_pending is None:
                stream.send.retransmit_all()

    def on_stream_acked(self, stream_id: int, start: int, end: int, fin: bool) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None and stream.send is not None:
            stream.send.on_acked(start, end, fin)
            self._maybe_forget(stream)

    def on_stream_lost(self, stream_id: int, start: int, end: int, fin: bool) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None and stream.send is not None and stream.reset_pending is None:
            stream.send.on_lost(start, end, fin)

    # -- control frames -------------------------------------------------------------------------

    def control_frames(self) -> Iterator[fr.Frame]:
        """Pending flow-control and stream-state frames; each is yielded once."""
        if self.max_data_pending:
            self.max_data_pending = False
            yield fr.MaxData(self.recv_max_data)
        for uni in (False, True):
            if self.max_streams_pending[uni]:
                self.max_streams_pending[uni] = False
                yield fr.MaxStreams(uni, self.local_max_streams[uni])
        for stream in list(self.streams.values()):
            if stream.msd_pending:
                stream.msd_pending = False
                yield fr.MaxStreamData(stream.id, stream.recv_max)
            if stream.stop_pending is not None:
                code, stream.stop_pending = stream.stop_pending, None
                stream.stop_inflight = True
                yield fr.StopSending(stream.id, code)
            # -1: sent, waiting for its ACK; not again when another frame is due (found by fuzz/).
            if stream.reset_pending is not None and stream.reset_pending >= 0 and stream.send is not None:
                yield fr.ResetStream(stream.id, stream.reset_pending, stream.send.end)
                stream.reset_pending = -1

    def has_control(self) -> bool:
        return (self.max_data_pending or any(self.max_streams_pending)
                or any(s.msd_pending or s.stop_pending is not None
                       or (s.reset_pending is not None and s.reset_pending >= 0)
                       for s in self.streams.values()))

    def requeue(self, frame: fr.Frame) -> None:
        """A control frame was lost: send its current value again if still useful."""
        if isinstance(frame, fr.MaxData):
            self.max_data_pending = True
        elif isinstance(frame, fr.MaxStreams):
            self.max_streams_pending[frame.uni] = True
        elif isinstance(frame, fr.MaxStreamData):
            stream = self.streams.get(frame.stream_id)
            if stream is not None and not stream.recv_done and stream.recv_final is None:
                stream.msd_pending = True
        elif isinstance(frame, fr.StopSending):
            stream = self.streams.get(frame.stream_id)
            if stream is not None:
                stream.stop_inflight = False
                if not stream.recv_done:
                    stream.stop_pending = frame.error_code
        elif isinstance(frame, fr.ResetStream):
            stream = self.streams.get(frame.stream_id)
            if stream is not None:
                stream.reset_pending = frame.error_code

    def on_control_acked(self, frame: fr.Frame) -> None:
        if isinstance(frame, fr.StopSending):
            stream = self.streams.get(frame.stream_id)
            if stream is not None:
                stream.stop_inflight = False
        elif isinstance(frame, fr.ResetStream):
            stream = self.streams.get(frame.stream_id)
            if stream is not None and stream.send is not None:
                stream.reset_done = True
                stream.send.reset()
                self._maybe_forget(stream)

    # -- the application ends streams (STREAM_RESET / STREAM_STOP_SENDING, spec §1.4) ----------

    def reset(self, stream_id: int, code: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or stream.send is None or stream.send.all_acked or stream.reset_pending is not None:
            raise sim_error(errno.EINVAL, f"stream {stream_id} cannot be reset")
        stream.reset_pending = code
        self._deactivate(stream_id)

    def stop_sending(self, stream_id: int, code: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or stream.recv is None or stream.recv_done:
            raise sim_error(errno.EINVAL, f"stream {stream_id} has nothing more to receive")
        if stream.stop_pending is not None or stream.stop_inflight:
            raise sim_error(errno.EAGAIN, f"a STOP_SENDING for stream {stream_id} is in flight")
        stream.stop_pending = code

    # -- peer frames ----------------------------------------------------------------------------

    def on_stream_frame(self, f: fr.Stream) -> None:
        stream = self._stream_for_recv(f.stream_id, 0x08)
        if stream is None:
            return
        if stream.recv is None:
            raise QuicError(QuicErrorCode.STREAM_STATE_ERROR,
                            f"STREAM on send-only stream {f.stream_id}", 0x08)
        end = f.offset + len(f.data)
        self._check_final_size(stream, end, f.fin, 0x08)
        if end > stream.recv_max:
            raise QuicError(QuicErrorCode.FLOW_CONTROL_ERROR, f"stream {f.stream_id} over its credit", 0x08)
        if end > stream.recv_highest:
            self.recv_highest_total += end - stream.recv_highest
            stream.recv_highest = end
            if self.recv_highest_total > self.recv_max_data:
                raise QuicError(QuicErrorCode.FLOW_CONTROL_ERROR, "connection credit exceeded", 0x08)
        if f.fin:
            stream.recv_final = end
        if stream.recv_done:
            return
        for chunk in stream.recv.feed(f.offset, f.data):
            self._enqueue(stream.id, chunk, False)
        if stream.recv_final is not None and stream.recv.offset == stream.recv_final:
            self._enqueue(stream.id, b"", True)
            stream.recv_done = True  # nothing more will arrive; read state lives in the queue

    def _check_final_size(self, stream: Stream, end: int, fin: bool, ftype: int) -> None:
        final = stream.recv_final
        if final is not None and (end > final or (fin and end != final)):
            raise QuicError(QuicErrorCode.FINAL_SIZE_ERROR, f"stream {stream.id} final size changed", ftype)
        if fin and end < stream.recv_highest:
            raise QuicError(QuicErrorCode.FINAL_SIZE_ERROR,
                            f"stream {stream.id} final size below data", ftype)

    def _enqueue(self, stream_id: int, data: bytes, fin: bool) -> None:
        queue = self.queue
        if queue and queue[-1].stream_id == stream_id and not queue[-1].fin:
            last = queue[-1]
            last.buf += data
            last.fin = fin
            return
        if not isinstance(queue, deque):
            self.queue = queue = deque()
        queue.append(Received(stream_id, data, fin))

    def on_reset_stream(self, f: fr.ResetStream) -> None:
        stream = self._stream_for_recv(f.stream_id, 0x04)
        if stream is None:
            return
        if stream.recv is None:
            raise QuicError(QuicErrorCode.STREAM_STATE_ERROR,
                            f"RESET_STREAM on send-only stream {f.stream_id}", 0x04)
        self._check_final_size(stream, f.final_size, True, 0x04)
        # RFC 9000 §4.5: the final size is credit consumed, held to the same limits as data
        # (a final size near 2^62 had pushed our MAX_DATA past a varint; found by fuzz/).
        if f.final_size > stream.recv_max:
            raise QuicError(QuicErrorCode.FLOW_CONTROL_ERROR,
                            f"stream {f.stream_id} final size over its credit", 0x04)
        if f.final_size > stream.recv_highest:
            self.recv_highest_total += f.final_size - stream.recv_highest
            stream.recv_highest = f.final_size
            if self.recv_highest_total > self.recv_max_data:
                raise QuicError(QuicErrorCode.FLOW_CONTROL_ERROR, "connection credit exceeded", 0x04)
        stream.recv_final = f.final_size
        self.queue = deque(e for e in self.queue if e.stream_id != stream.id)
        # Credit of data that will never be read (received or not) returns to the connection.
        self._consumed(stream, f.final_size - stream.recv_consumed)
        stream.recv_done = True
        self._maybe_forget(stream)

    def on_stop_sending(self, f: fr.StopSending) -> None:
        stream = self._stream_for_recv(f.stream_id, 0x05)
        if stream is None:
            return
        if stream.send is None:
            raise QuicError(QuicErrorCode.STREAM_STATE_ERROR,
                            f"STOP_SENDING on receive-only stream {f.stream_id}", 0x05)
        if stream.reset_pending is None and not stream.send.all_acked:
            stream.reset_pending = f.error_code  # RFC 9000 §3.5: answer with RESET_STREAM
            self._deactivate(stream.id)

    def _deactivate(self, stream_id: int) -> None:
        """A RESET_STREAM for the active stream ends it as such (frame.c)."""
        if self.active == stream_id:
            self.active = -1

    def on_max_stream_data(self, f: fr.MaxStreamData) -> None:
        stream = self._stream_for_recv(f.stream_id, 0x11)
        if stream is None:
            return
        if stream.send is None:
            raise QuicError(QuicErrorCode.STREAM_STATE_ERROR,
                            f"MAX_STREAM_DATA on receive-only stream {f.stream_id}", 0x11)
        stream.send_max = max(stream.send_max, f.maximum)

    def on_stream_data_blocked(self, f: fr.StreamDataBlocked) -> None:
        stream = self._stream_for_recv(f.stream_id, 0x15)
        if stream is not None and stream.recv is None:
            raise QuicError(QuicErrorCode.STREAM_STATE_ERROR,
                            f"STREAM_DATA_BLOCKED on send-only stream {f.stream_id}", 0x15)

    def on_max_streams(self, f: fr.MaxStreams) -> None:
        self.peer_max_streams[f.uni] = max(self.peer_max_streams[f.uni], f.maximum)

    def on_max_data(self, f: fr.MaxData) -> None:
        self.send_max_data = max(self.send_max_data, f.maximum)

    # -- the application reads --------------------------------------------------------------------

    def readable(self) -> bool:
        return bool(self.queue)

    def read(self, max_len: int) -> tuple[int, bytes, bool] | None:
        if not self.queue:
            return None
        entry = self.queue[0]
        stream_id, buf, pos, fin = entry.stream_id, entry.buf, entry.pos, entry.fin
        n = max(0, min(max_len, len(buf) - pos))
        data = bytes(buf[pos:pos + n])
        pos += n
        done = pos >= len(buf)
        if done:
            self.queue.popleft()
        else:
            entry.pos = pos
            if pos >= 65536:  # drop the read prefix in large steps
                del buf[:pos]
                entry.pos = 0
        stream = self.streams.get(stream_id)
        if stream is not None:
            self._consumed(stream, n)
            if done and fin:
                self._maybe_forget(stream)
        return stream_id, data, done and fin

    def _consumed(self, stream: Stream, n: int) -> None:
        if n <= 0:
            return
        stream.recv_consumed += n
        self.recv_consumed_total += n
        if stream.recv_final is None and stream.recv_consumed + stream.recv_window // 2 > stream.recv_max:
            stream.recv_max = stream.recv_consumed + stream.recv_window
            stream.msd_pending = self.credit_due = True
        window = self.local["max_data"]
        if self.recv_consumed_total + window // 2 > self.recv_max_data:
            self.recv_max_data = self.recv_consumed_total + window
            self.max_data_pending = self.credit_due = True

    def _maybe_forget(self, stream: Stream) -> None:
        """A stream whose both halves are finished is dropped; a peer stream frees a slot."""
        if stream.counted:
            return
        recv_finished = stream.recv is None or (stream.recv_done and not any(
            e.stream_id == stream.id for e in self.queue))
        if not (recv_finished and stream.send_done):
            return
        stream.counted = True
        del self.streams[stream.id]
        if is_local(stream.id, self.is_client):
            return
        uni = is_uni(stream.id)
        self.peer_closed[uni] += 1
        initial = self.local["max_streams_uni" if uni else "max_streams_bidi"]
        if self.local_max_streams[uni] - self.peer_closed[uni] < (initial + 1) // 2:
            self.local_max_streams[uni] = self.peer_closed[uni] + initial
            self.max_streams_pending[uni] = True
