"""The sending half of SimConnection: datagrams are assembled level by level (Initial,
Handshake, then 0-RTT or 1-RTT), coalesced, padded to 1200 bytes when they carry an
Initial that must be (RFC 9000 §14.1), and every packet is recorded for recovery.

Sender refers to the parts it reads and changes (lifecycle.py has the steps that span
several of them); SimConnection (connection.py) makes it and asks it for datagrams.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from ...quic.packet_protection import PacketKey
from . import frames as fr
from .crypto_stream import CryptoStreams
from .datagrams import DatagramQueues
from .keys import KeyPhase
from .levels import APP, EARLY, HANDSHAKE, INITIAL, LONG_TYPE, SPACE_OF
from .lifecycle import Lifecycle, LifecycleView
from .packets import (
    MIN_INITIAL_DATAGRAM,
    build_long_packet,
    build_short_packet,
    long_packet_overhead,
    pn_length,
    short_packet_overhead,
)
from .path import CHALLENGE_DATAGRAM
from .pmtud import PmtuProbing
from .recovery import MAX_DATAGRAM, CryptoRange, PacketSpace, SentItem, SentPacket, StreamRange
from .state import ConnState
from .streams import StreamManager

if TYPE_CHECKING:
    from .rewrite import SendRewriter

__all__ = ["Sender"]

MAX_DATAGRAMS_PER_CALL = 64
_CRYPTO_LEVELS = (INITIAL, HANDSHAKE, APP)
_CLOSED = ConnState.CLOSED
_APP_ONLY = (APP,)


class _Built(NamedTuple):
    """A packet assembled for the datagram being built, not protected yet."""

    level: int
    payload: bytearray
    items: list[SentItem]
    eliciting: bool
    size: int  # on the wire, once protected


class Sender(LifecycleView):
    """datagrams_to_send() and packet assembly."""

    __slots__ = ("probes", "crypto", "streams", "datagrams", "corked", "send_rewriter", "pmtu",
                 "max_datagram")

    def __init__(self, lifecycle: Lifecycle, *, phase: KeyPhase, streams: StreamManager,
                 datagrams: DatagramQueues) -> None:
        super().__init__(lifecycle, phase)
        self.probes = lifecycle.spaces.probes
        self.crypto: CryptoStreams = lifecycle.crypto
        self.streams = streams
        self.datagrams = datagrams
        # Set by a sendmsg with MSG_MORE: nothing leaves until a call without it (or any
        # other transmit trigger: a received datagram, a key install, a timer).
        self.corked = False
        # `quichsd spec`'s seam (rewrite.py): set on its own client connections only.
        self.send_rewriter: SendRewriter | None = None
        # PLPMTUD (pmtud.py): on when QUIC_SOCKOPT_CONFIG set plpmtud_probe_interval; the
        # datagram size it confirmed (RFC 9000 §14.3).
        self.pmtu: PmtuProbing | None = None
        self.max_datagram = MAX_DATAGRAM

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        self.timers.now = now
        self.recovery.pace_until = None  # set again below if the pacer holds data back
        if self.lifecycle.state is _CLOSED:
            return self._close_datagrams()
        if self.corked:
            return []
        out = self._path_challenge(now)
        hold = self.timers.hold_until
        if hold is not None and now < hold:
            if not self._crypto_to_send():
                return out
        elif not self._has_output(now):
            return out
        while len(out) < MAX_DATAGRAMS_PER_CALL:
            datagram = self._build_datagram(now)
            if datagram is None:
                break
            out.append((datagram, self.address.peer_addr))
        return out

    def _path_challenge(self, now: float) -> list[tuple[bytes, Any]]:
        """PATH_RESPONSEs owed on other paths (RFC 9000 §8.2.2) and a PATH_CHALLENGE to the
        path being validated (path.py), each in a datagram expanded to 1200 bytes as far as
        an unvalidated address's amplification budget allows (§8.2.1, §9.3), with the
        destination CID of its path (§9.5)."""
        path = self.address.path
        if (not path.challenge_due and not path.responses) or APP not in self.keys.send:
            return []
        out = []
        for data, route in path.responses:
            on_alt = route == path.alt_addr
            datagram = self._path_datagram(fr.PathResponse(data), on_alt, path.budget() if on_alt else
                                           CHALLENGE_DATAGRAM, now)
            if datagram is not None:
                out.append((datagram, route))
        path.responses.clear()
        if path.challenge_due:
            path.challenge_due = False
            datagram = self._path_datagram(fr.PathChallenge(path.entropy), True, path.budget(), now)
            if datagram is not None:  # else the address's next packet or the PATH timer may let it
                path.sent += len(datagram)
                out.append((datagram, path.alt_addr))
        return out

    def _path_datagram(self, frame: fr.PathChallenge | fr.PathResponse, on_alt: bool, limit: int,
                       now: float) -> bytes | None:
        """One 1-RTT packet with `frame` and PADDING up to min(1200, limit) bytes; None if
        not even the frame fits."""
        cids = self.cids
        active = cids.peer_cid
        if on_alt:
            cids.peer_cid = cids.alt_cid()  # only for this packet: the others keep the old path's
        try:
            payload = bytearray(frame.encode())
            space = self.spaces[APP]
            size = min(CHALLENGE_DATAGRAM, limit) - self._overhead(APP, pn_length(space.next_pn,
                                                                                  space.largest_acked))
            if size < len(payload):
                return None
            payload.extend(bytes(size - len(payload)))
            return self._seal(APP, payload, [], True, True, now)
        finally:
            cids.peer_cid = active

    def _has_output(self, now: float) -> bool:
        """Could _build_datagram send anything? A cheap test for the common answer, no
        (it runs after every socket call); True may still build nothing."""
        for owed in self.probes.values():
            if owed:
                return True
        if self._crypto_to_send():
            return True
        for space in self.spaces.values():
            due = space.ack_deadline
            if due is not None and due <= now and not space.discarded:
                return True
        keys = self.keys.send
        if APP not in keys and EARLY not in keys:
            return False
        return bool(self.pending or self.datagrams.outbound or self.streams.has_control()
                    or self.streams.has_data())

    def _crypto_to_send(self) -> bool:
        keys, crypto = self.keys.send, self.crypto
        # A loop, not any(generator): this runs after every socket call, and the generator
        # doubled the cost of the common answer (nothing to send).
        for level in _CRYPTO_LEVELS:  # noqa: SIM110
            if level in keys and crypto[level].send.has_pending():
                return True
        return False

    # ---- the close -----------------------------------------------------------------------------

    def _close_datagrams(self) -> list[tuple[bytes, Any]]:
        """The CONNECTION_CLOSE datagram, and its resends (close.py), within the
        amplification limit like everything else (RFC 9000 §8.1, §10.2.3)."""
        close = self.close
        if close.frames:
            frames = [(lv, f) for lv, f in close.frames if lv in self.keys.send]
            close.frames = []
            close.datagram = self._fitting_close(frames)
            close.resend_due = False
        elif not (close.resend_due and close.datagram):
            return []
        close.resend_due = False
        datagram = close.datagram
        if datagram is None or len(datagram) > self.address.budget():
            return []
        self.address.bytes_sent += len(datagram)
        return [(datagram, self.address.peer_addr)]

    def _fitting_close(self, frames: list[tuple[int, fr.ConnectionClose]]) -> bytes | None:
        """The close packets, made smaller until they fit the amplification budget (RFC
        9000 §10.2.3 lets a close shed its reason phrase, and a server send it at one
        level only): every level with the phrase, then without it, then the highest level
        alone; None if not even that fits (the peer's idle timeout ends it then)."""
        budget = self.address.budget()
        bare = [(lv, fr.ConnectionClose(f.error_code, f.frame_type, b"", f.app)) for lv, f in frames]
        for candidate in (frames, bare, bare[-1:]):
            if candidate and self._close_size(candidate) <= budget:
                return b"".join(self._protect(lv, self.keys.send[lv], f.encode()) for lv, f in candidate)
        return None

    def _close_size(self, frames: list[tuple[int, fr.ConnectionClose]]) -> int:
        size = 0
        for level, frame in frames:
            space = self.spaces[SPACE_OF[level]]
            pn_len = pn_length(space.next_pn, space.largest_acked)
            size += self._overhead(level, pn_len) + max(len(frame.encode()), 4 - pn_len)
        return size

    # ---- datagrams -----------------------------------------------------------------------------

    def _send_levels(self) -> Sequence[int]:
        keys = self.keys.send
        if len(keys) == 1 and APP in keys:
            return _APP_ONLY  # the handshake is over: the common case, without a new list
        levels = [lv for lv in (INITIAL, HANDSHAKE) if lv in keys]
        if APP in keys:
            levels.append(APP)
        elif self.is_client and EARLY in keys:
            levels.append(EARLY)
        return levels

    def _build_datagram(self, now: float) -> bytes | None:
        """One datagram: a packet per level with something to send, within the budget."""
        size = self.max_datagram
        budget = size if self.address.validated else self.address.budget()
        if budget < 64:
            return None
        recovery = self.recovery
        # The window, then the pacer (RFC 9002 §7.7); probes and ACKs pass both.
        cc_open = recovery.can_send(size) and recovery.pacer_allows(now, size)
        # An ack-eliciting Initial makes the datagram 1200 bytes (RFC 9000 §14.1): below
        # that budget (§8.1) an Initial packet may carry an ACK, nothing more.
        initial_fits = budget >= MIN_INITIAL_DATAGRAM
        built: list[_Built] = []
        remaining = budget
        for level in self._send_levels():
            packet = self._build_packet(level, remaining, now, cc_open, initial_fits)
            if packet is None:
                continue
            built.append(packet)
            remaining -= packet.size
            if level == APP:
                break  # a short header packet ends the datagram
        if not built:
            return None
        first = built[0]
        if len(built) == 1 and first.level == APP:  # the bulk of a transfer: one 1-RTT packet
            datagram = self._seal(APP, first.payload, first.items, first.eliciting, first.eliciting, now)
            self.address.bytes_sent += len(datagram)
            return datagram
        padded = first.level == INITIAL and self._pad(built)  # an Initial comes first
        last = len(built) - 1
        datagram = b"".join([self._seal(p.level, p.payload, p.items, p.eliciting or (padded and i == last),
                                        p.eliciting, now) for i, p in enumerate(built)])
        self.address.bytes_sent += len(datagram)
        if self.is_client and any(p.level == HANDSHAKE for p in built):
            self.lifecycle.discard_level(INITIAL)  # RFC 9001 §4.9.1
        return datagram

    def _build_packet(self, level: int, remaining: int, now: float, cc_open: bool,
                      initial_fits: bool) -> _Built | None:
        sid = SPACE_OF[level]
        space = self.spaces[sid]
        pn_len = pn_length(space.next_pn, space.largest_acked)
        overhead = self._overhead(level, pn_len)
        room = remaining - overhead
        if room < 8:
            return None
        probe = self.probes.get(sid, 0) > 0 and level != EARLY
        may_send = cc_open or probe
        if level == INITIAL and not initial_fits:
            may_send = probe = False
        payload, items, eliciting = self._fill(level, space, room, now, may_send, probe)
        if not payload:
            return None
        if probe and eliciting:
            self.probes[sid] -= 1
        return _Built(level, payload, items, eliciting, overhead + max(len(payload), 4 - pn_len))

    def pmtu_probe(self, probing: PmtuProbing, now: float) -> tuple[bytes, Any] | None:
        """PLPMTUD's part of a transmit: the size the latest ACKs confirmed, and the probe
        if one is due, PING + PADDING up to the probe size in a 1-RTT packet kept out of
        the bytes in flight, so that its loss is no congestion signal (RFC 9000 §14.4)."""
        life = self.lifecycle
        if life.state is not ConnState.ESTABLISHED or not life.handshake_confirmed or self.corked:
            return None
        if probing.deadline is None:
            probing.start(now, self.params.peer.get("max_udp_payload_size", 65527))
            return None
        space = self.spaces[APP]
        confirmed = probing.check_probe(space.sent, space.declared_lost, now)
        if confirmed is not None:
            self.max_datagram = confirmed
        if not probing.due:
            return None
        pn = space.next_pn
        overhead = self._overhead(APP, pn_length(pn, space.largest_acked))
        payload = bytearray(probing.search.probe_size - overhead)
        payload[0] = 0x01  # PING; the rest is PADDING
        datagram = self._seal(APP, payload, [], False, True, now)
        fallback = probing.on_probe_sent(pn, now)
        if fallback is not None:  # black hole (RFC 8899 §4.3)
            self.max_datagram = fallback
        return datagram, self.address.peer_addr

    def _pad(self, built: list[_Built]) -> bool:
        """PADDING frames up to 1200 bytes in a datagram with a client's Initial or an
        ack-eliciting one (RFC 9000 §14.1), at the end of its last packet; True if added.
        `built` starts with its Initial packet."""
        total = sum(p.size for p in built)
        if total < MIN_INITIAL_DATAGRAM and (self.is_client or built[0].eliciting):
            built[-1].payload.extend(bytes(MIN_INITIAL_DATAGRAM - total))
            return True
        return False

    def _overhead(self, level: int, pn_len: int) -> int:
        cids = self.cids
        if level == APP:
            return short_packet_overhead(cids.peer_cid, pn_len)
        token = (self.address.token if self.is_client else b"") if level == INITIAL else None
        return long_packet_overhead(cids.peer_cid, cids.local_cid, token, pn_len)

    # ---- frames --------------------------------------------------------------------------------

    def _fill(self, level: int, space: PacketSpace, room: int, now: float, may_send: bool,
              probe: bool) -> tuple[bytearray, list[SentItem], bool]:
        """The frames of one packet at `level`: ACK, control, CRYPTO, STREAM, DATAGRAM, PING."""
        payload = bytearray()
        items: list[SentItem] = []
        eliciting = False
        ack = self._ack(level, space, room, now)
        left = room - len(ack)
        if may_send:
            if level == APP:
                left, eliciting = self._fill_control(payload, items, left, eliciting)
            if level != EARLY:
                left, eliciting = self._fill_crypto(level, payload, items, left, eliciting)
            if level in (APP, EARLY):
                left, eliciting = self._fill_streams(payload, items, left, eliciting)
                if self.datagrams.outbound:
                    left, eliciting = self._fill_datagrams(payload, left, eliciting)
        if probe and not eliciting and left >= 1:
            payload += b"\x01"  # PING
            eliciting = True
        if ack and (payload or space.ack_due(now)):
            payload[0:0] = ack
            space.on_ack_sent()
        return payload, items, eliciting

    def _ack(self, level: int, space: PacketSpace, room: int, now: float) -> bytes:
        """The space's ACK frame if one is owed and fits, else b""."""
        if level == EARLY or not space.received or not (space.unacked_eliciting or space.ack_due(now)):
            return b""
        frame = space.ack_frame(now, self.params.local["ack_delay_exponent"])
        if frame is None:
            return b""
        ack = frame.encode()
        return ack if len(ack) <= room else b""

    def _fill_control(self, payload: bytearray, items: list[SentItem], left: int,
                      eliciting: bool) -> tuple[int, bool]:
        if self.pending:
            keep: list[fr.Frame] = []
            for frame in self.pending:
                data = frame.encode()
                if len(data) <= left:
                    payload += data
                    left -= len(data)
                    items.append(frame)
                    eliciting = True
                else:
                    keep.append(frame)
            self.pending[:] = keep
        streams = self.streams
        if streams.has_control():
            for frame in streams.control_frames():
                data = frame.encode()
                if len(data) > left:
                    streams.requeue(frame)
                    continue
                payload += data
                left -= len(data)
                items.append(frame)
                eliciting = True
        return left, eliciting

    def _fill_crypto(self, level: int, payload: bytearray, items: list[SentItem], left: int,
                     eliciting: bool) -> tuple[int, bool]:
        send = self.crypto[level].send
        while left > 8 and send.has_pending():
            chunk = send.next_chunk(left - 1 - 8 - 2)
            if chunk is None:
                break
            offset, data, _ = chunk
            frame = fr.encode_crypto(offset, data)
            payload += frame
            left -= len(frame)
            items.append(CryptoRange(level, offset, offset + len(data)))
            eliciting = True
        return left, eliciting

    def _fill_streams(self, payload: bytearray, items: list[SentItem], left: int,
                      eliciting: bool) -> tuple[int, bool]:
        while left > 8:
            chunk = self.streams.next_stream_frame(left)
            if chunk is None:
                break
            sid, offset, data, fin = chunk
            frame = fr.encode_stream(sid, offset, data, fin)
            payload += frame
            left -= len(frame)
            items.append(StreamRange(sid, offset, offset + len(data), fin))
            eliciting = True
        return left, eliciting

    def _fill_datagrams(self, payload: bytearray, left: int, eliciting: bool) -> tuple[int, bool]:
        outbound = self.datagrams.outbound
        while outbound and len(outbound[0]) + 4 <= left:
            frame_bytes = fr.Datagram(outbound.popleft()).encode()
            payload += frame_bytes
            left -= len(frame_bytes)
            eliciting = True
        return left, eliciting

    # ---- protection ----------------------------------------------------------------------------

    def _protect(self, level: int, key: PacketKey, payload: bytes) -> bytes:
        space = self.spaces[SPACE_OF[level]]
        pn = space.next_pn
        space.next_pn += 1
        bits, pn_len = 0, None
        if self.send_rewriter is not None:
            payload, bits, pn_len = self.send_rewriter.rewrite_packet(level, payload)
        cids = self.cids
        # RFC 9287: the QUIC bit is cleared once the peer advertised grease_quic_bit, in
        # 1-RTT and Handshake packets, as the kernel does (packet.c); Initial and 0-RTT keep it.
        fixed = not self.params.peer.get("grease_quic_bit")
        if level == APP:
            return build_short_packet(key, cids.peer_cid, pn, space.largest_acked, payload,
                                      int(self.phase.send_phase), bits, pn_len, fixed)
        token = (self.address.token if self.is_client else b"") if level == INITIAL else None
        return build_long_packet(key, self.version.qv, LONG_TYPE[level], cids.peer_cid, cids.local_cid, token,
                                 pn, space.largest_acked, payload, bits, pn_len, fixed or level != HANDSHAKE)

    def _seal(self, level: int, payload: bytearray, items: list[SentItem], in_flight: bool, eliciting: bool,
              now: float) -> bytes:
        """Protect one packet and record it; in flight = ack-eliciting or padded (RFC 9002 §2)."""
        space = self.spaces[SPACE_OF[level]]
        pn = space.next_pn
        packet = self._protect(level, self.keys.send[level], bytes(payload))
        self.recovery.on_sent(space, SentPacket(pn, now, len(packet), eliciting, in_flight, items))
        if eliciting:
            self.timers.on_eliciting_sent(now)
        return packet
