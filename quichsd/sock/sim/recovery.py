"""Loss recovery (RFC 9002, simplified): per packet-number-space bookkeeping, ACK frames
for what we received, RTT estimation, loss detection (packet and time thresholds), the
probe timeout with exponential backoff, and a small NewReno-style congestion window.

Left simple on purpose: no pacing, no persistent-congestion collapse, no ECN, no
PLPMTUD; the window halves once per loss episode and grows by slow start / AIMD.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from .frames import Ack, Frame
from .rangeset import RangeSet

__all__ = ["SentPacket", "SentItem", "CryptoRange", "StreamRange", "PacketSpace", "Recovery", "K_GRANULARITY"]

K_PACKET_THRESHOLD = 3  # RFC 9002 §6.1.1
K_TIME_THRESHOLD = 9 / 8  # §6.1.2
K_GRANULARITY = 0.001  # §6.1.2
MAX_DATAGRAM = 1200
INITIAL_WINDOW = 10 * MAX_DATAGRAM  # §7.2 with 1200-byte datagrams
MINIMUM_WINDOW = 2 * MAX_DATAGRAM
MAX_ACK_RANGES = 32


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
                 "unacked_eliciting", "ack_deadline", "discarded")

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
        return dropped


class Recovery:
    """RTT, congestion window and the loss/PTO computations over all spaces."""

    __slots__ = ("latest_rtt", "smoothed_rtt", "rttvar", "min_rtt", "_has_sample", "pto_count", "cwnd",
                 "ssthresh", "bytes_in_flight", "_recovery_start")

    def __init__(self, initial_rtt: float) -> None:
        self.latest_rtt = 0.0
        self.smoothed_rtt = initial_rtt
        self.rttvar = initial_rtt / 2
        self.min_rtt = 0.0
        self._has_sample = False
        self.pto_count = 0
        self.cwnd: float = INITIAL_WINDOW
        self.ssthresh: float = float("inf")
        self.bytes_in_flight = 0
        self._recovery_start: float | None = None

    # -- sending -------------------------------------------------------------------------

    def on_sent(self, space: PacketSpace, packet: SentPacket) -> None:
        space.sent[packet.pn] = packet
        if packet.ack_eliciting:
            space.eliciting_in_flight += 1
        if packet.in_flight:
            self.bytes_in_flight += packet.size
        if packet.ack_eliciting:
            space.last_ack_eliciting_time = packet.time

    def can_send(self, size: int) -> bool:
        return self.bytes_in_flight + size <= self.cwnd

    # -- ACKs ----------------------------------------------------------------------------

    def on_ack(self, space: PacketSpace, ack: Ack, ack_delay: float, now: float
               ) -> tuple[list[SentPacket], list[SentPacket]]:
        """(newly acknowledged, newly lost) packets of `space`."""
        acked: list[SentPacket] = []
        sent = space.sent
        for start, end in ack.ranges:
            if end - start <= len(sent):
                acked.extend(sent[pn] for pn in range(start, end) if pn in sent)
            else:
                acked.extend(p for pn, p in sent.items() if start <= pn < end)
        if not acked:
            return [], []
        for packet in acked:
            space.remove(packet)
        largest = ack.largest
        if space.largest_acked is None or largest > space.largest_acked:
            space.largest_acked = largest
        newest = max(acked, key=lambda p: p.pn)
        if newest.pn == largest and any(p.ack_eliciting for p in acked):
            self._update_rtt(now - newest.time, ack_delay)
        for packet in acked:
            self._on_packet_acked(packet)
        self.pto_count = 0
        lost = self.detect_lost(space, now)
        return acked, lost

    def _update_rtt(self, latest: float, ack_delay: float) -> None:
        self.latest_rtt = latest
        if not self._has_sample:
            self._has_sample = True
            self.min_rtt = latest
            self.smoothed_rtt = latest
            self.rttvar = latest / 2
            return
        self.min_rtt = min(self.min_rtt, latest)
        adjusted = latest - ack_delay if latest - ack_delay >= self.min_rtt else latest
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.smoothed_rtt - adjusted)
        self.smoothed_rtt = 0.875 * self.smoothed_rtt + 0.125 * adjusted

    def _on_packet_acked(self, packet: SentPacket) -> None:
        if not packet.in_flight:
            return
        self.bytes_in_flight = max(0, self.bytes_in_flight - packet.size)
        if self._recovery_start is not None and packet.time <= self._recovery_start:
            return
        if self.cwnd < self.ssthresh:
            self.cwnd += packet.size
        else:
            self.cwnd += MAX_DATAGRAM * packet.size / self.cwnd

    # -- loss ----------------------------------------------------------------------------

    def loss_delay(self) -> float:
        return max(K_TIME_THRESHOLD * max(self.latest_rtt, self.smoothed_rtt), K_GRANULARITY)

    def detect_lost(self, space: PacketSpace, now: float) -> list[SentPacket]:
        space.loss_time = None
        largest = space.largest_acked
        if largest is None:
            return []
        delay = self.loss_delay()
        lost: list[SentPacket] = []
        for pn, packet in space.sent.items():
            if pn > largest:
                break
            when = packet.time + delay  # the same sum as the timer, so it fires exactly
            if when <= now or largest - pn >= K_PACKET_THRESHOLD:
                lost.append(packet)
            else:
                if space.loss_time is None or when < space.loss_time:
                    space.loss_time = when
        for packet in lost:
            space.remove(packet)
        self.on_lost(lost, now)
        return lost

    def on_lost(self, lost: list[SentPacket], now: float) -> None:
        in_flight = [p for p in lost if p.in_flight]
        if not in_flight:
            return
        for packet in in_flight:
            self.bytes_in_flight = max(0, self.bytes_in_flight - packet.size)
        newest = max(p.time for p in in_flight)
        if self._recovery_start is None or newest > self._recovery_start:
            self._recovery_start = now
            self.cwnd = max(self.cwnd / 2, MINIMUM_WINDOW)
            self.ssthresh = self.cwnd

    def forget(self, packets: list[SentPacket]) -> None:
        """Packets of a discarded space leave the flight without loss or ack."""
        for packet in packets:
            self.bytes_in_flight = max(0, self.bytes_in_flight - packet.size)

    # -- timers --------------------------------------------------------------------------

    def pto_interval(self, max_ack_delay: float) -> float:
        base = self.smoothed_rtt + max(4 * self.rttvar, K_GRANULARITY) + max_ack_delay
        return base * (1 << min(self.pto_count, 16))
