"""Congestion controllers for the simulation, chosen as the kernel chooses them through
QUIC_SOCKOPT_CONFIG's congestion_control_algo (spec kernel-quic-abi §1.4: 0 Reno, the
kernel's default, 1 CUBIC): NewReno as RFC 9002 §7 and Appendix B write it, CUBIC as RFC
9438 §4 (without HyStart++, which lxin/quic's CUBIC adds to slow start).

Windows are in bytes; a controller sees each newly acknowledged in-flight packet, the
congestion events (the send time of the newest lost packet) and persistent congestion.
Recovery (recovery.py) decides when each happens.
"""
from __future__ import annotations

__all__ = ["CongestionController", "NewReno", "Cubic", "make_controller", "RENO", "CUBIC",
           "MAX_DATAGRAM", "INITIAL_WINDOW", "MINIMUM_WINDOW"]

RENO, CUBIC = 0, 1  # enum quic_cong_algo
MAX_DATAGRAM = 1200
INITIAL_WINDOW = min(10 * MAX_DATAGRAM, max(14720, 2 * MAX_DATAGRAM))  # RFC 9002 §7.2
MINIMUM_WINDOW = 2 * MAX_DATAGRAM  # kMinimumWindow, §7.2
LOSS_REDUCTION = 0.5  # kLossReductionFactor, §7.3.2


class CongestionController:
    """What both controllers share: the window, slow start's threshold and the start of
    the current recovery period (RFC 9002 Appendix B.2)."""

    __slots__ = ("cwnd", "ssthresh", "recovery_start", "_prior")

    def __init__(self) -> None:
        self.cwnd: float = INITIAL_WINDOW
        self.ssthresh: float = float("inf")
        self.recovery_start: float | None = None
        self._prior: tuple[float, ...] | None = None  # the state before the last reduction

    def in_recovery(self, sent_time: float) -> bool:
        """InCongestionRecovery (B.5): sent before the current recovery period began."""
        return self.recovery_start is not None and sent_time <= self.recovery_start

    def on_acked(self, size: int, sent_time: float, now: float, rtt: float) -> None:
        """OnPacketsAcked (B.5) for one packet; the caller skips it when the window was
        not what limited the sender (§7.8)."""
        if self.in_recovery(sent_time):
            return  # no growth during recovery
        if self.cwnd < self.ssthresh:
            self.cwnd += size  # slow start
        else:
            self._avoid_congestion(size, now, rtt)

    def _avoid_congestion(self, size: int, now: float, rtt: float) -> None:
        self.cwnd += MAX_DATAGRAM * size / self.cwnd

    def on_congestion_event(self, sent_time: float, now: float) -> None:
        """OnCongestionEvent (B.6): once per recovery period."""
        if self.in_recovery(sent_time):
            return
        self.recovery_start = now
        self._prior = self._snapshot()
        self._reduce()

    def undo(self) -> None:
        """Every loss of the last congestion event was spurious (the packets arrived,
        late): the window and threshold go back to what they were before it (beyond
        RFC 9002, as TCP's undo: reordering is no congestion signal)."""
        if self._prior is not None:
            self._restore(self._prior)
            self._prior = None

    def _snapshot(self) -> tuple[float, ...]:
        return (self.cwnd, self.ssthresh)

    def _restore(self, prior: tuple[float, ...]) -> None:
        self.cwnd = max(self.cwnd, prior[0])
        self.ssthresh = prior[1]

    def _reduce(self) -> None:
        self.ssthresh = self.cwnd * LOSS_REDUCTION
        self.cwnd = max(self.ssthresh, MINIMUM_WINDOW)

    def on_persistent_congestion(self) -> None:
        """§7.6.2 / B.8: back to the minimum window; the next loss starts a new period."""
        self.cwnd = MINIMUM_WINDOW
        self.recovery_start = None
        self._prior = None  # no undo past a collapse


class NewReno(CongestionController):
    __slots__ = ()


CUBIC_C = 0.4  # RFC 9438 §5.1, in segments per second cubed
CUBIC_BETA = 0.7  # §4.6
CUBIC_ALPHA = 3 * (1 - CUBIC_BETA) / (1 + CUBIC_BETA)  # §4.3, the Reno-friendly slope


class Cubic(CongestionController):
    """RFC 9438: the window follows W_cubic(t) = C (t - K)^3 + W_max (segments, t seconds
    into the congestion-avoidance epoch), never below the Reno-friendly estimate W_est."""

    __slots__ = ("w_max", "k", "epoch_start", "cwnd_epoch", "w_est")

    def __init__(self) -> None:
        super().__init__()
        self.w_max = 0.0  # segments, before the last reduction
        self.k = 0.0
        self.epoch_start: float | None = None
        self.cwnd_epoch = 0.0
        self.w_est = 0.0  # bytes

    def w_cubic(self, t: float) -> float:
        """Eq. 1, in bytes."""
        return (CUBIC_C * (t - self.k) ** 3 + self.w_max) * MAX_DATAGRAM

    def _start_epoch(self, now: float) -> None:
        """§4.2: K from W_max and the window the epoch starts with (Eq. 2)."""
        self.epoch_start = now
        self.cwnd_epoch = self.cwnd
        self.w_est = self.cwnd
        segments = self.cwnd / MAX_DATAGRAM
        if self.w_max < segments:
            self.w_max = segments  # no loss yet, or grown past it: the plateau is here
        self.k = ((self.w_max - segments) / CUBIC_C) ** (1 / 3)

    def _avoid_congestion(self, size: int, now: float, rtt: float) -> None:
        if self.epoch_start is None:
            self._start_epoch(now)
        assert self.epoch_start is not None
        t = now - self.epoch_start
        # §4.3: W_est grows as Reno would, alpha becoming 1 once past the old W_max.
        alpha = 1.0 if self.w_est >= self.w_max * MAX_DATAGRAM else CUBIC_ALPHA
        self.w_est += alpha * MAX_DATAGRAM * size / self.cwnd
        if self.w_cubic(t) < self.w_est:
            self.cwnd = self.w_est  # Reno-friendly region
            return
        # §4.4/4.5: aim at W_cubic one RTT ahead, within [cwnd, 1.5 cwnd].
        target = min(max(self.w_cubic(t + rtt), self.cwnd), 1.5 * self.cwnd)
        self.cwnd += (target - self.cwnd) * size / self.cwnd

    def _snapshot(self) -> tuple[float, ...]:
        return (self.cwnd, self.ssthresh, self.w_max)

    def _restore(self, prior: tuple[float, ...]) -> None:
        super()._restore(prior)
        self.w_max = prior[2]
        self.epoch_start = None

    def _reduce(self) -> None:
        segments = self.cwnd / MAX_DATAGRAM
        # §4.7 fast convergence: a plateau lower than the last one is given up sooner.
        self.w_max = segments * (1 + CUBIC_BETA) / 2 if segments < self.w_max else segments
        self.ssthresh = max(self.cwnd * CUBIC_BETA, MINIMUM_WINDOW)  # §4.6
        self.cwnd = self.ssthresh
        self.epoch_start = None

    def on_persistent_congestion(self) -> None:
        super().on_persistent_congestion()
        self.epoch_start = None  # §4.8: a new epoch after the restart from the minimum


def make_controller(algo: int) -> CongestionController:
    """The controller for congestion_control_algo (0 Reno, 1 CUBIC; anything else was
    refused by the socket option: EINVAL, spec §1.4)."""
    return Cubic() if algo == CUBIC else NewReno()
