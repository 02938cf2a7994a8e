"""Presence stays true during faults (docs/presence.md): a drained node hands its connections
over instead of flapping them, a node that cannot hear NATS declares nobody dead, and nobody
receives their own join. Real nodes on a real 3-server JetStream cluster."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from roomcast.natsserver import NatsCluster
from tests.helpers import UNIT, WsClient, room_name, start_node, token
from tests.integration.test_presence import (
    eventually,
    fast_presence,
    flushed,
    presence_events,
)

#: Under both presence scopes (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("presence_scope")


async def test_a_connection_never_receives_its_own_join(nats3):
    """Joining a room that already has members on the same node (after another room): the
    `joined` lists the joiner; no presence frame then makes it see itself join (§4.10)."""
    node = await start_node(nats3.urls, node_id="own", presence=fast_presence())
    try:
        room_a, room_b = room_name(), room_name()
        others = [await WsClient.connect(node.port, token(u)) for u in ("x", "y")]
        for c in others:
            await c.join(room_b)
        z = await WsClient.connect(node.port, token("z"))
        await z.join(room_a)
        for i in range(20):  # the race the issue saw 306 times in one run
            joined = await z.join(room_b)
            assert "z" in joined["presence"]["members"]
            await flushed(z)
            assert ("join", "z") not in presence_events(z, room_b), z.frames[-5:]
            await z.request({"type": "leave", "room": room_b})
            await eventually(lambda i=i: presence_events(others[0], room_b).count(("leave", "z"))
                             == i + 1)
        for c in (*others, z):
            await c.close()
    finally:
        await node.stop()


async def test_a_paced_drain_hands_connections_over_without_flapping(nats3):
    """SIGTERM-style drain of a node with 20 users: they resume on the other node and the
    members there see no leave and no re-join of anyone."""
    from roomcast.client import connect

    a = await start_node(nats3.urls, node_id="drainee", presence=fast_presence(),
                         drain_window=0.5)
    b = await start_node(nats3.urls, node_id="keeper", presence=fast_presence())
    room = room_name()
    clients = []
    try:
        watcher = await WsClient.connect(b.port, token("watcher"))
        await watcher.join(room)
        for i in range(20):
            c = connect([f"ws://127.0.0.1:{a.port}/ws", f"ws://127.0.0.1:{b.port}/ws"],
                        token(f"u{i}"), shuffle_urls=False, backoff_base=0.05)
            await c.__aenter__()
            clients.append(c)
            await c.join(room)
        await eventually(lambda: len(presence_events(watcher, room)) == 20)
        await a.stop()  # closes every client with `reconnect`, waits for their hand-over
        await eventually(lambda: all(c.connected and c.node == "keeper" for c in clients))
        await eventually(lambda: b.presence.state.user_count(room) == 21
                         and a.instance not in b.presence.state.nodes())
        await flushed(watcher)
        assert presence_events(watcher, room) == [("join", f"u{i}") for i in range(20)]
    finally:
        for c in clients:
            await c.__aexit__(None, None, None)
        await a.stop()
        await b.stop()


@pytest_asyncio.fixture
async def own_cluster():
    """A 3-server cluster of its own: this test stops all of it."""
    with NatsCluster(3) as cluster:
        yield cluster


async def test_a_full_nats_outage_makes_nobody_leave(own_cluster):
    """All NATS servers down for several presence timeouts, then back: no node declares its
    peers dead, members see no leave and no join, and the views re-sync."""
    cluster = own_cluster
    a = await start_node(cluster.urls, node_id="oa", presence=fast_presence())
    b = await start_node(cluster.urls, node_id="ob", presence=fast_presence())
    room = room_name()
    try:
        wa = await WsClient.connect(a.port, token("wa"))
        wb = await WsClient.connect(b.port, token("wb"))
        await wa.join(room)
        await wb.join(room)
        await eventually(lambda: all(n.presence.state.user_count(room) == 2 for n in (a, b)))
        await eventually(lambda: presence_events(wa, room) == [("join", "wb")])
        before_a, before_b = list(presence_events(wa, room)), list(presence_events(wb, room))
        for s in cluster.servers:
            s.kill()
        # The outage itself has to last: 3 presence timeouts (1.5 s each) of silence.
        await asyncio.sleep(4.5)
        assert all(n.presence.state.user_count(room) == 2 for n in (a, b))
        for s in cluster.servers:
            s.start()
        for s in cluster.servers:
            await asyncio.to_thread(s.wait_ready, 20 * UNIT)
        await eventually(lambda: a.backplane.connected and b.backplane.connected,
                         timeout=20 * UNIT)
        # Both hear themselves and each other again before we look.
        await eventually(lambda: not a.presence._cut_off and not b.presence._cut_off
                         and b.presence.instance in a.presence.peers
                         and a.presence.instance in b.presence.peers, timeout=20 * UNIT)
        await flushed(wa)
        await flushed(wb)
        assert presence_events(wa, room) == before_a
        assert presence_events(wb, room) == before_b
        assert all(n.presence.state.user_count(room) == 2 for n in (a, b))
        for c in (wa, wb):
            await c.close()
    finally:
        await a.stop()
        await b.stop()
