"""RFC 9002 loss recovery and congestion control (recovery.py, congestion.py) rule by rule,
against a fake clock: the numbers are the RFC's constants and pseudocode (Appendix A, B) and
RFC 9438's CUBIC equations."""
from __future__ import annotations

import pytest

from quichsd.sock.sim.congestion import (
    CUBIC,
    CUBIC_ALPHA,
    CUBIC_BETA,
    CUBIC_C,
    INITIAL_WINDOW,
    MAX_DATAGRAM,
    MINIMUM_WINDOW,
    RENO,
    Cubic,
    NewReno,
    make_controller,
)
from quichsd.sock.sim.frames import Ack
from quichsd.sock.sim.levels import APP, HANDSHAKE, INITIAL
from quichsd.sock.sim.recovery import K_GRANULARITY, PacketSpace, Recovery, SentPacket
from quichsd.sock.sim.spaces import PacketSpaces

T0 = 1000.0


def _send(rec: Recovery, space: PacketSpace, t: float, n: int = 1, size: int = MAX_DATAGRAM) -> list[int]:
    pns = []
    for _ in range(n):
        pn = space.next_pn
        space.next_pn += 1
        rec.on_sent(space, SentPacket(pn, t, size, True, True))
        pns.append(pn)
    return pns


def _ack(*ranges: tuple[int, int]) -> Ack:
    """ACK of [start, end) ranges, given highest first."""
    return Ack(tuple(ranges), 0)


def test_initial_rtt_is_333ms_and_pto_backs_off():
    rec = PacketSpaces(0.333).recovery  # CONFIG_DEFAULTS initial_smoothed_rtt, as the kernel
    assert rec.smoothed_rtt == pytest.approx(0.333) and rec.rttvar == pytest.approx(0.1665)
    base = 0.333 + 4 * 0.1665  # §6.2.1: no max_ack_delay outside the Application space
    assert rec.pto_interval(0.0) == pytest.approx(base)
    rec.pto_count = 3
    assert rec.pto_interval(0.025) == pytest.approx((base + 0.025) * 8)


def test_rtt_first_sample_then_ewma_with_ack_delay():
    rec, space = Recovery(0.333), PacketSpace()
    _send(rec, space, T0, 2)
    rec.on_ack(space, _ack((0, 1)), 0.0, T0 + 0.100)  # §5.3 first sample
    assert (rec.smoothed_rtt, rec.rttvar, rec.min_rtt) == pytest.approx((0.100, 0.050, 0.100))
    rec.on_ack(space, _ack((0, 2)), 0.010, T0 + 0.130)  # latest 0.130, adjusted by the delay to 0.120
    assert rec.min_rtt == pytest.approx(0.100)
    assert rec.rttvar == pytest.approx(0.75 * 0.050 + 0.25 * abs(0.100 - 0.120))
    assert rec.smoothed_rtt == pytest.approx(0.875 * 0.100 + 0.125 * 0.120)


def test_ack_delay_not_subtracted_below_min_rtt():
    rec, space = Recovery(0.333), PacketSpace()
    _send(rec, space, T0, 2)
    rec.on_ack(space, _ack((0, 1)), 0.0, T0 + 0.100)
    rec.on_ack(space, _ack((0, 2)), 0.050, T0 + 0.120)  # 0.120 - 0.050 < min_rtt: unadjusted
    assert rec.smoothed_rtt == pytest.approx(0.875 * 0.100 + 0.125 * 0.120)


def test_rtt_sample_only_when_largest_newly_acked():
    rec, space = Recovery(0.333), PacketSpace()
    _send(rec, space, T0, 3)
    rec.on_ack(space, _ack((2, 3)), 0.0, T0 + 0.050)
    rec.on_ack(space, _ack((2, 3), (0, 1)), 0.0, T0 + 0.500)  # largest 2 acked before: no sample
    assert rec.latest_rtt == pytest.approx(0.050)


def test_packet_threshold_is_three():
    rec, space = Recovery(0.100), PacketSpace()
    _send(rec, space, T0, 5)
    _, lost = rec.on_ack(space, _ack((3, 4)), 0.0, T0 + 0.010)  # 0 is 3 behind 3; 1 and 2 are not
    assert [p.pn for p in lost] == [0]
    _, lost = rec.on_ack(space, _ack((4, 5)), 0.0, T0 + 0.011)
    assert [p.pn for p in lost] == [1]


def test_time_threshold_is_nine_eighths_rtt_and_arms_the_loss_timer():
    rec, space = Recovery(0.333), PacketSpace()
    _send(rec, space, T0)
    _send(rec, space, T0 + 0.010)
    _, lost = rec.on_ack(space, _ack((1, 2)), 0.0, T0 + 0.110)  # rtt 0.100: delay 0.1125
    assert lost == [] and space.loss_time == pytest.approx(T0 + 9 / 8 * 0.100)
    assert rec.loss_delay() == pytest.approx(9 / 8 * 0.100)
    assert [p.pn for p in rec.detect_lost(space, space.loss_time)] == [0]  # when the timer fires


def test_loss_delay_at_least_granularity():
    rec = Recovery(0.333)
    rec.latest_rtt = rec.smoothed_rtt = 0.0001
    assert rec.loss_delay() == K_GRANULARITY == 0.001


def test_reno_slow_start_congestion_avoidance_and_one_reduction_per_period():
    cc = NewReno()
    assert cc.cwnd == INITIAL_WINDOW == 12000 and MINIMUM_WINDOW == 2400
    cc.on_acked(1200, T0, T0 + 0.1, 0.1)
    assert cc.cwnd == 13200  # slow start: + bytes acked
    cc.on_congestion_event(T0 + 0.05, T0 + 0.2)
    assert cc.ssthresh == 6600 and cc.cwnd == 6600  # kLossReductionFactor 0.5
    cc.on_congestion_event(T0 + 0.15, T0 + 0.3)  # sent before the period began: same event
    assert cc.cwnd == 6600
    cc.on_acked(1200, T0 + 0.1, T0 + 0.3, 0.1)  # sent in the period: no growth
    assert cc.cwnd == 6600
    cc.on_acked(1200, T0 + 0.25, T0 + 0.4, 0.1)  # congestion avoidance: MSS * acked / cwnd
    assert cc.cwnd == pytest.approx(6600 + 1200 * 1200 / 6600)
    cc.on_congestion_event(T0 + 0.35, T0 + 0.5)
    cc.on_congestion_event(T0 + 0.45, T0 + 0.6)
    cc.on_congestion_event(T0 + 0.55, T0 + 0.7)
    assert cc.cwnd == MINIMUM_WINDOW  # never below kMinimumWindow


def test_persistent_congestion_collapses_the_window():
    rec, space = Recovery(0.333), PacketSpace()
    _send(rec, space, T0)
    rec.on_ack(space, _ack((0, 1)), 0.0, T0 + 0.100)  # first sample: srtt 0.1, rttvar 0.05
    duration = (0.100 + 4 * 0.050 + rec.max_ack_delay) * 3
    assert rec.persistent_congestion_duration() == pytest.approx(duration)
    t = T0 + 0.2
    _send(rec, space, t)  # pn 1
    _send(rec, space, t + duration + 0.2)  # pn 2: the span exceeds the duration
    _send(rec, space, t + duration + 0.21, 3)  # pns 3-5
    _, lost = rec.on_ack(space, _ack((5, 6)), 0.0, t + duration + 0.25)
    assert rec.persistent_congestion_duration() < duration + 0.2  # with this ACK's sample
    assert [p.pn for p in lost] == [1, 2]
    assert rec.cwnd == MINIMUM_WINDOW and rec.cc.recovery_start is None


def test_no_persistent_congestion_when_a_packet_between_was_acked():
    rec, space = Recovery(0.333), PacketSpace()
    _send(rec, space, T0)
    rec.on_ack(space, _ack((0, 1)), 0.0, T0 + 0.100)
    duration = rec.persistent_congestion_duration()
    t = T0 + 0.2
    _send(rec, space, t)
    _send(rec, space, t + duration / 2)
    _send(rec, space, t + duration + 0.01)
    _send(rec, space, t + duration + 0.02, 3)
    _, lost = rec.on_ack(space, _ack((5, 7), (2, 3)), 0.0, t + duration + 0.05)
    assert [p.pn for p in lost] == [1, 3]
    # an ordinary congestion event: the window (grown by the three packets acked) halved
    assert rec.cwnd == (INITIAL_WINDOW + 3 * MAX_DATAGRAM) / 2


def test_no_persistent_congestion_before_the_first_rtt_sample():
    rec = Recovery(0.333)
    lost = [SentPacket(0, T0, 1200, True, True), SentPacket(1, T0 + 10, 1200, True, True)]
    assert not rec.in_persistent_congestion(lost)


def test_discarding_a_space_resets_pto_count_and_the_flight():
    spaces = PacketSpaces(0.333)
    rec = spaces.recovery
    _send(rec, spaces.by_id[0], T0, 2)
    rec.pto_count = 2
    spaces.discard(0)
    assert rec.pto_count == 0 and rec.bytes_in_flight == 0  # A.11 OnPacketNumberSpaceDiscarded


def test_spurious_loss_raises_the_packet_threshold():
    rec, space = Recovery(0.100), PacketSpace()
    _send(rec, space, T0, 8)
    _, lost = rec.on_ack(space, _ack((5, 6)), 0.0, T0 + 0.010)
    assert [p.pn for p in lost] == [0, 1, 2]
    rec.on_ack(space, _ack((5, 6), (0, 1)), 0.0, T0 + 0.011)  # 0 arrived after all: reordered by 5
    assert rec.packet_threshold == 6


def test_window_grows_only_when_it_limited_the_sender():
    rec, space = Recovery(0.100), PacketSpace()
    _send(rec, space, T0, 1)  # one packet in flight against a 12000-byte window
    rec.on_ack(space, _ack((0, 1)), 0.0, T0 + 0.1)
    assert rec.cwnd == INITIAL_WINDOW
    _send(rec, space, T0 + 0.2, 10)  # the window full
    rec.on_ack(space, _ack((1, 11)), 0.0, T0 + 0.3)
    assert rec.cwnd == INITIAL_WINDOW + 10 * MAX_DATAGRAM


def test_pacer_spreads_a_window_over_the_rtt():
    rec, space = Recovery(0.100), PacketSpace()
    now = T0
    rec.pacer_allows(now, MAX_DATAGRAM)
    sent = 0
    while rec.pacer_allows(now, MAX_DATAGRAM):
        _send(rec, space, now)
        sent += 1
    assert sent == 10  # the burst §7.7 allows: the initial window
    assert rec.pace_until is not None
    rate = 1.25 * rec.cwnd / 0.100
    # the next one is due when its bytes have accrued, less the 1 ms it may leave early
    assert rec.pace_until - now == pytest.approx(MAX_DATAGRAM / rate - K_GRANULARITY, rel=0.01)
    assert rec.pacer_allows(rec.pace_until, MAX_DATAGRAM)


def test_config_selects_the_controller_reno_by_default():
    assert type(make_controller(RENO)) is NewReno and type(make_controller(CUBIC)) is Cubic
    assert type(PacketSpaces(0.333).recovery.cc) is NewReno  # the kernel's default (cong.c)
    assert type(PacketSpaces(0.333, CUBIC).recovery.cc) is Cubic


def test_cubic_reduction_k_and_window_curve():
    cc = Cubic()
    cc.cwnd = 100 * MAX_DATAGRAM
    cc.on_congestion_event(T0, T0 + 0.01)
    assert cc.w_max == 100 and cc.cwnd == pytest.approx(70 * MAX_DATAGRAM)  # beta 0.7
    assert cc.ssthresh == pytest.approx(70 * MAX_DATAGRAM)
    cc.on_acked(MAX_DATAGRAM, T0 + 0.02, T0 + 1.0, 0.1)  # the epoch starts
    k = (100 * (1 - CUBIC_BETA) / CUBIC_C) ** (1 / 3)  # Eq. 2: cbrt(W_max (1 - beta) / C)
    assert cc.k == pytest.approx(k)
    assert cc.w_cubic(0) == pytest.approx(70 * MAX_DATAGRAM)
    assert cc.w_cubic(k) == pytest.approx(100 * MAX_DATAGRAM)  # the plateau at W_max, at K
    assert cc.w_cubic(k + 1) == pytest.approx((CUBIC_C + 100) * MAX_DATAGRAM)


def test_cubic_grows_toward_w_max_and_at_most_half_per_rtt():
    cc = Cubic()
    cc.cwnd = 100 * MAX_DATAGRAM
    cc.on_congestion_event(T0, T0)
    epoch = T0 + 0.01
    cc.on_acked(MAX_DATAGRAM, epoch, epoch, 0.1)
    before = cc.cwnd
    t = cc.k / 2
    target = min(max(cc.w_cubic(t + 0.1), before), 1.5 * before)
    cc.on_acked(MAX_DATAGRAM, epoch, epoch + t, 0.1)
    assert cc.cwnd == pytest.approx(before + (target - before) * MAX_DATAGRAM / before)


def test_cubic_reno_friendly_estimate():
    cc = Cubic()
    cc.cwnd = 100 * MAX_DATAGRAM
    cc.on_congestion_event(T0, T0)
    cc.on_acked(MAX_DATAGRAM, T0 + 0.01, T0 + 0.01, 0.1)
    w_est = cc.w_est
    cwnd = cc.cwnd
    cc.on_acked(MAX_DATAGRAM, T0 + 0.01, T0 + 0.01, 0.1)  # t = 0: W_cubic = cwnd_epoch < W_est
    assert cc.w_est == pytest.approx(w_est + CUBIC_ALPHA * MAX_DATAGRAM * MAX_DATAGRAM / cwnd)
    assert cc.cwnd == pytest.approx(cc.w_est)
    assert pytest.approx(3 * 0.3 / 1.7) == CUBIC_ALPHA


def test_cubic_fast_convergence():
    cc = Cubic()
    cc.cwnd = 100 * MAX_DATAGRAM
    cc.on_congestion_event(T0, T0)
    cc.on_congestion_event(T0 + 1, T0 + 2)  # again below the previous W_max (70 < 100)
    assert cc.w_max == pytest.approx(70 * (1 + CUBIC_BETA) / 2)
    assert cc.cwnd == pytest.approx(70 * CUBIC_BETA * MAX_DATAGRAM)


def test_congestion_event_undone_when_all_its_losses_were_spurious():
    rec, space = Recovery(0.100), PacketSpace()
    _send(rec, space, T0, 12)  # a full initial window: growth counts
    _, lost = rec.on_ack(space, _ack((5, 6)), 0.0, T0 + 0.010)
    assert [p.pn for p in lost] == [0, 1, 2]
    before = rec.cwnd
    _, lost = rec.on_ack(space, _ack((5, 7)), 0.0, T0 + 0.011)
    assert [p.pn for p in lost] == [3] and rec.cwnd == before  # the same period: no growth
    rec.on_ack(space, _ack((5, 7), (0, 3)), 0.0, T0 + 0.012)  # 0-2 arrived late, 3 not yet
    assert rec.cwnd == before
    rec.on_ack(space, _ack((5, 7), (0, 4)), 0.0, T0 + 0.013)  # and 3: none of it was loss
    # back to the window before the event (grown by packet 5's acknowledgement)
    assert rec.cwnd == INITIAL_WINDOW + MAX_DATAGRAM and rec.cc.ssthresh == float("inf")


def test_cubic_undo_restores_w_max():
    cc = Cubic()
    cc.cwnd = 50 * MAX_DATAGRAM
    cc.on_congestion_event(T0, T0)
    cc.cwnd = 100 * MAX_DATAGRAM
    cc.on_congestion_event(T0 + 1, T0 + 2)
    assert cc.w_max == 100
    cc.undo()
    assert cc.w_max == 50 and cc.cwnd == 100 * MAX_DATAGRAM and cc.epoch_start is None


def test_no_application_pto_before_the_handshake_is_confirmed():
    """A.8: the Application space arms no probe timeout until the handshake is confirmed
    (SimConnection passes lifecycle.handshake_confirmed); the other spaces do."""
    spaces = PacketSpaces(0.100)
    rec = spaces.recovery
    _send(rec, spaces.by_id[APP], T0)
    assert spaces.loss_timer(app_probes=False, max_ack_delay=0.025) is None
    when, sid, is_loss = spaces.loss_timer(app_probes=True, max_ack_delay=0.025)
    assert (sid, is_loss) == (APP, False) and when == pytest.approx(T0 + 0.100 + 4 * 0.050 + 0.025)
    _send(rec, spaces.by_id[HANDSHAKE], T0 + 0.5)
    when, sid, _ = spaces.loss_timer(app_probes=False, max_ack_delay=0.025)
    assert sid == HANDSHAKE and when == pytest.approx(T0 + 0.5 + 0.100 + 4 * 0.050)  # no max_ack_delay


def test_client_initial_acks_keep_the_pto_backoff_until_the_server_validated_it():
    """A.7: pto_count is reset only once the peer completed address validation: a server
    always, a client once an ACK arrives beyond the Initial space."""
    spaces = PacketSpaces(0.333, is_client=True)
    rec = spaces.recovery
    initial, handshake = spaces.by_id[INITIAL], spaces.by_id[HANDSHAKE]
    _send(rec, initial, T0, 2)
    rec.pto_count = 2
    rec.on_ack(initial, _ack((0, 1)), 0.0, T0 + 0.1)
    assert rec.pto_count == 2
    _send(rec, handshake, T0 + 0.2)
    rec.on_ack(handshake, _ack((0, 1)), 0.0, T0 + 0.3)
    assert rec.pto_count == 0 and rec.peer_validated
    server = PacketSpaces(0.333).recovery
    server_initial = PacketSpace()
    _send(server, server_initial, T0)
    server.pto_count = 2
    server.on_ack(server_initial, _ack((0, 1)), 0.0, T0 + 0.1)
    assert server.pto_count == 0
