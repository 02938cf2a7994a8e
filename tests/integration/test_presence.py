"""Presence acceptance: a real 3-server JetStream cluster and two or more real nodes."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

import nats
import pytest
import pytest_asyncio

from roomcast.client.presence import RoomPresence
from roomcast.dev import NodeProcess
from roomcast.natsserver import free_port
from roomcast.presence.admin import query
from tests.helpers import KEY, PRESENCE_SCOPE, UNIT, WsClient, room_name, start_node, token

#: Every test here runs under both presence scopes (``--presence-scope cluster`` and
#: ``rooms``), unless it names its scopes (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("presence_scope")


def fast_env() -> dict[str, str]:
    """The environment of a node process with fast presence timers, in the current scope."""
    return {"ROOMCAST_PRESENCE_HEARTBEAT": "0.25", "ROOMCAST_PRESENCE_TIMEOUT": "1.5",
            "ROOMCAST_LOG_LEVEL": "warning", "ROOMCAST_PRESENCE_SCOPE": PRESENCE_SCOPE["scope"]}


def fast_presence():
    from roomcast.presence.tracker import PresenceConfig

    return PresenceConfig(heartbeat_interval=0.25, timeout=1.5, diff_interval=DIFF,
                          scope=PRESENCE_SCOPE["scope"])


def follows(n, room: str) -> bool:
    """Whether node ``n`` holds ``room``'s presence: always in cluster scope; room-scoped,
    while it has members there."""
    return not n.presence.scoped or room in n.presence.rooms


def ready_for(n, room: str, *, users: int | None = None, conns: int | None = None,
              writers=()) -> bool:
    """Whether a join on ``n`` now lists ``room`` as expected: in cluster scope (or when it
    follows the room) ``n``'s map shows it; room-scoped, ``n`` reads the room at the join, so
    the records of ``writers`` (the nodes with members there) must be stored."""
    if not follows(n, room):
        return all(not w.presence._outbox and not w.presence.writer.pending for w in writers)
    s = n.presence.state
    return ((users is None or s.user_count(room) == users)
            and (conns is None or s.conn_count(room) == conns))


#: The presence feed's batching interval in these tests (the default is 0.1 s).
DIFF = 0.02


@pytest_asyncio.fixture
async def nodes(nats3, presence_scope):
    a = await start_node(nats3.urls, node_id="pa", presence=fast_presence())
    b = await start_node(nats3.urls, node_id="pb", presence=fast_presence())
    yield a, b
    await a.stop()
    await b.stop()


async def flushed(c: WsClient) -> None:
    """Every presence frame its node had to send ``c`` for changes it applied before now has
    arrived: the feed's timer (armed at most ``DIFF`` ahead, on this same event loop) fires
    before this sleep ends, then a ping round trip brings what it queued."""
    await asyncio.sleep(DIFF * 2)
    assert (await c.request({"type": "ping"}))["type"] == "pong"


def presence_events(c: WsClient, room: str) -> list[tuple[str, str]]:
    """The joins and leaves a client sees: its ``joined`` list, then each presence frame merged
    in as the clients do (roomcast.client.presence)."""
    view, out = None, []
    for f in c.frames:
        if f.get("room") != room:
            continue
        if f["type"] == "joined" and "presence" in f:
            view = RoomPresence.of(f["presence"])
        elif f["type"].startswith("presence_") and view is not None:
            joined, left = view.apply(f)
            out += [("leave", u) for u in left] + [("join", u) for u in joined]
    return out


def saw(c: WsClient, room: str, event: str, user: str | None = None):
    """A predicate for ``wait_for``-style polling: ``c`` has seen ``user`` ``event``."""
    return lambda: any(e == event and (user is None or u == user)
                       for e, u in presence_events(c, room))


async def eventually(pred, timeout: float = 10 * UNIT, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)


async def test_members_on_different_nodes_see_each_other(nodes):
    """Users on A and B: member lists and join/leave events, cluster-wide."""
    a, b = nodes
    room = room_name()
    alice = await WsClient.connect(a.port, token("alice", info={"name": "Alice"}))
    j1 = await alice.join(room)
    assert set(j1["presence"]["members"]) == {"alice"}
    # Views converge within a NATS hop (docs/presence.md); right after the nodes start, B may
    # still be fetching A's snapshot.
    await eventually(lambda: ready_for(b, room, users=1, writers=(a,)))
    bob = await WsClient.connect(b.port, token("bob"))
    j2 = await bob.join(room)
    assert set(j2["presence"]["members"]) == {"alice", "bob"}
    assert j2["presence"]["members"]["alice"][0]["info"] == {"name": "Alice"}
    await eventually(saw(alice, room, "join", "bob"))
    assert presence_events(alice, room) == [("join", "bob")]
    assert presence_events(bob, room) == []  # no event for one's own join
    await bob.request({"type": "leave", "room": room})
    await eventually(saw(alice, room, "leave"))
    assert presence_events(alice, room) == [("join", "bob"), ("leave", "bob")]
    await alice.close()
    await bob.close()


async def test_tabs_of_one_user_count_once(nodes):
    """Two tabs (on two nodes): one member; closing one sends no leave; closing both, one."""
    a, b = nodes
    room = room_name()
    watcher = await WsClient.connect(a.port, token("watcher"))
    await watcher.join(room)
    tab1 = await WsClient.connect(a.port, token("tina"))
    tab2 = await WsClient.connect(b.port, token("tina"))
    await tab1.join(room)
    # B's view of A's connections is one NATS hop behind: wait for it, not for luck.
    await eventually(lambda: ready_for(b, room, conns=2, writers=(a,)))
    j = await tab2.join(room)
    assert j["presence"]["users"] == 2 and j["presence"]["connections"] == 3
    assert len(j["presence"]["members"]["tina"]) == 2
    await eventually(lambda: a.presence.state.conn_count(room) == 3)
    await tab1.close()
    await eventually(lambda: a.presence.state.conn_count(room) == 2)
    await flushed(watcher)  # A applied the leave of tab1: any event for it is queued before
    assert presence_events(watcher, room) == [("join", "tina")]
    await tab2.close()
    await eventually(saw(watcher, room, "leave"))
    await eventually(lambda: a.presence.state.conn_count(room) == 1)
    await flushed(watcher)
    assert presence_events(watcher, room) == [("join", "tina"), ("leave", "tina")]
    await watcher.close()


async def test_kill_9_node_users_leave_within_the_bound(nats3):
    """A node killed with SIGKILL: its users leave everyone's view within the timeout."""
    port = free_port()
    victim = NodeProcess("victim", "127.0.0.1", port, nats3.urls, KEY, 3, fast_env())
    survivor = await start_node(nats3.urls, node_id="survivor", presence=fast_presence())
    try:
        await asyncio.to_thread(victim.wait_ready)
        room = room_name()
        watcher = await WsClient.connect(survivor.port, token("wanda"))
        await watcher.join(room)
        doomed = [await WsClient.connect(port, token(f"d{i}")) for i in range(3)]
        for c in doomed:
            await c.join(room)
        await eventually(lambda: survivor.presence.state.user_count(room) == 4)
        t0 = time.monotonic()
        victim.proc.send_signal(signal.SIGKILL)
        await eventually(lambda: len([e for e in presence_events(watcher, room)
                                      if e[0] == "leave"]) == 3, timeout=10 * UNIT)
        elapsed = time.monotonic() - t0
        assert elapsed <= 1.5 + 0.25 * 2 + 2.0 * UNIT, elapsed  # timeout + heartbeats + margin
        assert survivor.presence.state.user_count(room) == 1
        reply = await query(nats3.urls, "presence", room)
        assert set(reply["members"]) == {"wanda"}
        await watcher.close()
    finally:
        victim.stop()
        await survivor.stop()


async def test_admin_queries_with_nodes_on_both_sides_and_one_nats_server_down(nats3, nodes):
    """presence/rooms/nodes/user admin answers are right, also with 1 of 3 NATS servers down."""
    a, b = nodes
    room = room_name()
    clients = [await WsClient.connect(n.port, token(u)) for n, u in
               ((a, "ann"), (b, "ben"), (b, "ann"))]
    for c in clients:
        await c.join(room)
    await eventually(lambda: all(n.presence.state.conn_count(room) == 3 for n in (a, b)))

    async def check() -> None:
        p = await query(nats3.urls, "presence", room)
        assert (p["users"], p["connections"]) == (2, 3) and set(p["members"]) == {"ann", "ben"}
        assert {c["node"] for c in p["members"]["ann"]} == {a.instance, b.instance}
        rooms = await query(nats3.urls, "rooms")
        assert rooms["rooms"][room] == {"users": 2, "connections": 3}
        live = (await query(nats3.urls, "nodes"))["nodes"]
        assert {a.instance, b.instance} <= set(live)
        assert live[a.instance]["connections"] == 1 and live[b.instance]["connections"] == 2
        user = await query(nats3.urls, "user", "ann")
        assert sorted(c["node"] for c in user["connections"]) == sorted([a.instance, b.instance])
        unknown = await query(nats3.urls, "bogus")
        assert "error" in unknown

    async def settled() -> None:
        """check() once the views agree (node counts travel on heartbeats)."""
        deadline = time.monotonic() + 10 * UNIT
        while True:
            try:
                return await check()
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    await settled()
    down = nats3.servers[2]
    down.kill()
    try:
        await asyncio.sleep(0.5)
        await settled()
    finally:
        down.start()
        down.wait_ready()
    for c in clients:
        await c.close()


async def test_resume_elsewhere_leaves_no_ghost(nodes):
    """The network to A goes silent; the client resumes on B: A's connection is evicted at
    once (no ghost), and other members see no leave/join churn."""
    a, b = nodes
    from roomcast.client import connect
    from tests.faults import TcpProxy
    from tests.helpers import drop

    room = room_name()
    proxy = TcpProxy(a.port)
    via_proxy = await proxy.start()
    watcher = await WsClient.connect(b.port, token("wes"))
    await watcher.join(room)
    try:
        async with connect([f"ws://127.0.0.1:{via_proxy}/ws", f"ws://127.0.0.1:{b.port}/ws"],
                           token("gina"), shuffle_urls=False, backoff_base=0.05) as c:
            await c.join(room)
            await eventually(saw(watcher, room, "join", "gina"))
            proxy.blackhole()  # A hears nothing more from this client, not even a close
            drop(c)
            await eventually(lambda: c.connected and c.node == "pb")
            await eventually(lambda: all(
                [m["node"] for m in n.presence.state.members(room).get("gina", [])]
                == [b.instance] for n in (a, b) if follows(n, room)), timeout=3 * UNIT)
            await flushed(watcher)  # B applied both: any churn event is queued before
            assert presence_events(watcher, room) == [("join", "gina")]
    finally:
        await watcher.close()
        await proxy.close()


async def test_backend_events_carry_a_sequence_chain_and_crash_leaves_are_stored_once(
        nats3, monkeypatch):
    """roomcast.events.presence.<room>: batches of join/leave events, seq/prev headers; a dead
    node's leaves are one batch that both survivors store under one id: kept once."""
    from roomcast.presence import tracker

    monkeypatch.setattr(tracker, "SAFETY_NET_DELAY", 0.3)  # the second survivor, soon
    port = free_port()
    victim = NodeProcess("victim2", "127.0.0.1", port, nats3.urls, KEY, 3, fast_env())
    s1 = await start_node(nats3.urls, node_id="s1", presence=fast_presence())
    s2 = await start_node(nats3.urls, node_id="s2", presence=fast_presence())
    nc = await nats.connect(nats3.urls)
    lost: list[WsClient] = []
    try:
        await asyncio.to_thread(victim.wait_ready)
        room = room_name()
        got: list = []

        async def on_event(msg):
            got.append((json.loads(msg.data), int(msg.headers["Nats-Sequence"]),
                        int(msg.headers["Nats-Last-Sequence"])))

        await nc.subscribe(f"roomcast.events.presence.{room}", cb=on_event)
        await nc.flush()
        keeper = await WsClient.connect(s1.port, token("kim"))
        await keeper.join(room)
        await eventually(lambda: len(got) == 1)
        for user in ("lou", "lea", "lux"):
            lost.append(await WsClient.connect(port, token(user)))
            await lost[-1].join(room)
        await eventually(lambda: sum(len(b) for b, _, _ in got) == 4)
        n_joins = len(got)
        base = [s.presence.events.stored for s in (s1, s2)]
        victim.proc.send_signal(signal.SIGKILL)
        await eventually(lambda: len(got) == n_joins + 1, timeout=10 * UNIT)
        # Both survivors stored the same batch (the second after the safety-net delay) and
        # JetStream acknowledged both: the second as a duplicate, re-published to nobody.
        if PRESENCE_SCOPE["scope"] == "cluster":
            await eventually(lambda: [s.presence.events.stored for s in (s1, s2)]
                             == [b + 1 for b in base], timeout=10 * UNIT)
        else:
            # Room-scoped, the first survivor stores the batch and then purges the dead node's
            # records; the other stores it again only if they are still there when its safety
            # net runs. Both have run when both counted their clean-up.
            await eventually(lambda: all(s.presence.cleanups_done == 1 for s in (s1, s2)),
                             timeout=10 * UNIT)
            grew = [s.presence.events.stored - b for s, b in zip((s1, s2), base, strict=True)]
            assert sorted(grew) in ([0, 1], [1, 1]), grew
        await nc.flush()
        assert len(got) == n_joins + 1
        events = [(e["type"], e["user"], e["first"], e["last"], e["reason"])
                  for batch, _, _ in got for e in batch]
        assert events[:4] == [("join", "kim", True, False, "client"),
                              ("join", "lou", True, False, "client"),
                              ("join", "lea", True, False, "client"),
                              ("join", "lux", True, False, "client")]
        crash = got[-1][0]
        assert sorted(e["user"] for e in crash) == ["lea", "lou", "lux"]
        assert [e["conn"] for e in crash] == sorted(e["conn"] for e in crash)
        assert all((e["type"], e["last"], e["reason"]) == ("leave", True, "node_down")
                   for e in crash)
        seqs = [s for _, s, _ in got]
        prevs = [p for _, _, p in got]
        assert prevs == [0] + seqs[:-1]
        await keeper.close()
    finally:
        for c in lost:
            await c.close()
        await nc.close()
        victim.stop()
        await s1.stop()
        await s2.stop()


async def test_a_drained_node_stores_its_connections_leave_events(nats3):
    """Graceful stop: the leave events of the connections it closes are stored before it
    exits (the event log is flushed, not cancelled)."""
    node = await start_node(nats3.urls, node_id="drained", presence=fast_presence(),
                            drain_window=0.2)
    nc = await nats.connect(nats3.urls)
    room = room_name()
    got: list = []

    async def on_event(msg):
        got.extend(json.loads(msg.data))

    try:
        await nc.subscribe(f"roomcast.events.presence.{room}", cb=on_event)
        await nc.flush()
        users = [f"d{i}" for i in range(20)]
        clients = [await WsClient.connect(node.port, token(u)) for u in users]
        await asyncio.gather(*(c.join(room) for c in clients))
        await eventually(lambda: len(got) == len(users))
        # The stream re-publishes an event as it stores it, so a subscriber may see it before
        # the node has the ack that counts it as stored.
        stored = f'roomcast_presence_events_total{{outcome="stored"}} {len(users)}.0'
        await eventually(lambda: stored in node.metrics.render().decode())
        scrape = node.metrics.render().decode()
        assert 'roomcast_presence_events_total{outcome="dropped"} 0.0' in scrape
        await node.stop()
        await eventually(lambda: len(got) == 2 * len(users))
        leaves = [(e["user"], e["reason"], e["last"]) for e in got if e["type"] == "leave"]
        assert sorted(leaves) == [(u, "client", True) for u in sorted(users)]
        for c in clients:
            await c.close()
    finally:
        await nc.close()
        await node.stop()



@pytest.mark.presence_scopes("cluster")  # room-scoped records travel one per entry
async def test_deltas_of_one_iteration_travel_as_one_message(nodes, nats3):
    """Joins made in the same event-loop iteration reach the other node as one NATS message
    (a batch, in counter order) and are all applied there."""
    a, b = nodes
    nc = await nats.connect(nats3.urls)
    seen: list[dict] = []

    async def on_delta(msg):
        seen.append(json.loads(msg.data))

    try:
        await nc.subscribe("roomcast.presence.delta", cb=on_delta)
        await nc.flush()
        room = room_name()
        for i in range(5):  # no await in between: one iteration
            a.presence.track(room, f"{a.instance}.b{i}", f"batch{i}", {})
        await eventually(lambda: b.presence.state.user_count(room) == 5)
        mine = [m for m in seen if m["origin"] == a.instance]
        assert len(mine) == 1 and len(mine[0]["deltas"]) == 5
        counters = [step[0] for step in mine[0]["deltas"]]
        assert counters == sorted(counters) and len(set(counters)) == 5
        a.presence.untrack(room, f"{a.instance}.b0")  # alone: the single form
        await eventually(lambda: b.presence.state.user_count(room) == 4)
        assert "counter" in [m for m in seen if m["origin"] == a.instance][-1]
    finally:
        await nc.close()


@pytest.mark.presence_scopes("cluster")  # the event log is the same under both scopes
async def test_events_made_while_the_event_streams_leader_dies_are_stored_once_in_order(
        nats3, nodes):
    """The PRESENCE stream's leader is killed while clients leave: the node keeps one store in
    flight and retries it under the same id through the election, so every leave event ends
    up in the stream exactly once, in the order the node made them."""
    a, _ = nodes
    room = room_name()
    nc = await nats.connect(nats3.urls)
    js = nc.jetstream()
    clients = [await WsClient.connect(a.port, token(f"elect{i}")) for i in range(30)]
    for c in clients:
        await c.join(room)
    leader = (await js.stream_info("PRESENCE")).cluster.leader
    victim = next(s for s in nats3.servers if s.name == leader)
    try:
        victim.kill()
        for c in clients:  # one by one: the node makes the leave events in this order
            await c.close()
            await asyncio.wait_for(c.closed, 5 * UNIT)
        victim.start()
        await asyncio.to_thread(victim.wait_ready)

        async def stored() -> list[dict]:
            out: list[dict] = []
            try:
                sub = await js.subscribe(f"presence.events.{room}", ordered_consumer=True)
            except (nats.errors.Error, TimeoutError):
                return out
            try:
                while True:
                    try:
                        msg = await sub.next_msg(timeout=0.5)
                    except TimeoutError:
                        return out
                    out.extend(json.loads(msg.data))
            finally:
                await sub.unsubscribe()

        want = [c.welcome["conn"] for c in clients]
        deadline = time.monotonic() + 40 * UNIT
        while True:
            leaves = [e["conn"] for e in await stored() if e["type"] == "leave"]
            if len(leaves) >= len(want) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert leaves == want  # all, once each, in order
        assert a.presence.events.dropped == 0
    finally:
        if not victim.running:
            victim.start()
            await asyncio.to_thread(victim.wait_ready)
        await nc.close()


async def test_admin_cli(nats3, nodes):
    """`roomcast admin rooms` prints the JSON answer."""
    a, _ = nodes
    room = room_name()
    c = await WsClient.connect(a.port, token("cli"))
    await c.join(room)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "roomcast", "admin", "presence", room, "--nats-url",
        ",".join(nats3.urls), stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 30 * UNIT)
    assert proc.returncode == 0
    assert set(json.loads(out)["members"]) == {"cli"}
    await c.close()
