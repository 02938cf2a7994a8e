"""One drain deadline: whatever is stuck (publishes NATS will never acknowledge, a client that
never answers the close, presence events that cannot be stored), Node.stop ends within
drain_window + drain_timeout + FORCED_STOP_SECONDS (docs/deploy.md)."""

from __future__ import annotations

import json
import time

from roomcast.natsserver import NatsCluster
from roomcast.node.server import FORCED_STOP_SECONDS
from tests.faults import TcpProxy
from tests.helpers import UNIT, WsClient, room_name, start_node, token


async def test_a_drain_ends_by_its_deadline_whatever_is_stuck():
    window, timeout = 0.5, 1.5
    with NatsCluster(1) as single:
        node = await start_node(single.urls, replicas=1, drain_window=window,
                                drain_timeout=timeout)
        proxy = TcpProxy(node.port)
        via = await proxy.start()
        try:
            room = room_name()
            silent = await WsClient.connect(via, token("silent"))
            await silent.join(room)
            pub = await WsClient.connect(node.port, token("pub"))
            await pub.join(room)
            single.servers[0].kill()  # nothing will be acknowledged or stored from now on
            for i in range(5):
                await pub.ws.send(json.dumps({"type": "publish", "room": room, "data": i,
                                              "id": f"stuck-{i}"}))
            await pub.request({"type": "ping"})  # the publishes reached the node
            assert node.inflight, "publishes should be waiting for their acks"
            proxy.blackhole()  # this client will never answer the closing handshake
            t0 = time.monotonic()
            await node.stop()
            elapsed = time.monotonic() - t0
            assert elapsed <= window + timeout + FORCED_STOP_SECONDS + 1.0 * UNIT, elapsed
            # The publishes were neither acknowledged nor reported stored: the client retries
            # them with the same ids elsewhere (docs/protocol.md §7).
            assert not [f for f in pub.frames if f["type"] == "ack"]
        finally:
            await proxy.close()
            await node.stop()
