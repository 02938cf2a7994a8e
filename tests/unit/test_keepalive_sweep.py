"""The keepalive sweep pings every connection once per interval, in slices spread over the
interval (never one long stall of the event loop)."""

from __future__ import annotations

import asyncio

from roomcast.backplane.memory import MemoryBackplane
from roomcast.node.server import KEEPALIVE_SLICE, Node

from tests.helpers import node_config


class FakeConn:
    def __init__(self) -> None:
        self.pinged: list[float] = []

    def keepalive(self, now: float, timeout: float) -> None:
        self.pinged.append(now)


async def test_sweep_pings_each_connection_once_per_interval_in_spread_slices():
    node = Node(node_config(["nats://127.0.0.1:1"]), backplane=MemoryBackplane())
    conns = [FakeConn() for _ in range(KEEPALIVE_SLICE * 2 + KEEPALIVE_SLICE // 2)]  # 3 slices
    node.connections = dict.fromkeys(conns)
    interval = 0.3
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    task = asyncio.create_task(node._keepalive(interval, 1.0))
    await asyncio.sleep(2 * interval + interval / 6)  # two whole sweeps, not a third one
    task.cancel()
    assert [len(c.pinged) for c in conns] == [2] * len(conns)
    first, last = conns[0], conns[-1]  # first and third slice
    # Slices are a third of the interval apart, not pinged together ...
    assert last.pinged[0] - first.pinged[0] > interval / 3
    # ... and each connection is pinged once per interval.
    for c in (first, last):
        assert abs(c.pinged[1] - c.pinged[0] - interval) < interval / 3
    assert first.pinged[0] - t0 < interval
