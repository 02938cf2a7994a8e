"""The keepalive sweep pings every connection once per interval, in slices spread over the
interval (never one long stall of the event loop)."""

from __future__ import annotations

import asyncio

import pytest

from roomcast.backplane.memory import MemoryBackplane
from roomcast.node.server import Node
from roomcast.node.sweeps import KEEPALIVE_SLICE
from tests.helpers import node_config


class FakeConn:
    def __init__(self) -> None:
        self.pinged: list[float] = []

    def keepalive(self, now: float, timeout: float) -> None:
        self.pinged.append(now)


class VirtualClock:
    """Time that moves only when the code under test sleeps: exact, whatever the machine."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


async def test_sweep_pings_each_connection_once_per_interval_in_spread_slices():
    node = Node(node_config(["nats://127.0.0.1:1"]), backplane=MemoryBackplane())
    conns = [FakeConn() for _ in range(KEEPALIVE_SLICE * 2 + KEEPALIVE_SLICE // 2)]  # 3 slices
    node.connections = dict.fromkeys(conns)
    interval = 0.3
    clock = VirtualClock()
    t0 = clock()
    task = asyncio.create_task(node._keepalive(interval, 1.0, clock=clock, sleep=clock.sleep))
    while clock() < t0 + 2 * interval + interval / 6:  # noqa: ASYNC110 - virtual time: two sweeps
        await asyncio.sleep(0)
    task.cancel()
    assert [len(c.pinged) for c in conns] == [2] * len(conns)
    first, last = conns[0], conns[-1]  # first and third slice
    # Slices are a third of the interval apart, not pinged together ...
    assert last.pinged[0] - first.pinged[0] == pytest.approx(2 * interval / 3)
    # ... and each connection is pinged once per interval.
    for c in (first, last):
        assert c.pinged[1] - c.pinged[0] == pytest.approx(interval)
    assert first.pinged[0] - t0 == pytest.approx(interval / 3)


async def test_a_stalled_sweep_does_not_catch_up_in_a_burst():
    """After the loop stalled for several intervals, the next sweep starts from now: each
    connection is pinged once, not once per missed interval."""
    node = Node(node_config(["nats://127.0.0.1:1"]), backplane=MemoryBackplane())
    conns = [FakeConn() for _ in range(KEEPALIVE_SLICE)]
    node.connections = dict.fromkeys(conns)
    clock = VirtualClock()

    async def stalling_sleep(seconds: float) -> None:
        await clock.sleep(seconds + (5.0 if len(conns[0].pinged) == 1 else 0.0))

    task = asyncio.create_task(node._keepalive(0.3, 1.0, clock=clock, sleep=stalling_sleep))
    while len(conns[0].pinged) < 3:  # noqa: ASYNC110 - virtual time
        await asyncio.sleep(0)
    task.cancel()
    gaps = [b - a for a, b in zip(conns[0].pinged, conns[0].pinged[1:], strict=False)]
    assert gaps[0] == pytest.approx(5.3) and gaps[1] == pytest.approx(0.3)
