"""Backoff schedules, pure and separately tested."""

from __future__ import annotations

import random
from collections.abc import Iterator


def backoff_delays(base: float, cap: float, rng: random.Random | None = None) -> Iterator[float]:
    """Exponential backoff with full jitter.

    The n-th delay (from 0) is drawn uniformly from ``[0, min(cap, base * 2**n)]``, so retries
    from many clients spread out instead of arriving together.
    """
    if base <= 0 or cap < base:
        raise ValueError("need 0 < base <= cap")
    rng = rng or random.Random()
    n = 0
    while True:
        yield rng.uniform(0, min(cap, base * (2**n)))
        if base * (2**n) < cap:
            n += 1
