"""Resume acceptance: real 3-server JetStream cluster, two nodes, the Python client library."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from roomcast.client import connect
from roomcast.dev import NodeProcess
from roomcast.natsserver import NatsCluster, free_port
from roomcast.resume import ResumeSigner
from tests.chaos import kill_9_of_the_clients_node
from tests.helpers import (
    KEY,
    UNIT,
    Gate,
    WsClient,
    assert_message_chain,
    collect,
    drop,
    room_name,
    start_node,
    token,
    wait_connected,
)


def ws_url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/ws"


def client(urls, tok, **kw):
    return connect(urls, tok, shuffle_urls=False, backoff_base=0.05, backoff_cap=1.0, **kw)


async def test_resume_on_other_node_gets_exactly_what_was_missed(nodes):
    """Dropped on A; 500 published from B meanwhile; resumed on B with all 500 once, in order."""
    a, b = nodes
    room = room_name()
    gate = Gate(token("carol"))
    async with client([ws_url(a.port), ws_url(b.port)], gate) as c, \
            client(ws_url(b.port), token("pub")) as pub:
        await c.join(room)
        assert c.node == "node-a"
        first = await pub.publish(room, {"n": -1})
        assert (await c.next_message(5 * UNIT)).seq == first
        gate.open.clear()
        drop(c)
        acked = await asyncio.gather(*(pub.publish(room, {"n": i}) for i in range(500)))
        gate.open.set()
        got = await collect(c, 500)
        await wait_connected(c)
        assert c.node == "node-b"
        assert [m.seq for m in got] == sorted(acked)
        # Concurrent publishes past the rate burst are retried by the client (same id), so
        # stored order need not be send order; each is stored and received exactly once.
        assert sorted(m.data["n"] for m in got) == list(range(500))
        assert got[0].prev == first
        assert_message_chain(got)
        outcome = c.last_resume[room]
        assert (outcome["seq"], outcome["recovered"], outcome["replayed"]) == (max(acked), True, 500)
        sentinel = await pub.publish(room, {"n": "sentinel"})
        nxt = await c.next_message(10 * UNIT)
        assert nxt.seq == sentinel and nxt.prev == max(acked), "no duplicate may come before it"


async def test_resumes_on_a_node_that_has_the_room_are_served_from_its_replay_cache(nodes):
    """Two clients dropped on A resume on B, where the room has a member: what they missed
    comes from B's tail of the room (no JetStream read), exactly once and in order."""
    a, b = nodes
    room = room_name()
    gates = [Gate(token(f"cache{i}")) for i in range(2)]
    async with client([ws_url(a.port), ws_url(b.port)], gates[0]) as c0, \
            client([ws_url(a.port), ws_url(b.port)], gates[1]) as c1, \
            client(ws_url(b.port), token("pub")) as pub:
        watcher = await WsClient.connect(b.port, token("watch"))
        await watcher.join(room)
        for c in (c0, c1):
            await c.join(room)
        first = await pub.publish(room, {"n": -1})
        for c in (c0, c1):
            assert (await c.next_message(5 * UNIT)).seq == first
        for g in gates:
            g.open.clear()
        drop(c0)
        drop(c1)
        hits = b.rooms.cache.hits
        acked = [await pub.publish(room, {"n": i}) for i in range(30)]
        for g in gates:
            g.open.set()
        for c in (c0, c1):
            got = await collect(c, 30)
            await wait_connected(c)
            assert c.node == "node-b"
            assert [m.seq for m in got] == acked and got[0].prev == first
            assert_message_chain(got)
            outcome = c.last_resume[room]
            assert (outcome["recovered"], outcome["replayed"]) == (True, 30)
        assert b.rooms.cache.hits == hits + 2
        await watcher.close()


async def test_no_loss_or_duplicate_across_the_replay_live_boundary(nodes):
    """Publishing continues during two resumes: the prev chain is intact end to end."""
    a, b = nodes
    room = room_name()
    async with client([ws_url(a.port), ws_url(b.port)], token("dave")) as c, \
            client(ws_url(b.port), token("pub")) as pub:
        await c.join(room)
        acked: list[int] = []

        async def publisher():
            for i in range(600):
                acked.append(await pub.publish(room, {"i": i}))
                if i % 20 == 0:
                    await asyncio.sleep(0.005)

        task = asyncio.create_task(publisher())
        got = []
        async with asyncio.timeout(60 * UNIT):
            while len(got) < 600:
                got.append(await c.next_message())
                if len(got) in (100, 350):
                    drop(c)
        await task
        assert c.sessions == 3
        assert [m.seq for m in got] == acked
        assert_message_chain(got)


async def test_kill_9_of_the_clients_node_resumes_elsewhere(nats3):
    """The client's node is killed with SIGKILL: the client resumes on the other; nothing lost
    (tests/chaos.py)."""
    await kill_9_of_the_clients_node(nats3)


async def test_sigterm_drains_200_clients_to_the_other_node(nats3):
    """SIGTERM a node with 200 clients: all resume on the other, zero loss, exit 0 in time."""
    port = free_port()
    drain_window, drain_timeout = 2.0, 5.0
    draining = NodeProcess("draining", "127.0.0.1", port, nats3.urls, KEY, 3, {
        "ROOMCAST_LOG_LEVEL": "warning", "ROOMCAST_DRAIN_WINDOW": str(drain_window),
        "ROOMCAST_DRAIN_TIMEOUT": str(drain_timeout)})
    other = await start_node(nats3.urls, node_id="other")
    clients = []
    try:
        await asyncio.to_thread(draining.wait_ready)
        room = room_name()
        states: list[str] = []
        for i in range(200):
            c = client([ws_url(port), ws_url(other.port)], token(f"u{i}"),
                       on_state=lambda s, info: states.append(s.value))
            await c.start()
            await c.join(room)
            clients.append(c)
        assert {c.node for c in clients} == {"draining"}
        async with client(ws_url(other.port), token("pub")) as pub:
            acked: list[int] = []

            async def publisher():
                for i in range(150):
                    acked.append(await pub.publish(room, {"i": i}))
                    await asyncio.sleep(0.01)

            task = asyncio.create_task(publisher())
            await asyncio.sleep(0.3)
            t0 = time.monotonic()
            draining.proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(draining.proc.wait, drain_window + drain_timeout + 10)
            elapsed = time.monotonic() - t0
            await task
            assert code == 0
            assert elapsed < drain_window + drain_timeout + 5
            results = await asyncio.gather(*(collect(c, len(acked), 60 * UNIT) for c in clients))
            for c, got in zip(clients, results, strict=True):
                assert c.node == "other"
                assert [m.seq for m in got] == acked
                assert_message_chain(got)
    finally:
        for c in clients:
            await c.close()
        draining.stop()
        await other.stop()


async def test_history_window_exceeded_reports_not_recovered():
    """Beyond the per-room history limit: recovered false, and the retained messages arrive."""
    with NatsCluster(1) as single:
        node = await start_node(single.urls, replicas=1, nats_kw={"history_per_room": 10})
        try:
            room = room_name()
            gate = Gate(token("fay"))
            async with client(ws_url(node.port), gate) as c, \
                    client(ws_url(node.port), token("pub")) as pub:
                await c.join(room)
                gate.open.clear()
                drop(c)
                acked = [await pub.publish(room, {"i": i}) for i in range(50)]
                gate.open.set()
                got = await collect(c, 10)
                await wait_connected(c)
                assert c.last_resume[room]["recovered"] is False
                assert [m.seq for m in got] == acked[-10:]
                assert got[0].prev is None
                assert_message_chain(got)
        finally:
            await node.stop()


async def test_publish_while_disconnected_is_stored_exactly_once(nodes):
    """Publishes made offline wait, are sent after reconnect with the same id, stored once."""
    a, b = nodes
    room = room_name()
    gate = Gate(token("gus"))
    async with client([ws_url(a.port), ws_url(b.port)], gate) as c:
        await c.join(room)
        gate.open.clear()
        drop(c)
        while c.connected:  # noqa: ASYNC110 - polling a flag the client owns
            await asyncio.sleep(0.01)
        offline = asyncio.create_task(c.publish(room, "while offline", id="offline-1"))
        # A publish whose connection is cut right after sending: its ack is lost, the retry
        # after the reconnect carries the same id.
        await asyncio.sleep(0.2)
        assert not offline.done()
        gate.open.set()
        seq = await asyncio.wait_for(offline, 20 * UNIT)
        inflight = asyncio.create_task(c.publish(room, "cut", id="cut-1"))
        await asyncio.sleep(0)
        drop(c)
        seq2 = await asyncio.wait_for(inflight, 20 * UNIT)
        assert seq2 > seq
    reader = await WsClient.connect(b.port)
    joined = await reader.join(room, since=0)
    assert [m["id"] for m in reader.messages(room)] == ["offline-1", "cut-1"]
    assert joined["replayed"] == 2
    await reader.close()


async def test_bad_resume_tokens_are_refused(nodes):
    """Another user's, an expired and a tampered resume token are refused with reasons."""
    a, b = nodes
    room = room_name()
    x = await WsClient.connect(a.port, token("xavier"))
    joined = await x.join(room)
    tok = joined["resume_token"]
    y = await WsClient.connect(b.port, token("yvonne"))
    err = await y.request({"type": "resume", "token": tok, "rooms": {room: 0}})
    assert (err["code"], err["message"]) == ("bad_resume_token",
                                             "resume token belongs to another user")
    signer = ResumeSigner(a.config.effective_resume_keys(), ttl=300)
    expired = signer.issue("yvonne", [room], a.backplane.epoch, "c", now=time.time() - 600)
    err = await y.request({"type": "resume", "token": expired, "rooms": {}})
    assert err["message"] == "resume token expired"
    head, payload, sig = tok.rsplit(".", 2)[0], tok.rsplit(".", 2)[1], tok.rsplit(".", 2)[2]
    tampered = f"{head}.{payload[:-2]}AA.{sig}"
    err = await y.request({"type": "resume", "token": tampered, "rooms": {}})
    assert err["message"] == "resume token invalid"
    # The rightful owner resumes on the other node.
    x2 = await WsClient.connect(b.port, token("xavier"))
    ok = await x2.request({"type": "resume", "token": tok, "rooms": {room: joined["seq"]}})
    assert ok["type"] == "resumed" and ok["rooms"][room]["recovered"] is True
    for c in (x, y, x2):
        await c.close()


async def test_resume_key_rotation_accepts_the_previous_key(nats3):
    """A node listing (new, old) keys accepts tokens signed with the old one."""
    old, new = "o" * 40, "n" * 40
    n_old = await start_node(nats3.urls, resume_keys=(old,))
    n_new = await start_node(nats3.urls, resume_keys=(new, old))
    try:
        room = room_name()
        c = await WsClient.connect(n_old.port, token("hal"))
        tok = (await c.join(room))["resume_token"]
        c2 = await WsClient.connect(n_new.port, token("hal"))
        ok = await c2.request({"type": "resume", "token": tok, "rooms": {}})
        assert ok["type"] == "resumed" and room in ok["rooms"]
        await c.close()
        await c2.close()
    finally:
        await n_old.stop()
        await n_new.stop()


async def test_draining_node_fails_readiness_and_refuses_upgrades(nats3):
    """During a drain /readyz is 503 and new upgrades are refused; clients get reconnect+1012."""

    import websockets

    node = await start_node(nats3.urls, drain_window=1.5, drain_timeout=2)
    c = await WsClient.connect(node.port, token("ivy"))
    await c.join(room_name())
    stopping = asyncio.create_task(node.stop())
    while not node.draining:  # noqa: ASYNC110 - the flag the node sets when stop() starts
        await asyncio.sleep(0.01)
    assert await node.readiness() == (False, "draining")
    with pytest.raises((websockets.InvalidStatus, OSError)):
        await websockets.connect(f"ws://127.0.0.1:{node.port}/ws?token={token('ivy')}")
    code = await asyncio.wait_for(c.closed, 5 * UNIT)
    assert code == 1012
    reconnect = next(f for f in c.frames if f["type"] == "reconnect")
    assert reconnect["resume_token"].startswith("v1.") and reconnect["retry_after_ms"] >= 0
    await stopping


async def test_resume_of_many_rooms_keeps_replay_resumed_live_order(nodes, monkeypatch):
    """A resume of 40 rooms while every room keeps receiving messages: rooms are re-joined
    concurrently (bounded), and for every room the frames come in the documented order —
    replayed messages up to `resumed`'s seq, then `resumed`, then only newer ones (§3.4)."""
    from roomcast.node import connection, requests

    a, b = nodes
    rooms = [room_name() for _ in range(40)]
    old = await WsClient.connect(a.port)
    for r in rooms:
        await old.join(r)
    pub = await WsClient.connect(b.port, token("pub"))
    for r in rooms:
        await pub.publish(r, "before")
    await old.wait_messages(rooms[-1], 1)
    positions = {r: old.messages(r)[-1]["seq"] for r in rooms}
    resume_token = old.frames[-1].get("resume_token") or next(
        f["resume_token"] for f in reversed(old.frames) if f.get("resume_token"))
    await old.close()
    for r in rooms:
        await pub.publish(r, "missed")

    inflight = peak = 0
    original = connection.Connection._join_room

    async def counting(self, *args):
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        try:
            return await original(self, *args)
        finally:
            inflight -= 1

    monkeypatch.setattr(connection.Connection, "_join_room", counting)
    stop = asyncio.Event()

    async def keep_publishing() -> None:
        i = 0
        while not stop.is_set():
            await pub.publish(rooms[i % len(rooms)], "live")
            i += 1

    publisher = asyncio.create_task(keep_publishing())
    new = await WsClient.connect(b.port)
    try:
        reply = await new.request({"type": "resume", "token": resume_token, "rooms": positions})
        assert reply["type"] == "resumed" and set(reply["rooms"]) == set(rooms)
        await new.wait_for(lambda f: f["type"] == "message" and f["data"] == "live"
                           and new.frames.index(f) > new.frames.index(reply))
    finally:
        stop.set()
        await publisher
    assert 1 < peak <= requests.RESUME_CONCURRENCY
    at = new.frames.index(reply)
    for r in rooms:
        seq = reply["rooms"][r]["seq"]
        assert reply["rooms"][r]["recovered"] is True
        before = [f["seq"] for f in new.frames[:at] if f["type"] == "message" and f["room"] == r]
        after = [f["seq"] for f in new.frames[at:] if f["type"] == "message" and f["room"] == r]
        assert before and before[-1] == seq and all(s > positions[r] for s in before), r
        assert all(s > seq for s in after), (r, seq, after[:3])
        assert_chain_seqs = before + after
        assert assert_chain_seqs == sorted(set(assert_chain_seqs))
    await new.close()
    await pub.close()
