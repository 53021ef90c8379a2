"""The PLPMTUD search (quichsd/sock/sim/pmtud.py) against paths of known MTU: where it
settles, how many probes it takes, black-hole fallback, the probe-interval check."""
from __future__ import annotations

import errno

import pytest

from quichsd.sock.sim.pmtud import (
    BASE_PLPMTU,
    MAX_PLPMTU,
    MAX_PROBES,
    PlState,
    PmtuSearch,
    check_probe_interval,
)


class Path:
    """Probes of up to `mtu` bytes are acknowledged; larger ones are lost. Counts timer
    expiries: a lost probe is noticed only when the probe timer fires again."""

    def __init__(self, search: PmtuSearch, mtu: int) -> None:
        self.search, self.mtu, self.pn, self.timer_fires = search, mtu, 0, 0
        self.applied: list[int] = []

    def fire_timer(self) -> None:
        self.timer_fires += 1
        while True:
            self.pn += 1
            new = self.search.on_probe_sent(self.pn)
            if new is not None:
                self.applied.append(new)
            if self.search.probe_size > self.mtu:
                return  # lost: wait for the next expiry
            assert self.search.confirms(self.pn, self.pn)
            acked = self.search.on_probe_acked()
            if acked.new_pmtu is not None:
                self.applied.append(acked.new_pmtu)
            if not acked.probe_again:
                return

    def run_until_complete(self, limit: int = 200) -> None:
        for _ in range(limit):
            self.fire_timer()
            if self.search.state is PlState.COMPLETE:
                return
        raise AssertionError(f"no completion after {limit} timer expiries")


def expected_pmtu(mtu: int, ceiling: int = MAX_PLPMTU) -> int:
    """The search probes 1200 + 4k bytes (32-byte steps, then 4-byte ones) and the ceiling."""
    return ceiling if mtu >= ceiling else mtu - (mtu - BASE_PLPMTU) % 4


@pytest.mark.parametrize("mtu", [1200, 1203, 1252, 1452, 1471, 1500, 4000, 8999])
def test_search_settles_at_the_path_mtu_on_the_grid(mtu: int) -> None:
    path = Path(PmtuSearch(), mtu)
    path.run_until_complete()
    s = path.search
    assert s.pmtu <= mtu
    assert s.pmtu == expected_pmtu(mtu)
    assert path.applied[-1] == s.pmtu  # the size is applied when the search completes
    # each failing size (at most one 32-byte and one 4-byte step) costs MAX_PROBES
    # expiries, the walk up none: acknowledged probes are followed at once
    assert path.timer_fires <= 2 * MAX_PROBES + 1


def test_search_stops_at_the_peers_max_udp_payload_size() -> None:
    search = PmtuSearch()
    search.set_ceiling(1350)
    path = Path(search, 65527)  # loopback carries anything
    path.run_until_complete()
    assert search.pmtu == 1350
    assert path.timer_fires == 1  # nothing was lost


def test_loopback_search_stops_at_the_kernel_ceiling() -> None:
    path = Path(PmtuSearch(), 65527)
    path.run_until_complete()
    assert path.search.pmtu == MAX_PLPMTU


def test_black_hole_falls_back_to_base_then_searches_again() -> None:
    path = Path(PmtuSearch(), 1500)
    path.run_until_complete()
    found = path.search.pmtu
    assert found > 1452
    path.mtu = 1300  # the route changed: the confirmed size is now a black hole
    path.applied.clear()
    for _ in range(MAX_PROBES):
        path.fire_timer()  # the raise timer's probes at the confirmed size get lost
        assert path.search.pmtu == found
    path.fire_timer()
    assert path.applied[0] == BASE_PLPMTU
    path.run_until_complete()
    assert path.search.pmtu == expected_pmtu(1300)


def test_base_failure_enters_error_and_recovers() -> None:
    path = Path(PmtuSearch(), 1000)  # not even BASE_PLPMTU gets through
    for _ in range(MAX_PROBES + 1):
        path.fire_timer()
    assert path.search.state is PlState.ERROR and path.applied == [BASE_PLPMTU]
    path.mtu = 1300
    path.run_until_complete()
    assert path.search.pmtu == expected_pmtu(1300)


def test_raise_timer_after_completion() -> None:
    search = PmtuSearch()
    Path(search, 1400).run_until_complete()
    search.on_probe_sent(99)
    assert not search.confirms(100, 120) and search.confirms(90, 99)
    assert search.on_probe_acked().probe_again
    assert search.state is PlState.SEARCH


@pytest.mark.parametrize(("value", "ok"), [(0, True), (5_000_000, True), (4_999_999, False),
                                           (0xFFFFFFFF // 30, True), (0xFFFFFFFF // 30 + 1, False)])
def test_probe_interval_check_matches_the_kernel(value: int, ok: bool) -> None:
    if ok:
        check_probe_interval(value)
    else:
        with pytest.raises(OSError) as e:
            check_probe_interval(value)
        assert e.value.errno == errno.EINVAL
