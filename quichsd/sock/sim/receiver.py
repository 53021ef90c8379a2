"""The receiving half of SimConnection: datagrams are split into packets (coalescing),
packets are unprotected with their level's keys (or parked until the keys arrive, spec
§2.1/§2.4), and every frame goes to its handler.

Receiver refers to the parts it reads and changes (lifecycle.py has the steps that span
several of them); SimConnection (connection.py) makes it and passes it datagrams.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...kernel_numbers import QuicEvent
from ...quic.errors import QuicError, QuicErrorCode
from ...quic.packet_protection import PacketKey, UnprotectError, initial_keys
from ...quic.versions import SUPPORTED_VERSIONS, LongPacketType
from . import frames as fr
from . import migration
from .datagrams import DatagramQueues
from .delivery import Delivery
from .handshake_data import HandshakeData, TicketCapture
from .keys import KeyPhase
from .levels import APP, EARLY, HANDSHAKE, INITIAL, LEVEL_OF_TYPE, PACKET_KIND, SPACE_OF
from .lifecycle import Lifecycle, LifecycleView
from .listener_peek import OpenedInitial
from .notifications import Notifications
from .packets import (
    PacketError,
    PacketHeader,
    parse_header,
    retry_is_authentic,
    retry_token,
    unprotect_packet,
    version_negotiation_versions,
)
from .recovery import PacketSpace
from .state import ConnState
from .streams import StreamManager

__all__ = ["Receiver", "STATELESS_RESET_ERRCODE", "HANDSHAKE_ACK_HOLD"]

STATELESS_RESET_ERRCODE = 0x100  # what the kernel reports for a stateless reset

# RFC 9000 §13.2.1: Initial and Handshake packets are acknowledged immediately, without
# max_ack_delay. The ACK waits only for the handshake agent's answer, which follows within
# the same burst of socket calls, so both leave in one datagram; an agent that has not
# answered after this long does not hold the ACK any longer.
HANDSHAKE_ACK_HOLD = 0.002

_CLOSED, _ESTABLISHING = ConnState.CLOSED, ConnState.ESTABLISHING


class Receiver(LifecycleView):
    """receive_datagram() and the frame handlers."""

    __slots__ = ("handshake", "ticket", "streams", "datagrams", "notifications", "delivery", "lag", "source",
                 "size")

    def __init__(self, lifecycle: Lifecycle, *, phase: KeyPhase, handshake: HandshakeData,
                 ticket: TicketCapture, streams: StreamManager, datagrams: DatagramQueues,
                 notifications: Notifications, delivery: Delivery) -> None:
        super().__init__(lifecycle, phase)
        self.handshake = handshake
        self.ticket = ticket
        self.streams = streams
        self.datagrams = datagrams
        self.notifications = notifications
        self.delivery = delivery
        self.lag = 0.0  # how long the datagram being processed may have waited
        self.source: Any = None  # where the datagram being processed came from, and its size
        self.size = 0

    def receive_datagram(self, data: bytes, addr: Any, now: float, lag: float = 0.0,
                         opened: OpenedInitial | None = None) -> None:
        """`lag`: how long the datagram may have waited in the socket before we read it
        (the ACK timers count it as already spent). `opened`: the datagram's first packet,
        a client's first Initial that the listener unprotected already."""
        self.timers.now = now
        self.lag = lag
        self.source, self.size = addr, len(data)
        address = self.address
        if self.lifecycle.state is _CLOSED:
            address.bytes_received += len(data)  # more amplification credit for the close
            self.close.on_datagram_while_closed()
            return
        if address.peer_addr is None:
            address.peer_addr = addr
        data = bytes(data)
        address.bytes_received += len(data)
        processed = self._receive_packets(data, now, opened)
        if (not processed and self.lifecycle.state is not _CLOSED and len(data) >= 21
                and data[-16:] in self.cids.peer_reset_tokens):
            self.close.info = (STATELESS_RESET_ERRCODE, 0, b"")
            self.lifecycle.enter_closed()

    def _receive_packets(self, data: bytes, now: float, opened: OpenedInitial | None) -> bool:
        """The datagram's packets in turn; True if any was processed."""
        pos = 0
        processed = False
        if opened is not None:
            pos = opened.header.end
            processed = self._receive_packet(data, opened.header, now, opened)
        life = self.lifecycle
        while pos < len(data) and life.state is not _CLOSED:
            try:
                header = parse_header(data, pos, len(self.cids.local_cid))
            except PacketError:
                break
            if header.is_long and header.packet_type is None:
                if header.version == 0 and pos == 0:  # Version Negotiation: the whole datagram
                    processed |= self._receive_version_negotiation(data, header)
                break  # an unknown version: dropped
            if header.packet_type is LongPacketType.RETRY:
                processed |= self._receive_retry(data, header)
                break  # a Retry has no Length: it ends the datagram
            pos = header.end
            processed |= self._receive_packet(data, header, now)
        return processed

    def _receive_packet(self, data: bytes, header: PacketHeader, now: float,
                        opened: OpenedInitial | None = None) -> bool:
        """Process one packet; False if it was dropped or parked. `opened`: the packet,
        unprotected already (used only if it was opened with the key we would use)."""
        level = self._packet_level(header)
        if level is None or level in self.keys.discarded:
            return False
        if level == APP and not data[header.start] & 0x40 and not self.params.local["grease_quic_bit"]:
            return False  # RFC 9000 §17.3.1; RFC 9287 §3: a cleared QUIC bit only if we allowed it
        switch_to = None
        if header.is_long and header.version != self.version.version:
            if level != INITIAL:
                return False
            key, switch_to = self._other_version_key(header)
            if key is None:
                return False
        else:
            key = self.keys.recv.get(level)
            if key is None:
                self.keys.park(level, data[header.start:header.end], now, self.source, self.size)
                return False
        space = self.spaces[SPACE_OF[level]]
        if opened is not None and opened.key is key and space.largest_received < 0:
            first, pn, payload = opened.first, opened.packet_number, opened.payload
        else:
            try:
                if level == APP:
                    first, pn, payload = self.phase.unprotect(key, data, header, space.largest_received,
                                                              space.next_pn)
                else:
                    first, pn, payload = unprotect_packet(key, data, header, space.largest_received)
            except UnprotectError:
                return False
        if switch_to is not None:
            self.lifecycle.change_version(switch_to)
            self.version.followed = True
        self._accept(header, level, space, first, pn, payload, now)
        return True

    def _other_version_key(self, header: PacketHeader) -> tuple[PacketKey | None, int | None]:
        """(key, version to switch to) for an Initial of another version than ours: a
        version we left, or, once, the server's move to another compatible version (RFC
        9368 §2.3), followed up to its ServerHello (it may have ACKed, or sent a
        HelloRetryRequest, in the old version first)."""
        key = self.keys.alt_initial_recv.get(header.version)
        if key is None and self.is_client and not self.version.followed and HANDSHAKE not in self.keys.recv:
            return initial_keys(self.cids.initial_cid, SUPPORTED_VERSIONS[header.version])[1], header.version
        return key, None

    def _accept(self, header: PacketHeader, level: int, space: PacketSpace, first: int, pn: int,
                payload: bytes, now: float) -> None:
        """An authentic packet: its frames, then the bookkeeping of its receipt."""
        life = self.lifecycle
        try:
            if first & (0x0C if header.is_long else 0x18):
                raise QuicError(QuicErrorCode.PROTOCOL_VIOLATION, "reserved header bits set")
            if pn in space.received:
                return  # a duplicate
            if self.is_client and not self.cids.server_scid_seen and header.is_long:
                self.cids.learn_server_scid(header.scid)  # RFC 9000 §7.2
            eliciting = self._process_frames(payload, level)
        except QuicError as exc:
            life.close_locally(exc.error_code, exc.frame_type or 0, exc.reason.encode()[:63])
            return
        if life.state is _CLOSED:
            return
        if level == APP and pn > space.largest_received:
            self._check_path(header.dcid, now)
        space.on_received(pn, eliciting, now, immediate=level != APP and level != EARLY,
                          max_ack_delay=max(0.0, self.params.local["max_ack_delay"] / 1e6 - self.lag))
        self.timers.on_packet_received(now)
        if level == HANDSHAKE and not self.is_client:
            self.address.validated = True
            life.discard_level(INITIAL)  # RFC 9001 §4.9.1

    def _receive_retry(self, data: bytes, header: PacketHeader) -> bool:
        """RFC 9000 §17.2.5.2: a client acts on at most one Retry, and only before any
        packet of the server was processed; it discards one addressed elsewhere, one whose
        SCID is the DCID it used, one with an empty token or an integrity tag that does
        not verify (RFC 9001 §5.8) over the DCID it used first, as the kernel does."""
        cids = self.cids
        if not self.is_client or self.lifecycle.state is not _ESTABLISHING:
            return False
        if self.address.retries_followed or cids.server_scid_seen or header.version != self.version.version:
            return False
        if header.dcid != cids.local_cid or header.scid == cids.peer_cid or not header.scid:
            return False
        token = retry_token(data, header)
        if not token or not retry_is_authentic(data, header, self.version.qv, cids.original_dcid):
            return False
        self.lifecycle.follow_retry(header.scid, token)
        return True

    def _receive_version_negotiation(self, data: bytes, header: PacketHeader) -> bool:
        try:
            versions = version_negotiation_versions(data, header)
        except PacketError:
            return False
        return self.lifecycle.on_version_negotiation(versions, header.dcid, header.scid)

    def _packet_level(self, header: PacketHeader) -> int | None:
        local = self.cids.local
        if not header.is_long:
            return APP if header.dcid in local.values() else None
        if header.packet_type is None:
            return None
        level = LEVEL_OF_TYPE.get(header.packet_type)
        if level is None:
            return None  # Retry: _receive_retry
        if level == EARLY and self.is_client:
            return None
        if self.is_client and level == INITIAL and header.token:
            return None  # RFC 9000 §17.2.2: servers send no token
        dcid = header.dcid
        if dcid not in local.values() and not (not self.is_client and dcid == self.cids.initial_cid):
            return None
        return level

    def replay_parked(self, level: int) -> None:
        """The packets that waited for this level's receive key (spec §2.4)."""
        parked = self.keys.take_parked(level)
        if not parked:
            return
        self.lag = 0.0  # replayed from a socket call, not read late from the socket
        source, size = self.source, self.size
        try:
            for packet, when, self.source, self.size in parked:
                if self.lifecycle.state is _CLOSED:
                    return
                try:
                    header = parse_header(packet, 0, len(self.cids.local_cid))
                except PacketError:
                    continue
                self._receive_packet(packet, header, max(when, self.timers.now))
        finally:
            self.source, self.size = source, size

    # ---- frames --------------------------------------------------------------------------------

    def _process_frames(self, payload: bytes, level: int) -> bool:
        kind = PACKET_KIND[level]
        eliciting = False
        life = self.lifecycle
        for ftype, frame in fr.parse_frames(payload):
            fr.check_allowed(ftype, kind)
            if frame.ack_eliciting:
                eliciting = True
            _HANDLERS[type(frame)](self, frame, level)
            if life.state is _CLOSED:
                break
        return eliciting

    def _on_nothing(self, f: fr.Frame, level: int) -> None:
        pass

    def _on_ack(self, f: fr.Ack, level: int) -> None:
        space_id = SPACE_OF[level]
        space = self.spaces[space_id]
        if f.largest >= space.next_pn:
            raise QuicError(QuicErrorCode.PROTOCOL_VIOLATION, "ACK of a packet never sent", 0x02)
        delay = 0.0
        if space_id == APP:
            peer = self.params.peer
            delay = (f.delay << peer["ack_delay_exponent"]) / 1e6
            if self.lifecycle.handshake_confirmed:
                delay = min(delay, peer["max_ack_delay"] / 1e6)
        acked, lost = self.recovery.on_ack(space, f, delay, self.timers.now)
        self.delivery.on_acked(acked)
        self.delivery.on_lost(lost)

    def _on_crypto(self, f: fr.Crypto, level: int) -> None:
        chunks = self.handshake.streams[level].recv.feed(f.offset, f.data)
        if level == APP:
            for chunk in chunks:
                self.ticket.capture(chunk)
            return
        self.handshake.deliver(level, chunks)
        # A server that may still move to its preferred version ACKs at once in the
        # client's (picoquic needs that ACK before the switch).
        may_switch = not self.is_client and self.version.may_switch
        timers = self.timers
        if chunks and timers.hold_until is None and not may_switch and self.lag < HANDSHAKE_ACK_HOLD:
            timers.hold_until = timers.now + HANDSHAKE_ACK_HOLD - self.lag

    def _on_stream(self, f: fr.Stream, level: int) -> None:
        self.streams.on_stream_frame(f)

    def _on_reset_stream(self, f: fr.ResetStream, level: int) -> None:
        self.streams.on_reset_stream(f)

    def _on_stop_sending(self, f: fr.StopSending, level: int) -> None:
        self.streams.on_stop_sending(f)

    def _on_max_data(self, f: fr.MaxData, level: int) -> None:
        self.streams.on_max_data(f)

    def _on_max_stream_data(self, f: fr.MaxStreamData, level: int) -> None:
        self.streams.on_max_stream_data(f)

    def _on_max_streams(self, f: fr.MaxStreams, level: int) -> None:
        self.streams.on_max_streams(f)

    def _on_stream_data_blocked(self, f: fr.StreamDataBlocked, level: int) -> None:
        self.streams.on_stream_data_blocked(f)

    def _on_new_token(self, f: fr.NewToken, level: int) -> None:
        if not self.is_client:
            raise QuicError(QuicErrorCode.PROTOCOL_VIOLATION, "NEW_TOKEN from a client", 0x07)
        self.address.token = f.token  # readable through QUIC_SOCKOPT_TOKEN, as the kernel's
        self.notifications.push(QuicEvent.NEW_TOKEN, f.token)

    def _on_handshake_done(self, f: fr.HandshakeDone, level: int) -> None:
        if not self.is_client:
            raise QuicError(QuicErrorCode.PROTOCOL_VIOLATION, "HANDSHAKE_DONE from a client", 0x1E)
        self.lifecycle.confirm()
        migration.start_preferred(self, self.timers.now)  # RFC 9000 §9.6, as the kernel's client

    def _on_path_challenge(self, f: fr.PathChallenge, level: int) -> None:
        migration.on_challenge(self, f.data, self.source)

    def _check_path(self, dcid: bytes, now: float) -> None:
        """The highest-numbered 1-RTT packet so far: on another path, a server probes it
        before moving there (RFC 9000 §9.3; migration.py)."""
        address = self.address
        if not self.is_client and address.validated and self.source != address.peer_addr:
            migration.on_new_path(self, self.source, dcid, self.size, now)

    def _on_path_response(self, f: fr.PathResponse, level: int) -> None:
        migration.on_response(self, f.data, self.notifications)

    def _on_datagram(self, f: fr.Datagram, level: int) -> None:
        if not self.params.local["max_datagram_frame_size"]:
            raise QuicError(QuicErrorCode.PROTOCOL_VIOLATION, "DATAGRAM not negotiated", 0x30)
        self.datagrams.inbound.append(f.data)

    # ---- connection IDs and close ------------------------------------------------------------

    def _on_new_connection_id(self, f: fr.NewConnectionId, level: int) -> None:
        limit = self.params.local["active_connection_id_limit"]
        self.pending.extend(self.cids.on_new_connection_id(f, limit))
        migration.on_new_cid(self, self.timers.now)  # a path may have waited for one

    def _on_retire_connection_id(self, f: fr.RetireConnectionId, level: int) -> None:
        self.cids.on_retire(f.sequence)
        self.lifecycle.issue_connection_ids()

    def _on_connection_close(self, f: fr.ConnectionClose, level: int) -> None:
        self.close.on_peer_close(f)
        self.lifecycle.enter_closed()  # draining: nothing more is sent (RFC 9000 §10.2.2)


# Each handler takes the frame type it is registered for.
_HANDLERS: dict[type, Callable[[Receiver, Any, int], None]] = {
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
    fr.PathResponse: Receiver._on_path_response,
    fr.ConnectionClose: Receiver._on_connection_close,
    fr.HandshakeDone: Receiver._on_handshake_done,
    fr.Datagram: Receiver._on_datagram,
}
