"""Loss recovery (RFC 9002 §5-§7 and Appendix A): per packet-number-space bookkeeping, ACK
frames for what we received, RTT estimation, loss detection by packet and time threshold,
the probe timeout with exponential backoff, persistent congestion, and the congestion
controller's window (congestion.py: NewReno or CUBIC) with pacing (§7.7).

Beyond the pseudocode (allowed by §6.1.1, §6.1.2, §7.8): a packet found acknowledged after
it was declared lost raises the packet threshold to the reordering seen (at most
MAX_PACKET_THRESHOLD, at least doubling) or the time threshold by a quarter RTT (at most
2 RTTs); when every loss of a congestion event proves spurious the reduction is undone (as
TCP does); and the window grows only while it was what limited the sender.
Not done: ECN (§7.1), PLPMTUD; the window counts 1200-byte datagrams.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from .congestion import MAX_DATAGRAM, RENO, CongestionController, make_controller
from .frames import Ack, Frame
from .rangeset import RangeSet

__all__ = ["SentPacket", "SentItem", "CryptoRange", "StreamRange", "PacketSpace", "Recovery", "K_GRANULARITY",
           "MAX_DATAGRAM"]

K_PACKET_THRESHOLD = 3  # RFC 9002 §6.1.1
K_TIME_THRESHOLD = 9 / 8  # §6.1.2
K_GRANULARITY = 0.001  # §6.1.2
K_PERSISTENT_CONGESTION_THRESHOLD = 3  # §7.6.1
DEFAULT_MAX_ACK_DELAY = 0.025  # RFC 9000 §18.2, until the peer's parameters say otherwise
MAX_PACKET_THRESHOLD = 256  # the most reordering (in packets) the packet threshold adapts to
MAX_TIME_THRESHOLD = 2.0  # and the time threshold's limit (RTTs), reached in TIME_THRESHOLD_STEPs
TIME_THRESHOLD_STEP = 1 / 4
PACING_GAIN = 1.25  # N, §7.7
_MIN_BURST = 10 * MAX_DATAGRAM  # the pacer's bucket holds at least this (the initial window)
MAX_ACK_RANGES = 32
_DECLARED_LOST_KEPT = 512  # packet numbers remembered per space to notice spurious losses


class CryptoRange(NamedTuple):
    """CRYPTO bytes [start, end) of a level, carried by a sent packet."""

    level: int
    start: int
    end: int


class StreamRange(NamedTuple):
    """Stream bytes [start, end) (and the FIN) carried by a sent packet."""

    stream_id: int
    start: int
    end: int
    fin: bool


# What a sent packet carried that its acknowledgement or loss concerns: CRYPTO or stream
# ranges, or a control frame (sent again as it was if lost).
SentItem = CryptoRange | StreamRange | Frame


@dataclass(slots=True)
class SentPacket:
    pn: int
    time: float
    size: int
    ack_eliciting: bool
    in_flight: bool
    items: list[SentItem] = field(default_factory=list)


class PacketSpace:
    """One packet number space: Initial, Handshake or Application (0-RTT and 1-RTT)."""

    # Three per connection from its first Initial: slots keep a half-open one small.
    __slots__ = ("next_pn", "largest_acked", "sent", "eliciting_in_flight", "loss_time",
                 "last_ack_eliciting_time", "received", "largest_received", "largest_received_time",
                 "unacked_eliciting", "ack_deadline", "discarded", "declared_lost", "proves_address")

    def __init__(self) -> None:
        self.next_pn = 0
        self.largest_acked: int | None = None
        self.sent: dict[int, SentPacket] = {}  # insertion order is pn order
        self.eliciting_in_flight = 0  # ack-eliciting packets in `sent`
        self.loss_time: float | None = None
        self.last_ack_eliciting_time: float | None = None
        # receiving
        self.received = RangeSet()
        self.largest_received = -1
        self.largest_received_time = 0.0
        self.unacked_eliciting = 0  # ack-eliciting packets received since our last ACK
        self.ack_deadline: float | None = None
        self.discarded = False
        # pn -> (the reordering it would show, the congestion period it counted in)
        self.declared_lost: dict[int, tuple[int, float | None]] | None = None
        self.proves_address = True  # an ACK here shows the peer validated our address

    def on_received(self, pn: int, ack_eliciting: bool, now: float, immediate: bool,
                    max_ack_delay: float) -> None:
        self.received.add(pn, pn + 1)
        self.received.trim_to(MAX_ACK_RANGES)
        if pn > self.largest_received:
            self.largest_received = pn
            self.largest_received_time = now
        if ack_eliciting:
            self.unacked_eliciting += 1
            if immediate or self.unacked_eliciting >= 2:
                self.ack_deadline = now
            elif self.ack_deadline is None:
                self.ack_deadline = now + max_ack_delay

    def ack_due(self, now: float) -> bool:
        return self.ack_deadline is not None and self.ack_deadline <= now

    def ack_frame(self, now: float, exponent: int) -> Ack | None:
        if not self.received:
            return None
        delay_us = max(0, int((now - self.largest_received_time) * 1_000_000))
        return Ack(tuple(self.received.ranges_descending()), delay_us >> exponent)

    def on_ack_sent(self) -> None:
        self.unacked_eliciting = 0
        self.ack_deadline = None

    def has_ack_eliciting_in_flight(self) -> bool:
        return self.eliciting_in_flight > 0

    def remove(self, packet: SentPacket) -> None:
        del self.sent[packet.pn]
        if packet.ack_eliciting:
            self.eliciting_in_flight -= 1

    def discard(self) -> list[SentPacket]:
        """Keys are gone: forget everything (RFC 9002 §6.4). Returns packets in flight."""
        dropped = self.abandon_sent()
        self.ack_deadline = None
        self.unacked_eliciting = 0
        self.discarded = True
        return dropped

    def abandon_sent(self) -> list[SentPacket]:
        """Forget what was sent (a client after a Retry, RFC 9002 §6.3: the server kept
        none of it); received packets and the packet numbers go on. Returns the packets
        that were in flight."""
        dropped = [p for p in self.sent.values() if p.in_flight]
        self.sent.clear()
        self.eliciting_in_flight = 0
        self.loss_time = None
        self.last_ack_eliciting_time = None
        self.declared_lost = None
        return dropped


class Recovery:
    """RTT estimation (§5), loss detection (§6, Appendix A), persistent congestion (§7.6),
    the congestion controller's window and the pacer (§7.7) over all spaces."""

    __slots__ = ("latest_rtt", "smoothed_rtt", "rttvar", "min_rtt", "first_rtt_sample", "pto_count", "cc",
                 "bytes_in_flight", "packet_threshold", "time_threshold", "max_ack_delay", "_peak_flight",
                 "_peak_since", "_pace_tokens", "_pace_time", "pace_until", "_period", "_period_lost",
                 "peer_validated")

    def __init__(self, initial_rtt: float, algo: int = RENO) -> None:
        self.latest_rtt = 0.0
        self.smoothed_rtt = initial_rtt  # kInitialRtt: 333 ms unless configured (§6.2.2)
        self.rttvar = initial_rtt / 2
        self.min_rtt = 0.0
        self.first_rtt_sample: float | None = None  # when the first sample was taken
        self.pto_count = 0
        self.cc: CongestionController = make_controller(algo)
        self.bytes_in_flight = 0
        self.packet_threshold = K_PACKET_THRESHOLD
        self.time_threshold = K_TIME_THRESHOLD
        self.max_ack_delay = DEFAULT_MAX_ACK_DELAY  # the peer's; PacketSpaces keeps it current
        # The most bytes in flight since _peak_since: was the window what limited us (§7.8)?
        self._peak_flight = 0
        self._peak_since = 0.0
        self._pace_tokens = float(self.cc.cwnd)  # a full initial window may leave at once
        self._pace_time = 0.0
        self.pace_until: float | None = None  # the pacer holds data back until then
        # The congestion period (its start) and how many of its losses are not yet found
        # spurious: at none, the reduction is undone.
        self._period: float | None = None
        self._period_lost = 0
        # PeerCompletedAddressValidation (A.7): always for a server; for a client, once an
        # ACK comes in a Handshake or 1-RTT packet (PacketSpaces sets it up).
        self.peer_validated = True

    @property
    def cwnd(self) -> float:
        return self.cc.cwnd

    # -- sending -------------------------------------------------------------------------

    def on_sent(self, space: PacketSpace, packet: SentPacket) -> None:
        """OnPacketSent (A.5)."""
        space.sent[packet.pn] = packet
        if packet.ack_eliciting:
            space.eliciting_in_flight += 1
            space.last_ack_eliciting_time = packet.time
        if packet.in_flight:
            self.bytes_in_flight += packet.size
            if self.bytes_in_flight > self._peak_flight:
                self._peak_flight = self.bytes_in_flight
            self._pace_tokens -= packet.size

    def can_send(self, size: int) -> bool:
        return self.bytes_in_flight + size <= self.cc.cwnd

    def pacer_allows(self, now: float, size: int) -> bool:
        """§7.7: a token bucket filled at N * cwnd / smoothed_rtt, holding at most the
        initial window (the burst §7.7 allows), released up to kGranularity early; False
        sets pace_until."""
        # Comparisons, not max()/min(): this runs for every datagram.
        cwnd, srtt, last = self.cc.cwnd, self.smoothed_rtt, self._pace_time
        rate = PACING_GAIN * cwnd / (srtt if srtt > K_GRANULARITY else K_GRANULARITY)
        burst = cwnd / 4 if cwnd / 4 > _MIN_BURST else _MIN_BURST
        tokens = self._pace_tokens
        if now > last:  # a caller's clock may step back: no tokens for that
            tokens += rate * (now - last)
            self._pace_time = now
        if tokens > burst:
            tokens = burst
        self._pace_tokens = tokens
        # A packet due within the timer granularity leaves now: sub-millisecond waits
        # cost wake-ups and gain nothing (loopback's window then goes out unpaced).
        early = rate * K_GRANULARITY
        if tokens + early >= size - 1:  # a byte of slack: the timer's float sum may fall short
            return True
        self.pace_until = now + (size - tokens - early) / rate
        return False

    # -- ACKs ----------------------------------------------------------------------------

    def on_ack(self, space: PacketSpace, ack: Ack, ack_delay: float, now: float
               ) -> tuple[list[SentPacket], list[SentPacket]]:
        """OnAckReceived (A.7): (newly acknowledged, newly lost) packets of `space`."""
        if space.declared_lost:
            self._notice_spurious(space, ack)
        acked = self._newly_acked(space, ack)
        if not acked:
            return [], []
        largest = ack.largest
        if space.largest_acked is None or largest > space.largest_acked:
            space.largest_acked = largest
        newest = max(acked, key=lambda p: p.pn)
        if newest.pn == largest and any(p.ack_eliciting for p in acked):
            self._update_rtt(now - newest.time, ack_delay, now)
        grow = self._window_limited(now)
        for packet in acked:
            if packet.in_flight:
                self.bytes_in_flight = max(0, self.bytes_in_flight - packet.size)
                if grow:
                    self.cc.on_acked(packet.size, packet.time, now, self.smoothed_rtt)
        if space.proves_address:
            self.peer_validated = True
        if self.peer_validated:
            self.pto_count = 0  # A.7: a client's Initial ACKs alone keep the backoff
        lost = self.detect_lost(space, now)
        return acked, lost

    @staticmethod
    def _newly_acked(space: PacketSpace, ack: Ack) -> list[SentPacket]:
        acked: list[SentPacket] = []
        sent = space.sent
        for start, end in ack.ranges:
            if end - start <= len(sent):
                acked.extend(sent[pn] for pn in range(start, end) if pn in sent)
            else:
                acked.extend(p for pn, p in sent.items() if start <= pn < end)
        for packet in acked:
            space.remove(packet)
        return acked

    def _update_rtt(self, latest: float, ack_delay: float, now: float) -> None:
        """UpdateRtt (A.7, §5.3); `ack_delay` is already 0 in Initial and Handshake and
        capped at max_ack_delay once the handshake is confirmed (the receiver does that)."""
        self.latest_rtt = latest
        if self.first_rtt_sample is None:
            self.first_rtt_sample = now
            self.min_rtt = latest
            self.smoothed_rtt = latest
            self.rttvar = latest / 2
            return
        self.min_rtt = min(self.min_rtt, latest)
        adjusted = latest - ack_delay if latest >= self.min_rtt + ack_delay else latest
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.smoothed_rtt - adjusted)
        self.smoothed_rtt = 0.875 * self.smoothed_rtt + 0.125 * adjusted

    def _window_limited(self, now: float) -> bool:
        """§7.8: was the window full enough lately for growth to mean something? In slow
        start, half of it in flight; in congestion avoidance, all but three datagrams. The
        peak restarts once per smoothed RTT."""
        cc = self.cc
        peak = self._peak_flight
        if now - self._peak_since >= self.smoothed_rtt:
            self._peak_flight, self._peak_since = self.bytes_in_flight, now
        if cc.cwnd < cc.ssthresh:
            return 2 * peak >= cc.cwnd
        return peak + 3 * MAX_DATAGRAM >= cc.cwnd

    def _notice_spurious(self, space: PacketSpace, ack: Ack) -> None:
        """A packet declared lost that the peer did receive: reordering, not loss; the
        thresholds grow to cover it (§6.1.1 and §6.1.2 allow adapting them)."""
        lost = space.declared_lost
        assert lost is not None
        for start, end in ack.ranges:
            for pn in [pn for pn in lost if start <= pn < end]:
                reordering, period = lost.pop(pn)
                if period is not None and period == self._period:
                    self._period_lost -= 1
                    if self._period_lost == 0:
                        self.cc.undo()
                if reordering >= self.packet_threshold:
                    # at least doubled: reordering measured in packets grows with the rate
                    grown = max(reordering + 1, 2 * self.packet_threshold)
                    self.packet_threshold = min(grown, MAX_PACKET_THRESHOLD)
                else:  # the time threshold declared it
                    self.time_threshold = min(self.time_threshold + TIME_THRESHOLD_STEP, MAX_TIME_THRESHOLD)

    # -- loss ----------------------------------------------------------------------------

    def loss_delay(self) -> float:
        return max(self.time_threshold * max(self.latest_rtt, self.smoothed_rtt), K_GRANULARITY)

    def detect_lost(self, space: PacketSpace, now: float) -> list[SentPacket]:
        """DetectAndRemoveLostPackets (A.10) and OnPacketsLost (B.8)."""
        space.loss_time = None
        largest = space.largest_acked
        if largest is None:
            return []
        delay = self.loss_delay()
        threshold = self.packet_threshold
        lost: list[SentPacket] = []
        for pn, packet in space.sent.items():
            if pn > largest:
                break
            when = packet.time + delay  # the same sum as the timer, so it fires exactly
            if when <= now or largest - pn >= threshold:
                lost.append(packet)
            elif space.loss_time is None or when < space.loss_time:
                space.loss_time = when
        if lost:
            for packet in lost:
                space.remove(packet)
            self.on_lost(lost, now)
            self._remember_lost(space, lost, largest)
        return lost

    def _remember_lost(self, space: PacketSpace, lost: list[SentPacket], largest: int) -> None:
        if space.declared_lost is None:
            space.declared_lost = {}
        remembered = space.declared_lost
        period = self._period
        for packet in lost:
            if packet.ack_eliciting:
                remembered[packet.pn] = (largest - packet.pn, period if packet.in_flight else None)
        while len(remembered) > _DECLARED_LOST_KEPT:
            del remembered[next(iter(remembered))]

    def on_lost(self, lost: list[SentPacket], now: float) -> None:
        """OnPacketsLost (B.8): out of the flight, one congestion event for the newest,
        and persistent congestion when the losses span long enough."""
        newest: float | None = None
        for packet in lost:
            if packet.in_flight:
                self.bytes_in_flight = max(0, self.bytes_in_flight - packet.size)
                if newest is None or packet.time > newest:
                    newest = packet.time
        if newest is None:
            return
        cc = self.cc
        cc.on_congestion_event(newest, now)
        if cc.recovery_start != self._period:
            self._period, self._period_lost = cc.recovery_start, 0
        self._period_lost += sum(1 for p in lost if p.in_flight and p.ack_eliciting)
        if self.in_persistent_congestion(lost):
            cc.on_persistent_congestion()
            self._period = None

    def persistent_congestion_duration(self) -> float:
        """§7.6.1."""
        pto = self.smoothed_rtt + max(4 * self.rttvar, K_GRANULARITY) + self.max_ack_delay
        return pto * K_PERSISTENT_CONGESTION_THRESHOLD

    def in_persistent_congestion(self, lost: list[SentPacket]) -> bool:
        """§7.6.2: two ack-eliciting packets, both sent after the first RTT sample, lost
        further apart in time than the duration, with nothing between them acknowledged
        (`lost` in packet number order, as detect_lost gives it: no gap in the packet
        numbers from the first to the last)."""
        first = self.first_rtt_sample
        if first is None:
            return False
        indices = [i for i, p in enumerate(lost) if p.ack_eliciting and p.time > first]
        if len(indices) < 2:
            return False
        a, b = lost[indices[0]], lost[indices[-1]]
        if b.time - a.time <= self.persistent_congestion_duration():
            return False
        return b.pn - a.pn == indices[-1] - indices[0]

    def forget(self, packets: list[SentPacket]) -> None:
        """Packets of a discarded space leave the flight without loss or ack (§6.4)."""
        for packet in packets:
            self.bytes_in_flight = max(0, self.bytes_in_flight - packet.size)

    # -- timers --------------------------------------------------------------------------

    def pto_interval(self, max_ack_delay: float) -> float:
        """GetPtoTimeAndSpace's duration (A.8): max_ack_delay only in the Application
        space; doubled per consecutive probe timeout."""
        base = self.smoothed_rtt + max(4 * self.rttvar, K_GRANULARITY) + max_ack_delay
        return base * (1 << min(self.pto_count, 16))
