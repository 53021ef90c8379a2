"""RangeSet (the simulation's sets of packet numbers and byte ranges) against a plain set of
integers, over seeded random adds and subtracts, from empty (its shared empty lists) on."""
from __future__ import annotations

import random
from itertools import pairwise

import pytest

from quichsd.sock.sim.rangeset import RangeSet


def members(r: RangeSet) -> set[int]:
    return {x for start, end in r for x in range(start, end)}


@pytest.mark.parametrize("seed", range(20))
def test_rangeset_matches_a_plain_set(seed: int) -> None:
    rng = random.Random(seed)
    r, ref = RangeSet(), set()
    for _ in range(60):
        a = rng.randrange(0, 80)
        b = a + rng.randrange(0, 12)
        if rng.random() < 0.6:
            r.add(a, b)
            ref |= set(range(a, b))
        else:
            r.subtract(a, b)
            ref -= set(range(a, b))
        assert members(r) == ref
        assert bool(r) == bool(ref) and len(r) == len(list(r))
        ranges = list(r)
        assert all(s < e for s, e in ranges)
        assert all(e1 < s2 for (_, e1), (s2, _) in pairwise(ranges))  # disjoint, not touching
        probe = rng.randrange(0, 95)
        assert (probe in r) == (probe in ref)


def test_empty_sets_do_not_share_what_they_add() -> None:
    one, two = RangeSet(), RangeSet()
    one.add(1, 3)
    assert list(one) == [(1, 3)] and not two and list(two) == []
    two.subtract(0, 10)
    two.trim_to(0)
    assert not two
    two.add(7, 9)
    assert list(one) == [(1, 3)] and list(two) == [(7, 9)]
