"""The node's keepalive sweep: a client whose network went silent is closed; a healthy one,
idle for many intervals, is not."""

from __future__ import annotations

import asyncio
import time

from tests.faults import TcpProxy
from tests.helpers import UNIT, WsClient, room_name, start_node, token


async def test_silent_client_is_closed_and_healthy_idle_client_stays(nats3):
    # A short interval; a timeout long enough that a loaded machine's late pong is no silence.
    node = await start_node(nats3.urls, ping_interval=0.3, ping_timeout=3.0 * UNIT)
    proxy = TcpProxy(node.port)
    via = await proxy.start()
    room = room_name()
    try:
        healthy = await WsClient.connect(node.port, token("hale"))
        await healthy.join(room)
        doomed = await WsClient.connect(via, token("gone"))
        await doomed.join(room)
        assert len(node.connections) == 2
        proxy.blackhole()  # no FIN, no RST: only keepalive can tell
        deadline = time.monotonic() + 10 * UNIT
        while len(node.connections) > 1:
            assert time.monotonic() < deadline, "silent client not detected"
            await asyncio.sleep(0.1)
        assert node.metrics.closes.labels(code="1011")._value.get() == 1
        # Five more pings answered by the idle healthy client (a new ping goes out only after
        # the last one's pong came back), counted, not timed.
        [conn] = node.connections
        pings, last = 0, conn._ping_at
        async with asyncio.timeout(30 * UNIT):
            while pings < 5:
                await asyncio.sleep(0.05)
                if conn._ping_at != last:
                    pings, last = pings + 1, conn._ping_at
        assert not healthy.closed.done() and len(node.connections) == 1
        assert (await healthy.request({"type": "ping"}))["type"] == "pong"
        await healthy.close()
    finally:
        await proxy.close()
        await node.stop()
