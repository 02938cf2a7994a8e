"""Keeping the cyclic garbage collector out of the hot path (docs/performance.md)."""

from __future__ import annotations

import gc

#: Young-generation threshold of the cyclic GC while serving (Python's default is 700).
GC_THRESHOLD = (20_000, 20, 50)


def tune_gc() -> None:
    """Move what startup allocated out of the collector's way (``gc.freeze``) and collect the
    young generation less often: the hot paths allocate many short-lived objects (futures,
    frames) that reference counting frees anyway, and at Python's default threshold the
    collector ran every ~35 publishes (``docs/performance.md``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
