"""Datagram PLPMTUD (RFC 8899 §5, RFC 9000 §14.3): the search for the largest datagram a
path carries, with PING+PADDING probes. Sans-I/O: the caller sends the probe, tells this
which packet number it went in, and reports the ACKs and its probe timer.

Matches lxin/quic (net/quic/path.c quic_path_pl_send/_recv/_reset/_confirm): a search
from BASE_PLPMTU up in steps of 32 bytes until a size fails three times, then in steps of
4 bytes below that size; a confirmed size that fails three times is a black hole (§4.3)
and the search falls back to BASE_PLPMTU. Probing is off unless QUIC_SOCKOPT_CONFIG sets
plpmtud_probe_interval (microseconds, 0 = off); a probe goes out when that timer fires and
right after a probe is acknowledged, and a complete search probes again after 30 intervals.
One difference: probes stay within the peer's max_udp_payload_size (RFC 9000 §14.3 "MUST
NOT"), where the kernel clamps only the packets it sends after the search.
"""
from __future__ import annotations

import errno
from collections.abc import Container
from dataclasses import dataclass
from enum import Enum

__all__ = ["BASE_PLPMTU", "MAX_PLPMTU", "MAX_PROBES", "MIN_PROBE_INTERVAL_US", "RAISE_TIMER_FACTOR",
           "PlState", "ProbeAcked", "PmtuSearch", "PmtuProbing", "check_probe_interval"]

BASE_PLPMTU = 1200  # RFC 9000 §14.1: every QUIC path carries this
MAX_PLPMTU = 9000  # the kernel's search ceiling (jumbo frames)
MAX_PROBES = 3  # RFC 8899 §5.1.2 MAX_PROBES
BIG_STEP = 32
MIN_STEP = 4
MIN_PROBE_INTERVAL_US = 5_000_000  # net/quic/timer.h QUIC_MIN_PROBE_TIMEOUT
RAISE_TIMER_FACTOR = 30  # a complete search tries a larger size after 30 intervals
_U32_MAX = 0xFFFFFFFF


def check_probe_interval(interval_us: int) -> None:
    """QUIC_SOCKOPT_CONFIG's plpmtud_probe_interval as the kernel checks it: 0 leaves the
    current value; below 5 s or above U32_MAX / 30 is EINVAL (net/quic/socket.c)."""
    if interval_us and not MIN_PROBE_INTERVAL_US <= interval_us <= _U32_MAX // RAISE_TIMER_FACTOR:
        raise OSError(errno.EINVAL, "plpmtud_probe_interval out of range")


class PlState(Enum):
    """RFC 8899 §5.2 states (DISABLED is `PmtuSearch.enabled` false)."""
    BASE = 1
    SEARCH = 2
    COMPLETE = 3
    ERROR = 4


@dataclass(frozen=True)
class ProbeAcked:
    """What an acknowledged probe changes: the datagram size to use from now (None: as
    before), whether to probe again at once, and whether the probe timer becomes the
    30-interval raise timer."""
    new_pmtu: int | None
    probe_again: bool
    raise_timer: bool


class PmtuSearch:
    """One path's search state. `pmtu` is the confirmed datagram size (UDP payload)."""

    __slots__ = ("ceiling", "state", "pmtu", "probe_size", "probe_high", "probe_count", "probe_pn")

    def __init__(self, ceiling: int = MAX_PLPMTU) -> None:
        self.ceiling = max(BASE_PLPMTU, min(ceiling, MAX_PLPMTU))
        self.reset()

    def reset(self) -> None:
        """A new path (quic_path_pl_reset)."""
        self.state = PlState.BASE
        self.pmtu = BASE_PLPMTU
        self.probe_size = BASE_PLPMTU
        self.probe_high = 0  # the smallest size that failed; 0: none yet
        self.probe_count = 0
        self.probe_pn: int | None = None

    def set_ceiling(self, max_udp_payload_size: int) -> None:
        """The peer's max_udp_payload_size (RFC 9000 §18.2) bounds every probe."""
        self.ceiling = max(BASE_PLPMTU, min(self.ceiling, max_udp_payload_size))
        self.probe_size = min(self.probe_size, self.ceiling)

    def on_probe_sent(self, pn: int) -> int | None:
        """A probe of `probe_size` bytes went out in packet `pn`; the previous probe, if any,
        was not acknowledged. Returns the new datagram size when probes failed MAX_PROBES
        times at a confirmed size (black hole, RFC 8899 §4.3) or at BASE_PLPMTU."""
        self.probe_pn = pn
        new_pmtu = None
        if self.probe_count >= MAX_PROBES:
            self.probe_count = 0
            new_pmtu = self._probes_failed()
        self.probe_count += 1
        return new_pmtu

    def _probes_failed(self) -> int | None:
        if self.state is PlState.BASE:
            if self.probe_size == BASE_PLPMTU:  # BASE_PLPMTU confirmation failed
                self.state = PlState.ERROR
                self.pmtu = BASE_PLPMTU
                return BASE_PLPMTU
            return None
        if self.state in (PlState.SEARCH, PlState.COMPLETE) and self.pmtu == self.probe_size:
            self.state = PlState.BASE  # black hole detected
            self.probe_size = BASE_PLPMTU
            self.probe_high = 0
            self.pmtu = BASE_PLPMTU
            return BASE_PLPMTU
        if self.state is PlState.SEARCH:  # this size is too big: search below it
            self.probe_high = self.probe_size
            self.probe_size = self.pmtu
        return None

    def confirms(self, smallest: int, largest: int) -> bool:
        """Whether an ACK range of the Application space covers the outstanding probe."""
        return self.probe_pn is not None and smallest <= self.probe_pn <= largest

    def on_probe_acked(self) -> ProbeAcked:
        """The outstanding probe was acknowledged: `probe_size` is confirmed."""
        self.probe_pn = None
        self.pmtu = self.probe_size
        self.probe_count = 0
        state = self.state
        if state in (PlState.BASE, PlState.ERROR):
            self.state = PlState.SEARCH
            self.probe_size = min(self.probe_size + BIG_STEP, self.ceiling)
            return ProbeAcked(self.pmtu if state is PlState.ERROR else None, True, False)
        if state is PlState.COMPLETE:  # the raise timer's probe went through
            self.state = PlState.SEARCH
            self.probe_size = min(self.probe_size + MIN_STEP, self.ceiling)
            return ProbeAcked(None, True, False)
        return self._search_step()

    def _search_step(self) -> ProbeAcked:
        if not self.probe_high:
            if self.probe_size < self.ceiling:
                self.probe_size = min(self.probe_size + BIG_STEP, self.ceiling)
                return ProbeAcked(None, True, False)
            self.probe_high = self.ceiling
        self.probe_size += MIN_STEP
        if self.probe_size < self.probe_high:
            return ProbeAcked(None, True, False)
        self.probe_high = 0
        self.state = PlState.COMPLETE
        self.probe_size = self.pmtu
        return ProbeAcked(self.pmtu, False, True)


class PmtuProbing:
    """A connection's probing: the search, its timer, and the outstanding probe's fate as
    seen from the sender's packet records (a probe is acknowledged when it leaves the
    sent packets without being declared lost)."""

    __slots__ = ("search", "interval", "deadline", "due")

    def __init__(self, interval_us: int) -> None:
        self.search = PmtuSearch()
        self.interval = interval_us / 1e6
        self.deadline: float | None = None  # None: not started (before the handshake is confirmed)
        self.due = False  # a probe should leave with the next datagrams

    def start(self, now: float, max_udp_payload_size: int) -> None:
        """The handshake is done: the first probe goes one interval later (socket.c starts
        QUIC_TIMER_PMTU at ESTABLISHED)."""
        self.search.set_ceiling(max_udp_payload_size)
        self.deadline = now + self.interval

    def on_timer(self, now: float) -> None:
        if self.deadline is not None and now >= self.deadline:
            self.due = True
            self.deadline = now + self.interval

    def on_probe_sent(self, pn: int, now: float) -> int | None:
        """The probe went in packet `pn`; the timer restarts. Returns a smaller datagram
        size when a black hole was detected."""
        self.due = False
        self.deadline = now + self.interval
        return self.search.on_probe_sent(pn)

    def check_probe(self, sent: Container[int], declared_lost: Container[int] | None,
                    now: float) -> int | None:
        """After ACKs were processed: the new datagram size if the outstanding probe was
        acknowledged and that completed the search. A probe declared lost waits for the
        timer, which counts it as failed (quic_path_pl_send)."""
        pn = self.search.probe_pn
        if pn is None or pn in sent:
            return None
        if declared_lost is not None and pn in declared_lost:
            self.search.probe_pn = None
            return None
        acked = self.search.on_probe_acked()
        self.due = acked.probe_again
        if acked.raise_timer:
            self.deadline = now + self.interval * RAISE_TIMER_FACTOR
        return acked.new_pmtu
