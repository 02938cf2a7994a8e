"""Room-scoped presence (``--presence-scope rooms``, docs/presence.md) on a real 3-server
JetStream cluster: what only this scope promises. Everything both scopes promise runs under
both in test_presence*.py."""

from __future__ import annotations

import asyncio
import json
import signal

import nats

from roomcast.dev import NodeProcess
from roomcast.natsserver import free_port
from roomcast.presence.admin import query
from roomcast.presence.tracker import PresenceConfig
from tests.helpers import KEY, UNIT, WsClient, room_name, start_node, token
from tests.integration.test_presence import DIFF, eventually, flushed, presence_events

SCOPED = PresenceConfig(heartbeat_interval=0.25, timeout=1.5, diff_interval=DIFF, scope="rooms")
ENV = {"ROOMCAST_PRESENCE_HEARTBEAT": "0.25", "ROOMCAST_PRESENCE_TIMEOUT": "1.5",
       "ROOMCAST_LOG_LEVEL": "warning", "ROOMCAST_PRESENCE_SCOPE": "rooms"}


async def test_a_node_holds_and_hears_only_the_rooms_it_has_members_in(nats3):
    """Churn in a room on A and B costs C nothing (no entries, no records received); C's
    first member there gets the whole list; when it leaves, C forgets the room again."""
    a, b, c = [await start_node(nats3.urls, node_id=f"s{n}", presence=SCOPED) for n in "abc"]
    clients: list[WsClient] = []
    try:
        busy, own = room_name("busy"), room_name("own")
        loner = await WsClient.connect(c.port, token("loner"))
        clients.append(loner)
        await loner.join(own)
        heard_before = c.presence.deltas_received
        for i in range(10):
            clients.append(await WsClient.connect((a, b)[i % 2].port, token(f"u{i}")))
            await clients[-1].join(busy)
        for w in clients[1:4]:
            await w.request({"type": "leave", "room": busy})
        await eventually(lambda: all(n.presence.state.user_count(busy) == 7 for n in (a, b)))
        assert c.presence.state.size() == (1, 1)  # its own room and its own connection
        assert busy not in c.presence.rooms
        assert c.presence.deltas_received == heard_before
        # A join on C lists everyone on A and B, from the stream.
        await eventually(lambda: all(not n.presence._outbox and not n.presence.writer.pending
                                     for n in (a, b)))
        j = await loner.join(busy)
        assert set(j["presence"]["members"]) == {"loner", *(f"u{i}" for i in range(3, 10))}
        assert c.presence.state.user_count(busy) == 8
        # Changes on A now reach C, as presence frames to its member.
        await clients[5].request({"type": "leave", "room": busy})  # u4, on A
        await eventually(lambda: ("leave", "u4") in presence_events(loner, busy))
        await loner.request({"type": "leave", "room": busy})
        assert busy not in c.presence.rooms and c.presence.state.size() == (1, 1)
        await eventually(lambda: all(n.presence.state.user_count(busy) == 6 for n in (a, b)))
        scrape = c.metrics.render().decode()
        assert "roomcast_presence_rooms 1.0" in scrape
        assert "roomcast_presence_entries 1.0" in scrape
    finally:
        for cl in clients:
            await cl.close()
        for n in (a, b, c):
            await n.stop()


async def test_a_dead_nodes_leaves_are_stored_also_for_rooms_nobody_else_follows(nats3):
    """Every member of a room is on the node killed with SIGKILL: no survivor follows that
    room, yet its ``node_down`` leaves are stored once each, and its records are purged."""
    port = free_port()
    victim = NodeProcess("scoped-victim", "127.0.0.1", port, nats3.urls, KEY, 3, ENV)
    survivor = await start_node(nats3.urls, node_id="scoped-survivor", presence=SCOPED)
    nc = await nats.connect(nats3.urls)
    lost: list[WsClient] = []
    try:
        await asyncio.to_thread(victim.wait_ready)
        lonely, shared = room_name("lonely"), room_name("shared")
        events: list[dict] = []

        async def on_event(msg):
            events.extend(json.loads(msg.data))

        await nc.subscribe(f"roomcast.events.presence.{lonely}", cb=on_event)
        await nc.flush()
        watcher = await WsClient.connect(survivor.port, token("watch"))
        await watcher.join(shared)
        for user in ("la", "lb"):
            lost.append(await WsClient.connect(port, token(user)))
            await lost[-1].join(lonely)
            await lost[-1].join(shared)
        await eventually(lambda: len(events) == 2)
        await eventually(lambda: survivor.presence.state.user_count(shared) == 3)
        assert lonely not in survivor.presence.rooms
        victim.proc.send_signal(signal.SIGKILL)
        await eventually(lambda: survivor.presence.cleanups_done == 1, timeout=15 * UNIT)
        await eventually(lambda: len(events) == 4)
        leaves = sorted((e["user"], e["reason"], e["last"]) for e in events[2:])
        assert leaves == [("la", "node_down", True), ("lb", "node_down", True)]
        await flushed(watcher)
        assert sorted(presence_events(watcher, shared)) == [
            ("join", "la"), ("join", "lb"), ("leave", "la"), ("leave", "lb")]
        # Purged: a first join anywhere reads nobody from the dead node.
        reply = await query(nats3.urls, "presence", lonely)
        assert reply["members"] == {}
        js = nc.jetstream()
        info = await js.stream_info("PRESENCE_STATE", subjects_filter="roomcast.pstate.>")
        assert not any(s.endswith(lonely) for s in (info.state.subjects or {}))
        await watcher.close()
    finally:
        for cl in lost:
            await cl.close()
        await nc.close()
        victim.stop()
        await survivor.stop()


async def test_the_presence_state_leader_dies_while_users_join(nats3):
    """The PRESENCE_STATE stream's leader is killed while ten users join on another node: the
    members hear every join once (live delivery does not wait for storage), every record is
    stored once the election is over (resent until acknowledged), and a node that follows the
    room only afterwards reads all of them."""
    a = await start_node(nats3.urls, node_id="sa", presence=SCOPED)
    b = await start_node(nats3.urls, node_id="sb", presence=SCOPED)
    c = None
    nc = await nats.connect(nats3.urls)
    clients: list[WsClient] = []
    room = room_name("elect")
    leader = (await nc.jetstream().stream_info("PRESENCE_STATE")).cluster.leader
    victim = next(s for s in nats3.servers if s.name == leader)
    try:
        watcher = await WsClient.connect(a.port, token("watcher"))
        clients.append(watcher)
        await watcher.join(room)
        victim.kill()
        for i in range(10):
            clients.append(await WsClient.connect(b.port, token(f"e{i}")))
            await clients[-1].join(room)
        await eventually(lambda: len(presence_events(watcher, room)) == 10, timeout=15 * UNIT)
        victim.start()
        await asyncio.to_thread(victim.wait_ready)
        await eventually(lambda: a.presence.writer.pending == 0 and b.presence.writer.pending == 0,
                         timeout=30 * UNIT)
        c = await start_node(nats3.urls, node_id="sc", presence=SCOPED)
        late = await WsClient.connect(c.port, token("late"))
        clients.append(late)
        j = await late.join(room)
        assert set(j["presence"]["members"]) == {"watcher", "late", *(f"e{i}" for i in range(10))}
        await flushed(watcher)
        assert sorted(presence_events(watcher, room)) == sorted(
            [("join", f"e{i}") for i in range(10)] + [("join", "late")])
    finally:
        if not victim.running:
            victim.start()
            await asyncio.to_thread(victim.wait_ready)
        for cl in clients:
            await cl.close()
        await nc.close()
        for n in (a, b, c):
            if n is not None:
                await n.stop()


async def test_a_record_never_heard_live_arrives_by_the_periodic_read(nats3, monkeypatch):
    """A's live subscription to a room is cut behind its back (as a lost route would): a join
    on B is stored but never heard live on A, and A's members still get it from the room's
    periodic read."""
    from roomcast.presence import scoped

    monkeypatch.setattr(scoped, "REREAD_EVERY", 1.0)
    monkeypatch.setattr(scoped, "REFRESH_AFTER", 600.0)  # no confirmation read: only this one
    a = await start_node(nats3.urls, node_id="pa", presence=SCOPED)
    b = await start_node(nats3.urls, node_id="pb", presence=SCOPED)
    clients: list[WsClient] = []
    try:
        room = room_name("lost")
        watcher = await WsClient.connect(a.port, token("watcher"))
        clients.append(watcher)
        await watcher.join(room)
        followed = a.presence.rooms[room]
        a.backplane.nc.undirect(followed.sub)
        await followed.sub.unsubscribe()
        heard = a.presence.deltas_received
        clients.append(await WsClient.connect(b.port, token("unheard")))
        await clients[-1].join(room)
        await eventually(lambda: ("join", "unheard") in presence_events(watcher, room),
                         timeout=10 * UNIT)
        assert a.presence.deltas_received == heard  # not live: the read brought it
    finally:
        for cl in clients:
            await cl.close()
        for n in (a, b):
            await n.stop()


async def test_nodes_of_different_scopes_say_so(nats3, caplog):
    """An operator mistake: one node runs the full map, another the room scope. Each logs an
    error naming the other node's scope (once), instead of presence being silently wrong."""
    import logging

    from tests.integration.test_presence import fast_presence

    caplog.set_level(logging.ERROR, logger="roomcast.presence")
    full = await start_node(nats3.urls, node_id="full-map", presence=fast_presence())
    scoped = await start_node(nats3.urls, node_id="room-scoped", presence=SCOPED)
    try:
        def said(text: str) -> bool:
            return any(text in r.getMessage() for r in caplog.records)

        await eventually(lambda: said("node room-scoped runs --presence-scope rooms")
                         and said("node full-map runs --presence-scope cluster"))
        await asyncio.sleep(0.6)  # more heartbeats: still said once per node
        assert sum("node room-scoped runs" in r.getMessage() for r in caplog.records) == 1
    finally:
        await full.stop()
        await scoped.stop()
