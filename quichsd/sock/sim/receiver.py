"""The receiving half of SimConnection: datagrams are split into packets (coalescing),
packets are unprotected with their level's keys (or parked until the keys arrive, spec
§2.1/§2.4), and every frame goes to its handler.

A mixin: SimConnection (connection.py) owns the state these methods use.
"""
from __future__ import annotations

from typing import Any

from ...kernel_numbers import QuicEvent
from ...quic.errors import QuicError, QuicErrorCode
from ...quic.packet_protection import PacketKey, UnprotectError, initial_keys
from ...quic.versions import SUPPORTED_VERSIONS, LongPacketType
from . import frames as fr
from .levels import APP, EARLY, HANDSHAKE, INITIAL, LEVEL_OF_TYPE, PACKET_KIND, SPACE_OF
from .listener_peek import OpenedInitial
from .packets import (
    PacketError,
    PacketHeader,
    parse_header,
    retry_is_authentic,
    retry_token,
    unprotect_packet,
)
from .recovery import SentPacket
from .state import ConnState

__all__ = ["Receiver"]

MAX_BUFFERED_PACKETS = 64  # packets parked per level while their keys are missing
CLOSE_RESENDS = 3  # answers to a peer that keeps sending after our CONNECTION_CLOSE
STATELESS_RESET_ERRCODE = 0x100  # what the kernel reports for a stateless reset

# RFC 9000 §13.2.1: Initial and Handshake packets are acknowledged immediately, without
# max_ack_delay. The ACK waits only for the handshake agent's answer, which follows within
# the same burst of socket calls, so both leave in one datagram; an agent that has not
# answered after this long does not hold the ACK any longer.
HANDSHAKE_ACK_HOLD = 0.002


class Receiver:
    """receive_datagram() and the frame handlers."""

    # The peer's CONNECTION_CLOSE, once received (close_info does not say whose close it
    # was, nor whether it was an application's).
    peer_close: fr.ConnectionClose | None = None

    def receive_datagram(self, data: bytes, addr: Any, now: float, lag: float = 0.0,
                         opened: OpenedInitial | None = None) -> None:
        """`lag`: how long the datagram may have waited in the socket before we read it
        (the ACK timers count it as already spent). `opened`: the datagram's first packet,
        a client's first Initial that the listener unprotected already."""
        self._now = now
        self._lag = lag
        if self.state is ConnState.CLOSED:
            self._bytes_received += len(data)  # more amplification credit for the close
            if self._close_datagram is not None and self._close_resends < CLOSE_RESENDS:
                self._close_resends += 1
                self._close_resend_due = True
            return
        if self.peer_addr is None:
            self.peer_addr = addr
        data = bytes(data)
        self._bytes_received += len(data)
        self._corked = False
        pos = 0
        processed = False
        if opened is not None:
            pos = opened.header.end
            processed = self._receive_packet(data, opened.header, now, opened)
        while pos < len(data) and self.state is not ConnState.CLOSED:
            try:
                header = parse_header(data, pos, len(self.local_cid))
            except PacketError:
                break
            if header.is_long and header.packet_type is None:
                break  # Version Negotiation or an unknown version: not simulated
            if header.packet_type is LongPacketType.RETRY:
                processed |= self._receive_retry(data, header)
                break  # a Retry has no Length: it ends the datagram
            pos = header.end
            processed |= self._receive_packet(data, header, now)
        if not processed and self.state is not ConnState.CLOSED and len(data) >= 21 and data[-16:] in self._peer_reset_tokens:
            self.close_info = (STATELESS_RESET_ERRCODE, 0, b"")
            self._enter_closed()

    def _receive_packet(self, data: bytes, header: PacketHeader, now: float,
                        opened: OpenedInitial | None = None) -> bool:
        """Process one packet; False if it was dropped or parked. `opened`: the packet,
        unprotected already (used only if it was opened with the key we would use)."""
        level = self._packet_level(header)
        if level is None or level in self._discarded:
            return False
        key = self._recv_keys.get(level)
        switch_to = None
        if header.is_long and header.version != self.version:
            if level != INITIAL:
                return False
            key = self._alt_initial_recv.get(header.version)
            if key is None and self.is_client and not self._version_followed and HANDSHAKE not in self._recv_keys:
                # The server moved to another compatible version (RFC 9368 §2.3): follow it
                # once, up to its ServerHello (it may have ACKed, or sent a HelloRetryRequest,
                # in the old version first).
                key = initial_keys(self._initial_cid, SUPPORTED_VERSIONS[header.version])[1]
                switch_to = header.version
            if key is None:
                return False
        if key is None:
            parked = self._buffered.get(level)
            if parked is not None and len(parked) < MAX_BUFFERED_PACKETS:
                parked.append((data[header.start:header.end], now))
            return False
        space = self._spaces[SPACE_OF[level]]
        if opened is not None and opened.key is key and space.largest_received < 0:
            first, pn, payload = opened.first, opened.packet_number, opened.payload
        else:
            try:
                first, pn, payload = self._unprotect(key, data, header, level, space.largest_received)
            except UnprotectError:
                return False
        if switch_to is not None:
            self._change_version(switch_to)
            self._version_followed = True
        try:
            if first & (0x0C if header.is_long else 0x18):
                raise QuicError(QuicErrorCode.PROTOCOL_VIOLATION, "reserved header bits set")
            if pn in space.received:
                return True  # a duplicate
            if self.is_client and not self._server_packet_seen and header.is_long:
                self._server_packet_seen = True
                self.peer_cid = header.scid  # RFC 9000 §7.2
                self._peer_cids[0] = (header.scid, b"")
            eliciting = self._process_frames(payload, level, now)
        except QuicError as exc:
            self._close_locally(exc.error_code, exc.frame_type or 0, exc.reason.encode()[:63])
            return True
        if self.state is ConnState.CLOSED:
            return True
        space.on_received(pn, eliciting, now, immediate=level != APP and level != EARLY,
                          max_ack_delay=max(0.0, self._local["max_ack_delay"] / 1e6 - self._lag))
        if self._idle_timeout:
            self._idle_deadline = now + self._idle_timeout
        self._idle_restart_on_send = True
        if level == HANDSHAKE and not self.is_client:
            self._validated = True
            self._discard_level(INITIAL)  # RFC 9001 §4.9.1
        return True

    def _receive_retry(self, data: bytes, header: PacketHeader) -> bool:
        """RFC 9000 §17.2.5.2: a client acts on at most one Retry, and only before any
        packet of the server was processed; it discards one addressed elsewhere, one whose
        SCID is the DCID it used, one with an empty token or an integrity tag that does
        not verify (RFC 9001 §5.8) over the DCID it used first, as the kernel does."""
        if not self.is_client or self.state is not ConnState.ESTABLISHING:
            return False
        if self.retries_followed or self._server_packet_seen or header.version != self.version:
            return False
        if header.dcid != self.local_cid or header.scid == self.peer_cid or not header.scid:
            return False
        token = retry_token(data, header)
        if not token or not retry_is_authentic(data, header, self._qv, self.original_dcid):
            return False
        self.follow_retry(header.scid, token)
        return True

    def _packet_level(self, header: PacketHeader) -> int | None:
        if not header.is_long:
            return APP if header.dcid in self._local_cids.values() else None
        level = LEVEL_OF_TYPE.get(header.packet_type)  # type: ignore[arg-type]
        if level is None:
            return None  # Retry: _receive_retry
        if level == EARLY and self.is_client:
            return None
        if self.is_client and level == INITIAL and header.token:
            return None  # RFC 9000 §17.2.2: servers send no token
        dcid = header.dcid
        if dcid not in self._local_cids.values() and not (not self.is_client and dcid == self._initial_cid):
            return None
        return level

    def _unprotect(self, key: PacketKey, data: bytes, header: PacketHeader, level: int,
                   largest: int) -> tuple[int, int, bytes]:
        if level != APP:
            return unprotect_packet(key, data, header, largest)
        try:
            first, pn, payload = unprotect_packet(key, data, header, largest)
            if bool(first & 0x04) == self._recv_phase:
                return first, pn, payload
        except UnprotectError:
            pass
        # The other key phase (RFC 9001 §6): a late packet of the previous phase, or the
        # first of the next one, which rolls our receive keys (and our send keys if the
        # peer started the update).
        if self._prev_recv_app is not None:
            try:
                first, pn, payload = unprotect_packet(self._prev_recv_app, data, header, largest)
                if bool(first & 0x04) != self._recv_phase:
                    return first, pn, payload
            except UnprotectError:
                pass
        if self._next_recv_app is None:
            self._next_recv_app = key.next_phase()
        first, pn, payload = unprotect_packet(self._next_recv_app, data, header, largest)
        if bool(first & 0x04) == self._recv_phase:
            raise UnprotectError("key phase did not change")
        self._prev_recv_app, self._recv_keys[APP] = key, self._next_recv_app
        self._next_recv_app = None
        self._recv_phase = not self._recv_phase
        if self._recv_phase != self._send_phase and APP in self._send_keys:
            self._send_keys[APP] = self._send_keys[APP].next_phase()
            self._send_phase = self._recv_phase
            self._phase_first_pn = self._spaces[APP].next_pn
        return first, pn, payload

    def _replay_buffered(self, level: int) -> None:
        parked = self._buffered.get(level)
        if not parked:
            return
        self._lag = 0.0  # replayed from a socket call, not read late from the socket
        self._buffered[level] = []
        for packet, when in parked:
            if self.state is ConnState.CLOSED:
                return
            try:
                header = parse_header(packet, 0, len(self.local_cid))
            except PacketError:
                continue
            self._receive_packet(packet, header, max(when, self._now))

    # ---- frames --------------------------------------------------------------------------------

    def _process_frames(self, payload: bytes, level: int, now: float) -> bool:
        kind = PACKET_KIND[level]
        eliciting = False
        for ftype, frame in fr.parse_frames(payload):
            fr.check_allowed(ftype, kind)
            if frame.ack_eliciting:
                eliciting = True
            handler = _HANDLERS[type(frame)]
            handler(self, frame, level)
            if self.state is ConnState.CLOSED:
                break
        return eliciting

    def _on_nothing(self, f: Any, level: int) -> None:
        pass

    def _on_ack(self, f: fr.Ack, level: int) -> None:
        space_id = SPACE_OF[level]
        space = self._spaces[space_id]
        if f.largest >= space.next_pn:
            raise QuicError(QuicErrorCode.PROTOCOL_VIOLATION, "ACK of a packet never sent", 0x02)
        delay = 0.0
        if space_id == APP:
            delay = (f.delay << self._peer["ack_delay_exponent"]) / 1e6
            if self._handshake_confirmed:
                delay = min(delay, self._peer["max_ack_delay"] / 1e6)
        acked, lost = self._recovery.on_ack(space, f, delay, self._now)
        for packet in acked:
            self._on_packet_acked(packet)
        self._on_packets_lost(lost)

    def _on_packet_acked(self, packet: SentPacket) -> None:
        for item in packet.items:
            kind = item[0]
            if kind == "crypto":
                _, level, start, end = item
                if level not in self._discarded:
                    self._crypto[level].send.on_acked(start, end, False)
            elif kind == "stream":
                self._streams.on_stream_acked(item[1], item[2], item[3], item[4])
            elif kind == "ctrl":
                if isinstance(item[1], fr.NewToken):
                    self._token_in_flight = False  # another one may go (spec §1.4)
                self._streams.on_control_acked(item[1])

    def _on_packets_lost(self, lost: list[SentPacket]) -> None:
        for packet in lost:
            for item in packet.items:
                kind = item[0]
                if kind == "crypto":
                    _, level, start, end = item
                    if level not in self._discarded:
                        self._crypto[level].send.on_lost(start, end, False)
                elif kind == "stream":
                    self._streams.on_stream_lost(item[1], item[2], item[3], item[4])
                elif kind == "ctrl":
                    self._requeue(item[1])

    def _requeue(self, frame: fr.Frame) -> None:
        if isinstance(frame, (fr.HandshakeDone, fr.NewToken, fr.RetireConnectionId)):
            self._pending.append(frame)
        elif isinstance(frame, fr.NewConnectionId):
            if frame.sequence in self._local_cids:
                self._pending.append(frame)
        elif not isinstance(frame, (fr.PathResponse, fr.Ping)):
            self._streams.requeue(frame)

    def _on_crypto(self, f: fr.Crypto, level: int) -> None:
        chunks = self._crypto[level].recv.feed(f.offset, f.data)
        if level == APP:
            for chunk in chunks:
                self._capture_ticket(chunk)
            return
        for chunk in chunks:
            self._crypto_queue.append([level, chunk, 0])
        # A server that may still move to its preferred version ACKs at once in the
        # client's (picoquic needs that ACK before the switch).
        may_switch = not self.is_client and self._preferred_version not in (0, self.version)
        if chunks and self._hold_until is None and not may_switch and self._lag < HANDSHAKE_ACK_HOLD:
            self._hold_until = self._now + HANDSHAKE_ACK_HOLD - self._lag

    def _on_stream(self, f: fr.Stream, level: int) -> None:
        self._streams.on_stream_frame(f)

    def _on_reset_stream(self, f: fr.ResetStream, level: int) -> None:
        self._streams.on_reset_stream(f)

    def _on_stop_sending(self, f: fr.StopSending, level: int) -> None:
        self._streams.on_stop_sending(f)

    def _on_max_data(self, f: fr.MaxData, level: int) -> None:
        self._streams.on_max_data(f)

    def _on_max_stream_data(self, f: fr.MaxStreamData, level: int) -> None:
        self._streams.on_max_stream_data(f)

    def _on_max_streams(self, f: fr.MaxStreams, level: int) -> None:
        self._streams.on_max_streams(f)

    def _on_stream_data_blocked(self, f: fr.StreamDataBlocked, level: int) -> None:
        self._streams.on_stream_data_blocked(f)

    def _on_new_token(self, f: fr.NewToken, level: int) -> None:
        if not self.is_client:
            raise QuicError(QuicErrorCode.PROTOCOL_VIOLATION, "NEW_TOKEN from a client", 0x07)
        self.token = f.token  # readable through QUIC_SOCKOPT_TOKEN, as the kernel's
        self._push_event(QuicEvent.NEW_TOKEN, f.token)

    def _on_handshake_done(self, f: fr.HandshakeDone, level: int) -> None:
        if not self.is_client:
            raise QuicError(QuicErrorCode.PROTOCOL_VIOLATION, "HANDSHAKE_DONE from a client", 0x1E)
        self._handshake_confirmed = True
        self._discard_level(HANDSHAKE)

    def _on_path_challenge(self, f: fr.PathChallenge, level: int) -> None:
        self._pending.append(fr.PathResponse(f.data))

    def _on_datagram(self, f: fr.Datagram, level: int) -> None:
        if not self._local["max_datagram_frame_size"]:
            raise QuicError(QuicErrorCode.PROTOCOL_VIOLATION, "DATAGRAM not negotiated", 0x30)
        self._datagrams_in.append(f.data)

    # ---- connection IDs and close ------------------------------------------------------------

    def _on_new_connection_id(self, f: fr.NewConnectionId, level: int) -> None:
        if f.sequence in self._peer_cids or f.sequence < self._peer_cid_seq:
            return
        for seq in [s for s in self._peer_cids if s < f.retire_prior_to]:
            del self._peer_cids[seq]
            self._pending.append(fr.RetireConnectionId(seq))
        if f.sequence >= f.retire_prior_to:
            self._peer_cids[f.sequence] = (f.cid, f.reset_token)
            self._peer_reset_tokens.add(f.reset_token)
        if len(self._peer_cids) > self._local["active_connection_id_limit"]:
            raise QuicError(QuicErrorCode.CONNECTION_ID_LIMIT_ERROR, "too many connection IDs", 0x18)
        if self._peer_cid_seq not in self._peer_cids and self._peer_cids:
            self._peer_cid_seq = min(self._peer_cids)
            self.peer_cid = self._peer_cids[self._peer_cid_seq][0]

    def _on_retire_connection_id(self, f: fr.RetireConnectionId, level: int) -> None:
        if f.sequence >= self._next_cid_seq:
            raise QuicError(QuicErrorCode.PROTOCOL_VIOLATION, "retiring a CID never issued", 0x19)
        cid = self._local_cids.pop(f.sequence, None)
        if cid is not None:
            self.cid_generation += 1
        if cid is not None and cid == self.local_cid and self._local_cids:
            self.local_cid = self._local_cids[min(self._local_cids)]
        self._issue_connection_ids()

    def _on_connection_close(self, f: fr.ConnectionClose, level: int) -> None:
        self.peer_close = f
        self.close_info = (f.error_code, 0 if f.app else f.frame_type, f.reason[:63])
        self._close_frames = []
        self._close_datagram = None
        self._enter_closed()  # draining: nothing more is sent (RFC 9000 §10.2.2)


_HANDLERS = {
    fr.Padding: Receiver._on_nothing,
    fr.Ping: Receiver._on_nothing,
    fr.Ack: Receiver._on_ack,
    fr.ResetStream: Receiver._on_reset_stream,
    fr.StopSending: Receiver._on_stop_sending,
    fr.Crypto: Receiver._on_crypto,
    fr.NewToken: Receiver._on_new_token,
    fr.Stream: Receiver._on_stream,
    fr.MaxData: Receiver._on_max_data,
    fr.MaxStreamData: Receiver._on_max_stream_data,
    fr.MaxStreams: Receiver._on_max_streams,
    fr.DataBlocked: Receiver._on_nothing,
    fr.StreamDataBlocked: Receiver._on_stream_data_blocked,
    fr.StreamsBlocked: Receiver._on_nothing,
    fr.NewConnectionId: Receiver._on_new_connection_id,
    fr.RetireConnectionId: Receiver._on_retire_connection_id,
    fr.PathChallenge: Receiver._on_path_challenge,
    fr.PathResponse: Receiver._on_nothing,
    fr.ConnectionClose: Receiver._on_connection_close,
    fr.HandshakeDone: Receiver._on_handshake_done,
    fr.Datagram: Receiver._on_datagram,
}
