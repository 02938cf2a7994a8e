"""The resume chaos drills, shared by the tests that run them on different stream layouts
(one ``ROOMS`` stream: test_cluster/test_resume; rooms over three streams: test_namespaces)."""

from __future__ import annotations

import asyncio
import signal
import time

import nats

from roomcast.client import connect
from roomcast.dev import NodeProcess
from roomcast.natsserver import free_port
from tests.helpers import (
    KEY,
    UNIT,
    WsClient,
    assert_chain,
    assert_message_chain,
    collect,
    room_name,
    start_node,
    token,
)


def _ws(port: int) -> str:
    return f"ws://127.0.0.1:{port}/ws"


async def kill_9_of_the_clients_node(nats3, *, env: dict | None = None,
                                     nats_kw: dict | None = None, total: int = 300) -> None:
    """The client's node (a process started with ``env``) is killed with SIGKILL while a
    publisher on the other node runs: the client resumes there and has every acked message
    once, in order, with an unbroken prev chain."""
    port = free_port()
    victim = NodeProcess("victim", "127.0.0.1", port, nats3.urls, KEY, 3,
                         {"ROOMCAST_LOG_LEVEL": "warning", **(env or {})})
    survivor = await start_node(nats3.urls, node_id="survivor", nats_kw=nats_kw)
    try:
        await asyncio.to_thread(victim.wait_ready)
        room = room_name()
        async with connect([_ws(port), _ws(survivor.port)], token("erin"), shuffle_urls=False,
                           backoff_base=0.05, backoff_cap=1.0) as c, \
                connect(_ws(survivor.port), token("pub"), shuffle_urls=False) as pub:
            await c.join(room)
            assert c.node == "victim"
            acked: list[int] = []

            async def publisher():
                for i in range(total):
                    acked.append(await pub.publish(room, {"i": i}))
                    await asyncio.sleep(0.003)

            task = asyncio.create_task(publisher())
            first = total // 6
            got = await collect(c, first)
            victim.proc.send_signal(signal.SIGKILL)
            got += await collect(c, total - first)
            await task
            assert c.node == "survivor"
            assert [m.seq for m in got] == acked
            assert_message_chain(got)
    finally:
        victim.stop()
        await survivor.stop()


async def kill_9_of_the_rooms_stream_leader(nats3, a, b, *, total: int, tag: str) -> None:
    """The leader of the stream holding the room is killed while a client has publishes in
    flight: each one ends acked (the node retries it under the same id through the election)
    or, past the node's budget, with a temporary error the client retries with the same id.
    Every message is then stored once and reaches members on both nodes exactly once, in seq
    order, with an unbroken prev chain and the seq its ack named."""
    room = room_name()
    place = a.layout.place(room)
    member_a, member_b = await WsClient.connect(a.port), await WsClient.connect(b.port)
    await member_a.join(room)
    await member_b.join(room)
    pub = await WsClient.connect(a.port)
    nc = await nats.connect(nats3.urls)
    leader = (await nc.jetstream().stream_info(place.stream)).cluster.leader
    victim = next(s for s in nats3.servers if s.name == leader)
    took: list[float] = []

    async def publish(i: int) -> dict:
        t0 = time.monotonic()
        while True:  # what a client does with a temporary error: the same id again
            reply = await pub.request({"type": "publish", "room": room, "data": {"i": i},
                                       "id": f"{tag}{i}"}, timeout=60 * UNIT)
            if reply["type"] == "ack" or not reply.get("temporary"):
                took.append(time.monotonic() - t0)
                return reply
            await asyncio.sleep(0.2)

    try:
        tasks = []
        for i in range(total):
            tasks.append(asyncio.create_task(publish(i)))
            if i == total // 3:
                victim.kill()
            await asyncio.sleep(0.01)
        replies = await asyncio.wait_for(asyncio.gather(*tasks), 120 * UNIT)
        assert all(r["type"] == "ack" for r in replies), [r for r in replies if r["type"] != "ack"]
        assert max(took) > 1.0  # some were in flight across the election, not all before it
        acked_seq = {i: r["seq"] for i, r in enumerate(replies)}
        for member in (member_a, member_b):
            await member.wait_messages(room, total, timeout=30 * UNIT)
        # A sentinel, stored after every retry settled: each member has all it will ever get
        # of the messages (a duplicate would have come before it) once the sentinel is there.
        sentinel = await pub.publish(room, {"i": "sentinel"}, f"{tag}-sentinel")
        for member in (member_a, member_b):
            await member.wait_for(lambda f, s=sentinel["seq"]: f.get("seq") == s,
                                  timeout=60 * UNIT)
            msgs = [m for m in member.messages(room) if m["data"]["i"] != "sentinel"]
            assert sorted(m["data"]["i"] for m in msgs) == list(range(total))  # each once
            assert_chain(msgs)
            assert {m["data"]["i"]: m["seq"] for m in msgs} == acked_seq
        stored = await nc.jetstream().stream_info(place.stream, subjects_filter=place.subject)
        assert stored.state.subjects == {place.subject: total + 1}  # once each (+ sentinel)
    finally:
        if not victim.running:
            victim.start()
            await asyncio.to_thread(victim.wait_ready)
        await nc.close()
    for c in (member_a, member_b, pub):
        await c.close()
