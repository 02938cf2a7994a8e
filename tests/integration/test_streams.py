"""Streams are provisioned, not rewritten by whoever starts (docs/deploy.md): a node only
verifies them; `roomcast streams apply|check` changes and compares them; a stream recreated
under running nodes is noticed and clients recover honestly. Real 3-server JetStream cluster."""

from __future__ import annotations

import asyncio

import nats
import pytest

from roomcast.backplane.nats import NatsConfig
from roomcast.backplane.streams import apply_or_check
from roomcast.cli import main as cli
from roomcast.client import connect
from roomcast.natsserver import NatsCluster
from tests.helpers import UNIT, start_node, token
from tests.integration.test_presence import eventually


@pytest.fixture
def cluster():
    """A cluster of its own: these tests change and delete the streams."""
    with NatsCluster(3) as c:
        yield c


async def stream_config(urls, name="ROOMS"):
    nc = await nats.connect(urls)
    try:
        return (await nc.jetstream().stream_info(name)).config
    finally:
        await nc.close()


async def test_a_node_with_default_flags_does_not_rewrite_an_r3_stream(cluster, caplog):
    """A production-like R3 stream, then a node started with the defaults (replicas 1,
    another history): the stream is untouched and the node stays unready, saying which
    settings differ and how to fix it."""
    first = await start_node(cluster.urls, replicas=3)
    await first.stop()
    before = await stream_config(cluster.urls)
    assert before.num_replicas == 3
    node = await start_node(cluster.urls, replicas=1, nats_kw={"history_per_room": 10})
    try:
        ready, why = await node.readiness()
        assert not ready and "streams differ" in why
        problem = node.backplane.stream_problem
        assert "ROOMS.num_replicas: 3 -> 1 (loses redundancy or history)" in problem
        assert "ROOMS.max_msgs_per_subject: 1000 -> 10" in problem
        assert "roomcast streams apply --replicas 1" in problem
        assert any("not ready" in r.getMessage() for r in caplog.records)
        after = await stream_config(cluster.urls)
        assert (after.num_replicas, after.max_msgs_per_subject) == (3, 1000)
    finally:
        await node.stop()


async def test_streams_apply_and_check_round_trip(cluster, capsys):
    """apply creates both streams; check exits 0; a lossy change is refused without --yes
    (exit 1, nothing changed) and applied with it; check then agrees with the new settings."""
    urls = ",".join(cluster.urls)
    assert await asyncio.to_thread(cli, ["streams", "check", "--nats-url", urls,
                                         "--replicas", "3"]) == 1
    assert "ROOMS: missing" in capsys.readouterr().out
    assert await asyncio.to_thread(cli, ["streams", "apply", "--nats-url", urls,
                                         "--replicas", "3"]) == 0
    out = capsys.readouterr().out
    assert "created ROOMS" in out and "created PRESENCE" in out
    assert await asyncio.to_thread(cli, ["streams", "check", "--nats-url", urls,
                                         "--replicas", "3"]) == 0
    assert "ROOMS: ok (replicas 3)" in capsys.readouterr().out
    assert await asyncio.to_thread(cli, ["streams", "apply", "--nats-url", urls,
                                         "--replicas", "1", "--history-per-room", "5"]) == 1
    out = capsys.readouterr().out
    assert "refused: ROOMS.num_replicas: 3 -> 1" in out
    assert (await stream_config(cluster.urls)).num_replicas == 3
    assert await asyncio.to_thread(cli, ["streams", "apply", "--nats-url", urls,
                                         "--replicas", "1", "--history-per-room", "5",
                                         "--yes"]) == 0
    changed = await stream_config(cluster.urls)
    assert (changed.num_replicas, changed.max_msgs_per_subject) == (1, 5)
    assert await asyncio.to_thread(cli, ["streams", "check", "--nats-url", urls,
                                         "--replicas", "1", "--history-per-room", "5"]) == 0


async def test_a_stream_recreated_under_running_nodes(cluster):
    """Delete ROOMS and create it again while nodes run and a client is in a room: the nodes
    see the new epoch, send the client to resume (recovered: false, the new epoch), and the
    new stream's messages are delivered, not dropped as duplicates of the old ones."""
    a = await start_node(cluster.urls, replicas=3, node_id="sa")
    b = await start_node(cluster.urls, replicas=3, node_id="sb")
    try:
        room = "recreated.room"
        urls = [f"ws://127.0.0.1:{a.port}/ws", f"ws://127.0.0.1:{b.port}/ws"]
        outcomes: list[dict] = []  # every resume's per-room outcome

        def on_state(state, info) -> None:
            if info.get("resume"):
                outcomes.append(info["resume"].get(room, {}))

        async with connect(urls, token("ria"), shuffle_urls=False, backoff_base=0.05,
                           on_state=on_state) as c, \
                connect(urls[::-1], token("pub"), shuffle_urls=False, backoff_base=0.05) as pub:
            await c.join(room)
            for i in range(30):
                await pub.publish(room, i)
            old = [await c.next_message(10 * UNIT) for _ in range(30)]
            old_epoch = a.backplane.epoch
            nc = await nats.connect(cluster.urls)
            try:
                await nc.jetstream().delete_stream("ROOMS")
            finally:
                await nc.close()
            lines, ok = await apply_or_check(NatsConfig(urls=tuple(cluster.urls), replicas=3),
                                             "apply", allow_lossy=False, events_max_age=3600.0,
                                             wait=30.0)
            assert ok and "created ROOMS" in lines
            await eventually(lambda: a.backplane.epoch != old_epoch
                             and b.backplane.epoch == a.backplane.epoch, timeout=20 * UNIT)
            # Each node that notices sends its clients to resume: the first resume after the
            # recreation is not recovered (the position was from the old stream); a later one
            # from the adopted position may be.
            await eventually(lambda: any(o.get("recovered") is False for o in outcomes),
                             timeout=20 * UNIT)
            first = next(o for o in outcomes if o.get("recovered") is False)
            assert first["seq"] == 0  # the new stream's real position for the room
            seq = await pub.publish(room, "new stream")
            msg = await c.next_message(10 * UNIT)
            assert (msg.data, msg.seq) == ("new stream", seq)
            assert seq < old[-1].seq  # sequence numbers started again: not dropped as old
    finally:
        await a.stop()
        await b.stop()


async def test_streams_apply_with_a_namespaces_file(cluster, capsys, tmp_path):
    """`roomcast streams apply --namespaces FILE` (what the k8s init step runs) creates each
    namespace's streams with its own limits and spreads a partitioned namespace's leaders over
    the servers; `check` then agrees, and a node on the same file is ready; a node whose file
    says otherwise is unready and told to apply with its --namespaces."""
    ns = tmp_path / "ns.toml"
    ns.write_text('[namespaces.chat]\nstreams = 3\n\n[namespaces.score]\nstorage = "latest"\n')
    urls = ",".join(cluster.urls)
    args = ["--nats-url", urls, "--replicas", "3", "--namespaces", str(ns)]
    assert await asyncio.to_thread(cli, ["streams", "apply", *args]) == 0
    out = capsys.readouterr().out
    for name in ("ROOMS", "ROOMS_CHAT_0", "ROOMS_CHAT_1", "ROOMS_CHAT_2", "ROOMS_SCORE_0"):
        assert f"created {name}" in out, out
    leaders = [line for line in out.splitlines() if line.startswith("leaders: ")]
    assert len(leaders) == 1 and len({part.rsplit(" on ", 1)[1]
                                      for part in leaders[0][9:].split(", ")}) == 3, out
    assert (await stream_config(cluster.urls, "ROOMS_SCORE_0")).max_msgs_per_subject == 1
    assert await asyncio.to_thread(cli, ["streams", "check", *args]) == 0
    from roomcast.namespaces import Namespace, load

    node = await start_node(cluster.urls, replicas=3,
                            nats_kw={"namespaces": load(str(ns), Namespace()),
                                     "streams_mode": "verify"})
    try:
        assert (await node.readiness())[0]
    finally:
        await node.stop()
    other = tmp_path / "other.toml"
    other.write_text('[namespaces.chat]\nstreams = 3\nhistory = 5\n')
    node = await start_node(cluster.urls, replicas=3,
                            nats_kw={"namespaces": load(str(other), Namespace()),
                                     "namespaces_file": str(other), "streams_mode": "verify"})
    try:
        ready, _ = await node.readiness()
        assert not ready
        problem = node.backplane.stream_problem
        assert "ROOMS_CHAT_0.max_msgs_per_subject: 1000 -> 5" in problem, problem
        assert f"--namespaces {other}" in problem
    finally:
        await node.stop()


async def test_one_of_three_streams_recreated_touches_only_its_rooms(cluster):
    """Rooms over three streams; one stream is deleted and created again under running nodes:
    the client in one of its rooms is sent to resume and told recovered: false, then gets the
    new stream's messages; the client in a room of another stream stays connected, keeps its
    position, and misses nothing."""
    from roomcast.namespaces import Namespace, Namespaces

    spread = {"namespaces": Namespaces(Namespace(streams=3))}
    a = await start_node(cluster.urls, replicas=3, node_id="ka", nats_kw=spread)
    b = await start_node(cluster.urls, replicas=3, node_id="kb", nats_kw=spread)
    try:
        rooms = [f"r{i}" for i in range(50)]
        hit = next(r for r in rooms if a.layout.place(r).stream == "ROOMS_DEFAULT_1")
        kept = next(r for r in rooms if a.layout.place(r).stream == "ROOMS_DEFAULT_2")
        urls = [f"ws://127.0.0.1:{a.port}/ws", f"ws://127.0.0.1:{b.port}/ws"]
        outcomes: list[dict] = []

        def on_state(state, info) -> None:
            if info.get("resume"):
                outcomes.append(info["resume"])

        async with connect(urls, token("hit"), shuffle_urls=False, backoff_base=0.05,
                           on_state=on_state) as c_hit, \
                connect(urls, token("kept"), shuffle_urls=False, backoff_base=0.05) as c_kept, \
                connect(urls[::-1], token("pub"), shuffle_urls=False) as pub:
            await c_hit.join(hit)
            await c_kept.join(kept)
            for room, c in ((hit, c_hit), (kept, c_kept)):
                await pub.publish(room, "before")
                assert (await c.next_message(10 * UNIT)).data == "before"
            epochs = a.backplane._epochs[:]
            nc = await nats.connect(cluster.urls)
            try:
                await nc.jetstream().delete_stream("ROOMS_DEFAULT_1")
            finally:
                await nc.close()
            lines, ok = await apply_or_check(NatsConfig(urls=tuple(cluster.urls), replicas=3,
                                                        namespaces=spread["namespaces"]),
                                             "apply", allow_lossy=False, events_max_age=3600.0,
                                             wait=30.0)
            assert ok and "created ROOMS_DEFAULT_1" in lines, lines
            await eventually(lambda: a.backplane._epochs[1] != epochs[1]
                             and b.backplane._epochs == a.backplane._epochs, timeout=20 * UNIT)
            assert [a.backplane._epochs[i] for i in (0, 2)] == [epochs[0], epochs[2]]
            await eventually(lambda: any(o.get(hit, {}).get("recovered") is False
                                         for o in outcomes), timeout=20 * UNIT)
            for room, c in ((hit, c_hit), (kept, c_kept)):
                seq = await pub.publish(room, "after")
                msg = await c.next_message(10 * UNIT)
                assert (msg.data, msg.seq) == ("after", seq)
            assert c_kept.sessions == 1  # never sent away
            assert c_hit.sessions >= 2
    finally:
        await a.stop()
        await b.stop()
