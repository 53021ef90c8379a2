"""The sending half of SimConnection: datagrams are assembled level by level (Initial,
Handshake, then 0-RTT or 1-RTT), coalesced, padded to 1200 bytes when they carry an
Initial that must be (RFC 9000 §14.1), and every packet is recorded for recovery.

A mixin: SimConnection (connection.py) owns the state these methods use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...quic.packet_protection import PacketKey
from . import frames as fr
from .levels import APP, EARLY, HANDSHAKE, INITIAL, LONG_TYPE, SPACE_OF
from .packets import (
    MIN_INITIAL_DATAGRAM,
    build_long_packet,
    build_short_packet,
    long_packet_overhead,
    pn_length,
    short_packet_overhead,
)
from .recovery import MAX_DATAGRAM, PacketSpace, SentPacket
from .state import ConnState

if TYPE_CHECKING:
    from .rewrite import SendRewriter

__all__ = ["Sender"]

MAX_DATAGRAMS_PER_CALL = 64
_CRYPTO_LEVELS = (INITIAL, HANDSHAKE, APP)


class Sender:
    """datagrams_to_send() and packet assembly."""

    # `quichsd spec`'s seam (rewrite.py): set on its own client connections only.
    send_rewriter: SendRewriter | None = None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        self._now = now
        if self.state is ConnState.CLOSED:
            return self._close_datagrams()
        if self._corked:
            return []
        if self._hold_until is not None and now < self._hold_until:
            if not self._crypto_to_send():
                return []
        elif not self._has_output(now):
            return []
        out: list[tuple[bytes, Any]] = []
        while len(out) < MAX_DATAGRAMS_PER_CALL:
            datagram = self._build_datagram(now)
            if datagram is None:
                break
            out.append((datagram, self.peer_addr))
        return out

    def _has_output(self, now: float) -> bool:
        """Could _build_datagram send anything? A cheap test for the common answer, no
        (it runs after every socket call); True may still build nothing."""
        for owed in self._probes.values():
            if owed:
                return True
        if self._crypto_to_send():
            return True
        for space in self._spaces.values():
            due = space.ack_deadline
            if due is not None and due <= now and not space.discarded:
                return True
        keys = self._send_keys
        if APP not in keys and EARLY not in keys:
            return False
        return bool(self._pending or self._datagrams_out or self._streams.has_control()
                    or self._streams.has_data())

    def _crypto_to_send(self) -> bool:
        keys, crypto = self._send_keys, self._crypto
        for level in _CRYPTO_LEVELS:
            if level in keys and crypto[level].send.has_pending():
                return True
        return False

    def _close_datagrams(self) -> list[tuple[bytes, Any]]:
        """The CONNECTION_CLOSE datagram, and its resends (receiver.py), within the
        amplification limit like everything else (RFC 9000 §8.1, §10.2.3)."""
        if self._close_frames:
            frames = [(lv, f) for lv, f in self._close_frames if lv in self._send_keys]
            self._close_frames = []
            self._close_datagram = self._fitting_close(frames)
            self._close_resend_due = False
        elif not (self._close_resend_due and self._close_datagram):
            return []
        self._close_resend_due = False
        datagram = self._close_datagram
        if datagram is None or len(datagram) > self._amplification_budget():
            return []
        self._bytes_sent += len(datagram)
        return [(datagram, self.peer_addr)]

    def _fitting_close(self, frames: list[tuple[int, fr.ConnectionClose]]) -> bytes | None:
        """The close packets, made smaller until they fit the amplification budget (RFC
        9000 §10.2.3 lets a close shed its reason phrase, and a server send it at one
        level only): every level with the phrase, then without it, then the highest level
        alone; None if not even that fits (the peer's idle timeout ends it then)."""
        budget = self._amplification_budget()
        bare = [(lv, fr.ConnectionClose(f.error_code, f.frame_type, b"", f.app)) for lv, f in frames]
        for candidate in (frames, bare, bare[-1:]):
            if candidate and self._close_size(candidate) <= budget:
                return b"".join(self._protect(lv, self._send_keys[lv], f.encode()) for lv, f in candidate)
        return None

    def _close_size(self, frames: list[tuple[int, fr.ConnectionClose]]) -> int:
        size = 0
        for level, frame in frames:
            space = self._spaces[SPACE_OF[level]]
            pn_len = pn_length(space.next_pn, space.largest_acked)
            size += self._overhead(level, pn_len) + max(len(frame.encode()), 4 - pn_len)
        return size

    def _amplification_budget(self) -> int:
        if self._validated:
            return MAX_DATAGRAM
        return max(0, min(MAX_DATAGRAM, 3 * self._bytes_received - self._bytes_sent))

    def _send_levels(self) -> list[int]:
        levels = [lv for lv in (INITIAL, HANDSHAKE) if lv in self._send_keys]
        if APP in self._send_keys:
            levels.append(APP)
        elif self.is_client and EARLY in self._send_keys:
            levels.append(EARLY)
        return levels

    def _build_datagram(self, now: float) -> bytes | None:
        budget = self._amplification_budget()
        if budget < 64:
            return None
        cc_open = self._recovery.can_send(MAX_DATAGRAM)
        # An ack-eliciting Initial makes the datagram 1200 bytes (RFC 9000 §14.1): below
        # that budget (§8.1) an Initial packet may carry an ACK, nothing more.
        initial_fits = budget >= MIN_INITIAL_DATAGRAM
        built: list[list] = []  # [level, payload, items, eliciting, size]
        remaining = budget
        for level in self._send_levels():
            space = self._spaces[SPACE_OF[level]]
            pn_len = pn_length(space.next_pn, space.largest_acked)
            overhead = self._overhead(level, pn_len)
            room = remaining - overhead
            if room < 8:
                continue
            probe = self._probes.get(SPACE_OF[level], 0) > 0 and level != EARLY
            may_send = cc_open or probe
            if level == INITIAL and not initial_fits:
                may_send = probe = False
            payload, items, eliciting = self._fill(level, space, room, now, may_send, probe)
            if not payload:
                continue
            if probe and eliciting:
                self._probes[SPACE_OF[level]] -= 1
            size = overhead + max(len(payload), 4 - pn_len)
            built.append([level, payload, items, eliciting, size])
            remaining -= size
            if level == APP:
                break  # a short header packet ends the datagram
        if not built:
            return None
        total = sum(b[4] for b in built)
        padded = False
        if total < MIN_INITIAL_DATAGRAM and any(b[0] == INITIAL and (self.is_client or b[3]) for b in built):
            built[-1][1].extend(bytes(MIN_INITIAL_DATAGRAM - total))  # PADDING frames
            padded = True
        parts = [self._seal(level, payload, items, eliciting or (padded and i == len(built) - 1), eliciting, now)
                 for i, (level, payload, items, eliciting, _) in enumerate(built)]
        datagram = b"".join(parts)
        self._bytes_sent += len(datagram)
        if self.is_client and any(b[0] == HANDSHAKE for b in built):
            self._discard_level(INITIAL)  # RFC 9001 §4.9.1
        return datagram

    def _overhead(self, level: int, pn_len: int) -> int:
        if level == APP:
            return short_packet_overhead(self.peer_cid, pn_len)
        token = (self.token if self.is_client else b"") if level == INITIAL else None
        return long_packet_overhead(self.peer_cid, self.local_cid, token, pn_len)

    def _fill(self, level: int, space: PacketSpace, room: int, now: float, may_send: bool,
              probe: bool) -> tuple[bytearray, list, bool]:
        """The frames of one packet at `level`: ACK, control, CRYPTO, STREAM, DATAGRAM, PING."""
        payload = bytearray()
        items: list[tuple] = []
        eliciting = False
        ack = b""
        if level != EARLY and space.received and (space.unacked_eliciting or space.ack_due(now)):
            frame = space.ack_frame(now, self._local["ack_delay_exponent"])
            if frame is not None:
                ack = frame.encode()
                if len(ack) > room:
                    ack = b""
        left = room - len(ack)
        if may_send:
            if level == APP:
                left, eliciting = self._fill_control(payload, items, left, eliciting)
            if level != EARLY:
                left, eliciting = self._fill_crypto(level, payload, items, left, eliciting)
            if level in (APP, EARLY):
                left, eliciting = self._fill_streams(payload, items, left, eliciting)
                while self._datagrams_out and len(self._datagrams_out[0]) + 4 <= left:
                    frame_bytes = fr.Datagram(self._datagrams_out.popleft()).encode()
                    payload += frame_bytes
                    left -= len(frame_bytes)
                    eliciting = True
        if probe and not eliciting and left >= 1:
            payload += b"\x01"  # PING
            eliciting = True
        if ack and (payload or space.ack_due(now)):
            payload[0:0] = ack
            space.on_ack_sent()
        return payload, items, eliciting

    def _fill_control(self, payload: bytearray, items: list, left: int, eliciting: bool) -> tuple[int, bool]:
        keep: list[fr.Frame] = []
        for frame in self._pending:
            data = frame.encode()
            if len(data) <= left:
                payload += data
                left -= len(data)
                items.append(("ctrl", frame))
                eliciting = True
            else:
                keep.append(frame)
        self._pending = keep
        if self._streams.has_control():
            for frame in self._streams.control_frames():
                data = frame.encode()
                if len(data) > left:
                    self._streams.requeue(frame)
                    continue
                payload += data
                left -= len(data)
                items.append(("ctrl", frame))
                eliciting = True
        return left, eliciting

    def _fill_crypto(self, level: int, payload: bytearray, items: list, left: int,
                     eliciting: bool) -> tuple[int, bool]:
        send = self._crypto[level].send
        while left > 8 and send.has_pending():
            chunk = send.next_chunk(left - 1 - 8 - 2)
            if chunk is None:
                break
            offset, data, _ = chunk
            frame = fr.encode_crypto(offset, data)
            payload += frame
            left -= len(frame)
            items.append(("crypto", level, offset, offset + len(data)))
            eliciting = True
        return left, eliciting

    def _fill_streams(self, payload: bytearray, items: list, left: int, eliciting: bool) -> tuple[int, bool]:
        while left > 8:
            chunk = self._streams.next_stream_frame(left)
            if chunk is None:
                break
            sid, offset, data, fin = chunk
            frame = fr.encode_stream(sid, offset, data, fin)
            payload += frame
            left -= len(frame)
            items.append(("stream", sid, offset, offset + len(data), fin))
            eliciting = True
        return left, eliciting

    def _protect(self, level: int, key: PacketKey, payload: bytes) -> bytes:
        space = self._spaces[SPACE_OF[level]]
        pn = space.next_pn
        space.next_pn += 1
        bits, pn_len = 0, None
        if self.send_rewriter is not None:
            payload, bits, pn_len = self.send_rewriter.rewrite_packet(level, payload)
        if level == APP:
            return build_short_packet(key, self.peer_cid, pn, space.largest_acked, payload, int(self._send_phase),
                                      bits, pn_len)
        token = (self.token if self.is_client else b"") if level == INITIAL else None
        return build_long_packet(key, self._qv, LONG_TYPE[level], self.peer_cid, self.local_cid, token,
                                 pn, space.largest_acked, payload, bits, pn_len)

    def _seal(self, level: int, payload: bytearray, items: list, in_flight: bool, eliciting: bool,
              now: float) -> bytes:
        """Protect one packet and record it; in flight = ack-eliciting or padded (RFC 9002 §2)."""
        space = self._spaces[SPACE_OF[level]]
        pn = space.next_pn
        packet = self._protect(level, self._send_keys[level], bytes(payload))
        self._recovery.on_sent(space, SentPacket(pn, now, len(packet), eliciting, in_flight, items))
        if eliciting:
            self._last_send = now
            if self._idle_restart_on_send and self._idle_timeout:
                self._idle_deadline = now + self._idle_timeout
                self._idle_restart_on_send = False
        return packet
