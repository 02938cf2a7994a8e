"""The per-room replay cache: what a resume may take from memory instead of JetStream."""

from __future__ import annotations

import asyncio
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from roomcast.backplane.memory import MemoryBackplane
from roomcast.node.metrics import NodeMetrics
from roomcast.node.replaycache import OVERHEAD, ReplayCache
from roomcast.node.rooms import RoomRegistry
from tests.unit.test_rooms import FakeMember, body, settle


def chain(cache: ReplayCache, room: str, seqs: list[int], prev: int = 0) -> None:
    for s in seqs:
        cache.append(room, s, prev, b"x")
        prev = s


def test_after_returns_the_suffix_after_a_known_position():
    c = ReplayCache()
    chain(c, "r", [3, 5, 9, 12], prev=1)
    assert [e[0] for e in c.after("r", 5, 12)] == [9, 12]
    assert [e[0] for e in c.after("r", 1, 12)] == [3, 5, 9, 12]
    assert c.after("r", 12, 12) == []  # nothing missed
    assert c.after("r", 0, 12) is None  # from the beginning: JetStream decides
    assert c.after("r", 13, 12) is None  # ahead of this node
    assert c.after("r", 4, 12) is None  # not a seq of the room: JetStream decides
    assert c.after("r", 2, 12) is None  # older than the tail (prev of the first entry is 1)
    assert c.after("other", 5, 12) is None
    assert c.after("r", 5, 13) is None  # the tail does not end at the room's last seq


def test_a_broken_chain_starts_over():
    c = ReplayCache()
    chain(c, "r", [1, 2, 3])
    c.append("r", 7, 5, b"x")  # prev 5 != 3: something between is unknown
    assert c.after("r", 3, 7) is None
    assert [e[0] for e in c.after("r", 5, 7)] == [7]


def test_per_room_bounds_drop_the_oldest():
    c = ReplayCache(room_messages=3)
    chain(c, "r", [1, 2, 3, 4, 5])
    assert [e[0] for e in c.after("r", 2, 5)] == [3, 4, 5]
    assert c.after("r", 1, 5) is None
    c = ReplayCache(room_bytes=2 * (OVERHEAD + 1))
    chain(c, "r", [1, 2, 3])
    assert c.after("r", 1, 3) == [(2, 1, b"x"), (3, 2, b"x")] and c.after("r", 0, 3) is None


def test_the_node_budget_drops_the_rooms_that_delivered_least_recently():
    per = OVERHEAD + 1
    c = ReplayCache(total_bytes=4 * per)
    chain(c, "a", [1, 2])
    chain(c, "b", [3, 4])
    c.append("a", 5, 2, b"x")  # over budget: b delivered least recently
    assert c.after("b", 3, 4) is None
    assert [e[0] for e in c.after("a", 1, 5)] == [2, 5]
    assert c.size == 3 * per
    c.drop("a")
    assert c.size == 0 and len(c) == 0


def test_history_read_is_prepended_only_where_it_joins_the_tail():
    c = ReplayCache()
    chain(c, "r", [10, 11], prev=8)
    c.prepend("r", [(5, None, b"x"), (7, 5, b"x")], anchor=11)  # ends at 7, tail begins after 8
    assert c.after("r", 5, 11) is None
    c.prepend("r", [(5, None, b"x"), (8, 5, b"x"), (10, 8, b"x")], anchor=11)
    assert [e[0] for e in c.after("r", 5, 11)] == [8, 10, 11]
    # Empty tail: joins at the anchor (the room's last delivered seq).
    c.prepend("s", [(1, 0, b"x"), (2, 1, b"x")], anchor=2)
    assert [e[0] for e in c.after("s", 1, 2)] == [2]
    c.prepend("t", [(1, 0, b"x"), (2, 1, b"x")], anchor=3)
    assert c.after("t", 1, 3) is None


def test_disabled_cache_keeps_nothing():
    c = ReplayCache(total_bytes=0)
    chain(c, "r", [1, 2, 3])
    assert c.after("r", 1, 3) is None and c.size == 0


async def test_a_second_resume_of_the_same_room_is_served_from_memory():
    """The storm case: a node with no member in the room; the first resume reads JetStream,
    what it read joins the room's tail, the next resumes take it from memory."""
    bp = MemoryBackplane()
    reads = []
    history = bp.history

    async def counting(room, start, limit):
        reads.append(start)
        return await history(room, start, limit)

    bp.history = counting
    reg = RoomRegistry(bp, NodeMetrics("t"))
    for i in range(6):
        await bp.publish("r", body(i), f"m{i}")
    a, b, c = FakeMember(), FakeMember(), FakeMember()
    await reg.join(a, "r", since=2)
    assert reads == [2]
    res_b = await reg.join(b, "r", since=2)
    res_c = await reg.join(c, "r", since=4)
    assert reads == [2]
    assert a.seqs() == b.seqs() == [3, 4, 5, 6] and c.seqs() == [5, 6]
    assert a.prevs() == b.prevs() == [2, 3, 4, 5]
    assert (res_b.position, res_b.recovered, res_b.replayed) == (6, True, 4)
    assert (res_c.position, res_c.recovered, res_c.replayed) == (6, True, 2)
    await bp.publish("r", body(7), "m7")
    await settle()
    d = FakeMember()
    await reg.join(d, "r", since=3)
    assert d.seqs() == [4, 5, 6, 7] and reads == [2]


async def _outcome(reg, since):
    m = FakeMember()
    res = await reg.join(m, "r", since=since)
    await settle()
    return m.seqs(), m.prevs(), res.position, res.recovered


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["r", "r", "other"]), max_size=50), st.integers(1, 8), st.data())
def test_a_resume_gets_the_same_with_and_without_the_cache(rooms, room_messages, data):
    """Whatever the room's history and the resume position (a seq of the room, of another
    room, or past the end): identical frames and results from a node with the cache and one
    without (JetStream, here in memory, decides)."""

    async def run():
        bp = MemoryBackplane(history_per_room=30)
        cached = RoomRegistry(bp, NodeMetrics("a"), history_page=4,
                              cache=ReplayCache(room_messages=room_messages))
        plain = RoomRegistry(bp, NodeMetrics("b"), history_page=4,
                             cache=ReplayCache(total_bytes=0))
        for reg in (cached, plain):
            await reg.join(FakeMember(), "r")
        for n, room in enumerate(rooms):
            await bp.publish(room, body(n), f"m{n}")
            if n % 5 == 0:
                await settle()
        await settle()
        near = sorted({x for n in range(len(rooms) + 2) for x in (n - 1, n, n + 1) if x >= 0})
        for since in data.draw(st.lists(st.sampled_from(near), min_size=1, max_size=8)):
            assert await _outcome(cached, since) == await _outcome(plain, since), since

    asyncio.run(run())


def test_frames_from_the_cache_are_well_formed():
    async def run():
        bp = MemoryBackplane()
        reg = RoomRegistry(bp, NodeMetrics("t"))
        await reg.join(FakeMember(), "r")
        await bp.publish("r", body(1), "a")
        await bp.publish("r", body(2), "b")
        await settle()
        m = FakeMember()
        await reg.join(m, "r", since=1)
        assert [json.loads(f)["data"] for f in m.frames] == [2]
        assert reg.cache.hits == 1

    asyncio.run(run())
