"""The node's keepalive sweep: a client whose network went silent is closed; a healthy one,
idle for many intervals, is not."""

from __future__ import annotations

import asyncio
import time

from tests.faults import TcpProxy
from tests.helpers import UNIT, WsClient, room_name, start_node, token


async def test_silent_client_is_closed_and_healthy_idle_client_stays(nats3):
    node = await start_node(nats3.urls, ping_interval=0.3, ping_timeout=0.6)
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
        await asyncio.sleep(1.5)  # five more intervals: the idle healthy client answers pongs
        assert not healthy.closed.done() and len(node.connections) == 1
        assert (await healthy.request({"type": "ping"}))["type"] == "pong"
        await healthy.close()
    finally:
        await proxy.close()
        await node.stop()
