"""roomcast.backoff: exponential growth, full jitter, cap."""

from __future__ import annotations

import itertools
import random

import pytest

from roomcast.backoff import backoff_delays


def test_bounds_grow_then_cap():
    """Delay n is within [0, min(cap, base*2^n)], and the bound stops at the cap."""
    delays = list(itertools.islice(backoff_delays(0.5, 30.0, random.Random(1)), 40))
    for n, d in enumerate(delays):
        assert 0 <= d <= min(30.0, 0.5 * 2**n)
    assert max(delays[10:]) <= 30.0


def test_full_jitter_spreads_delays():
    """With many draws at one step, delays cover the whole range, not one point."""
    rng = random.Random(7)
    draws = [next(itertools.islice(backoff_delays(1.0, 8.0, rng), 3, None)) for _ in range(500)]
    assert min(draws) < 1.0 and max(draws) > 7.0


def test_upper_bound_is_exponential():
    """The largest possible delay doubles each step until the cap."""

    class Top(random.Random):
        def uniform(self, a, b):
            return b

    assert list(itertools.islice(backoff_delays(0.1, 1.0, Top()), 6)) == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_rejects_bad_parameters():
    with pytest.raises(ValueError):
        next(backoff_delays(0, 1))
    with pytest.raises(ValueError):
        next(backoff_delays(2, 1))
