"""Namespaces against a real 3-server JetStream cluster and real nodes (docs/namespaces.md):
rooms spread over K=3 streams with their leaders on different servers (order, history,
resume, and the chaos tests: kill -9 of a node and of a stream leader with publishes in
flight), latest-value rooms, backend-only publishing, per-namespace presence, and a node that
refuses an invalid file naming the line."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import nats
import pytest
import pytest_asyncio

from roomcast.backplane import streams
from roomcast.client import connect as client
from roomcast.namespaces import Namespace, parse
from tests.chaos import kill_9_of_the_clients_node, kill_9_of_the_rooms_stream_leader
from tests.helpers import (
    UNIT,
    WsClient,
    assert_chain,
    collect,
    room_name,
    start_node,
    token,
    wait_connected,
)

TOML = """
[defaults]
streams = 3

[namespaces.score]
storage = "latest"
publish = "backend"

[namespaces.quiet]
presence = false

[namespaces.stadium]
presence_events = "counts"

[namespaces.cursor]
storage = "ephemeral"
presence = false
"""
NAMESPACES = parse(TOML, Namespace())


@pytest.fixture(scope="module")
def toml_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ns") / "namespaces.toml"
    path.write_text(TOML)
    return str(path)


@pytest_asyncio.fixture
async def knodes(nats3):
    a = await start_node(nats3.urls, node_id="ka", nats_kw={"namespaces": NAMESPACES})
    b = await start_node(nats3.urls, node_id="kb", nats_kw={"namespaces": NAMESPACES})
    yield a, b
    await a.stop()
    await b.stop()


def rooms_in_every_stream(node, per_stream: int) -> list[str]:
    """Fresh room names, ``per_stream`` of them in each of the node's three default streams
    (names are random: drawn until every stream has its share, not left to luck)."""
    by_stream: dict[str, list[str]] = {}
    while len(by_stream) < 3 or min(len(v) for v in by_stream.values()) < per_stream:
        room = room_name()
        group = by_stream.setdefault(node.layout.place(room).stream, [])
        if len(group) < per_stream:
            group.append(room)
    return [r for group in by_stream.values() for r in group]


def ws(port: int) -> str:
    return f"ws://127.0.0.1:{port}/ws"


async def test_three_streams_with_leaders_on_three_servers(nats3, knodes):
    """Rooms land in ROOMS_DEFAULT_0..2 by their hash; the three streams lead on three
    different servers; each room keeps its own increasing seq and prev chain."""
    a, b = knodes
    nc = await nats.connect(nats3.urls)
    try:
        js = nc.jetstream()
        names = [f"ROOMS_DEFAULT_{k}" for k in range(3)]
        # The nodes spread the leaders when they created the streams; an election since (a
        # loaded machine) may have moved one: spreading again is what `streams apply` does.
        leaders = await streams.spread_leaders(nc, names, time.monotonic() + 60 * UNIT)
        assert len(set(leaders.values())) == 3, leaders
        rooms = rooms_in_every_stream(a, 4)
        assert {a.layout.place(r).stream for r in rooms} == set(names)
        pub = await WsClient.connect(a.port)
        member = await WsClient.connect(b.port)
        for r in rooms:
            await member.join(r)
        acks = await asyncio.gather(*(pub.publish(r, {"n": i}, f"{r}-{i}")
                                      for i in range(10) for r in rooms))
        assert all(x["type"] == "ack" for x in acks)
        for r in rooms:
            msgs = await member.wait_messages(r, 10)
            assert [m["data"]["n"] for m in msgs] == list(range(10))
            assert msgs[0]["prev"] == 0
            assert_chain(msgs)
            subject = a.layout.place(r).subject
            info = await js.stream_info(a.layout.place(r).stream, subjects_filter=subject)
            assert info.state.subjects == {subject: 10}
        await pub.close()
        await member.close()
    finally:
        await nc.close()


async def test_history_and_resume_across_three_streams(knodes):
    """A client that drops resumes on the other node and gets exactly what it missed in rooms
    of all three streams; history pages read the right stream."""
    a, b = knodes
    rooms = rooms_in_every_stream(a, 2)
    assert len({a.layout.place(r).stream for r in rooms}) == 3
    async with client([ws(a.port), ws(b.port)], token("kim"), shuffle_urls=False,
                      backoff_base=0.05) as c, client(ws(b.port), token("pub")) as pub:
        for r in rooms:
            await c.join(r)
        for r in rooms:
            await pub.publish(r, {"phase": "before"})
        got = await collect(c, len(rooms))
        from tests.helpers import drop

        drop(c)
        acked = {r: [await pub.publish(r, {"phase": "during", "i": i}) for i in range(3)]
                 for r in rooms}
        got += await collect(c, 3 * len(rooms))
        await wait_connected(c)
        assert c.node == "kb"
        for r in rooms:
            seqs = [m.seq for m in got if m.room == r and m.data["phase"] == "during"]
            assert seqs == acked[r]
            assert all(o["recovered"] for o in c.last_resume.values()), c.last_resume
            page = await c.history(r, limit=10)
            assert [m.seq for m in page.messages][:3] == list(reversed(acked[r]))


async def test_kill_9_of_a_stream_leader_with_publishes_in_flight(nats3, knodes):
    """The leader of the room's stream (one of three) is killed while publishes are in
    flight: every publish ends acked, each message is stored once and reaches members on both
    nodes exactly once in order with the seq its ack named (tests/chaos.py)."""
    a, b = knodes
    await kill_9_of_the_rooms_stream_leader(nats3, a, b, total=90, tag="k")


async def test_kill_9_of_the_clients_node_resumes_elsewhere(nats3, toml_file):
    """A node process on the same namespaces file is killed with SIGKILL while a publisher
    runs: the client resumes on the other node and has every acked message once, in order
    (tests/chaos.py)."""
    await kill_9_of_the_clients_node(nats3, env={"ROOMCAST_NAMESPACES": toml_file},
                                     nats_kw={"namespaces": NAMESPACES}, total=200)


async def test_latest_value_rooms_and_backend_only_publishing(knodes):
    """score.*: only the backend (server API) publishes; a new member gets the room's last
    message on join, and the stream keeps one message per room."""
    from roomcast.api import ServerApi

    a, _ = knodes
    room = f"score.{room_name()}"
    api = await ServerApi(list(a.config.nats.urls)).connect()
    try:
        for n in range(3):
            await api.publish(room, {"score": n})
        c = await WsClient.connect(a.port)
        joined = await c.join(room)
        [m] = await c.wait_messages(room, 1)
        assert m["data"] == {"score": 2}
        assert joined["replayed"] == 1 and joined["recovered"] is False
        reply = await c.request({"type": "publish", "room": room, "data": 1})
        assert reply["type"] == "error" and reply["code"] == "forbidden", reply
        assert "backend" in reply["message"]
        await api.publish(room, {"score": 3})
        live = await c.wait_messages(room, 2)
        assert live[-1]["data"] == {"score": 3}
        page = await c.request({"type": "history", "room": room, "limit": 10})
        assert [x["data"] for x in page["messages"]] == [{"score": 3}]
        await c.close()
    finally:
        await api.close()


async def test_presence_per_namespace(knodes):
    """quiet.*: no presence at all; stadium.*: counts only, never a member list."""
    a, b = knodes
    quiet, stadium = f"quiet.{room_name()}", f"stadium.{room_name()}"
    x, y = await WsClient.connect(a.port, token("x")), await WsClient.connect(b.port, token("y"))
    jq = await x.join(quiet)
    assert "presence" not in jq
    assert a.presence.state.user_count(quiet) == 0
    js = await x.join(stadium)
    assert "members" not in js["presence"] and js["presence"]["users"] == 1
    await y.join(stadium)
    deadline = time.monotonic() + 10 * UNIT
    while not any(f["type"] == "presence_count" and f.get("users") == 2 for f in x.frames):
        assert time.monotonic() < deadline, x.frames[-5:]
        await asyncio.sleep(0.05)
    assert not any(f["type"] in ("presence_diff", "presence_state") for f in x.frames)
    await x.close()
    await y.close()


async def test_ephemeral_rooms_go_over_core_nats_and_store_nothing(nats3, knodes):
    """cursor.*: members on both nodes get each message with seq 0 (no order kept); the ack
    says seq 0; no stream holds it, history is empty, and a resume says recovered: false.
    The Python client hands every seq-0 message over (no dedupe by seq)."""
    from roomcast.api import ServerApi

    a, b = knodes
    room = f"cursor.{room_name()}"
    assert a.layout.place(room).ephemeral
    x, y = await WsClient.connect(a.port, token("x")), await WsClient.connect(b.port, token("y"))
    jx = await x.join(room)
    await y.join(room)
    assert jx["seq"] == 0 and "presence" not in jx
    # Core NATS: y's node subscribed (and flushed) on its own server, and that interest reaches
    # x's server over the routes a moment later; a message published before then is not
    # forwarded (no guarantee, by design). Probe until y hears x, then count.
    for i in range(200):
        await x.publish(room, {"probe": i})
        if any(m["data"].get("probe") is not None for m in y.messages(room)):
            break
        await asyncio.sleep(0.02)
    acks = [await x.publish(room, {"pos": i}, f"c{i}") for i in range(5)]
    assert [k["seq"] for k in acks] == [0] * 5
    for member in (x, y):
        async with asyncio.timeout(20 * UNIT):
            while len(got := [m for m in member.messages(room) if "pos" in m["data"]]) < 5:
                member._changed.clear()
                await member._changed.wait()
        assert sorted(m["data"]["pos"] for m in got) == list(range(5))
        assert {(m["seq"], m["prev"]) for m in got} == {(0, None)}
    page = await y.request({"type": "history", "room": room, "limit": 10})
    assert page["messages"] == [] and page["more"] is False
    api = await ServerApi(list(a.config.nats.urls)).connect()
    try:
        assert await api.publish(room, {"pos": "backend"}) == 0
    finally:
        await api.close()
    async with client([ws(b.port)], token("z")) as c:
        await c.join(room)
        await api_publish_again(a, room)
        m = await c.next_message(10 * UNIT)
        assert (m.seq, m.data) == (0, {"pos": "again"})
        m2 = await c.next_message(10 * UNIT)
        assert (m2.seq, m2.data) == (0, {"pos": "again"})  # same seq 0: both handed over
    nc = await nats.connect(nats3.urls)
    try:
        for name in (f"ROOMS_DEFAULT_{k}" for k in range(3)):
            info = await nc.jetstream().stream_info(name, subjects_filter=f"rs.*.*.{room}")
            assert not info.state.subjects
    finally:
        await nc.close()
    resumed = await y.request({"type": "join", "room": room, "since": 3, "epoch": "x"})
    assert resumed["recovered"] is False and resumed["replayed"] == 0
    await x.close()
    await y.close()


async def api_publish_again(node, room: str) -> None:
    from roomcast.api import ServerApi

    api = await ServerApi(list(node.config.nats.urls)).connect()
    try:
        for _ in range(2):
            await api.publish(room, {"pos": "again"})
    finally:
        await api.close()


def test_an_invalid_namespaces_file_stops_the_node_naming_the_line(tmp_path):
    bad = tmp_path / "ns.toml"
    bad.write_text("[defaults]\nhistory = 5\n\n[namespaces.chat]\nstreams = 99\n")
    out = subprocess.run([sys.executable, "-m", "roomcast", "node", "--jwt-key", "k" * 32,
                          "--namespaces", str(bad), "--nats-url", "nats://127.0.0.1:1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert f"{bad}, line 5: streams must be 1..16" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
