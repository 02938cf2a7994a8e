"""The scale-out/scale-in drill (bounded): add a node, drain one, nothing lost."""

from __future__ import annotations

import os

import pytest

from bench.drill import run_drill

CLIENTS = 300 if os.environ.get("ROOMCAST_SLOW") else 150


@pytest.mark.slow
async def test_scale_out_then_drain_loses_nothing():
    """New clients land on the added node; the SIGTERM'd node's clients all resume elsewhere
    with zero loss and no duplicates; it exits 0; its metrics showed the drain."""
    r = await run_drill(clients=CLIENTS, rooms=5, rate=20)
    assert r.on_new_node == CLIENTS - CLIENTS * 2 // 3
    assert r.drained_clients > 0
    assert r.resumed_elsewhere == r.drained_clients
    assert r.exit_code == 0
    assert r.published > 0
    assert (r.lost, r.duplicates) == (0, 0)
    assert r.metrics_draining_seen
    assert r.metrics_1012_closes >= 1
