"""roomcast.node.rooms over the in-memory backplane: fan-out, sequencer, catch-up."""

from __future__ import annotations

import asyncio
import json

from roomcast.backplane.base import RoomMessage
from roomcast.backplane.memory import MemoryBackplane
from roomcast.node.metrics import NodeMetrics
from roomcast.node.rooms import RoomRegistry


class FakeMember:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.writes: list[bytes] = []  # one per write_shared call (a room's batch)
        self.overflowed = False

    def send_frame(self, frame: bytes, wire: bytes | None = None) -> bool:
        self.frames.append(frame)
        return True

    def write_shared(self, data: bytes, frames) -> bool:
        self.writes.append(data)
        self.frames.extend(frame for _, frame, _ in frames)
        return True

    def overflow(self) -> None:
        self.overflowed = True

    def needs_drain(self) -> bool:
        return len(self.frames) % 7 == 0

    async def drain(self) -> None:
        await asyncio.sleep(0)

    def seqs(self) -> list[int]:
        return [json.loads(f)["seq"] for f in self.frames]

    def prevs(self) -> list[int | None]:
        return [json.loads(f)["prev"] for f in self.frames]


def registry(bp: MemoryBackplane, **kw) -> RoomRegistry:
    return RoomRegistry(bp, NodeMetrics("t"), **kw)


async def settle() -> None:
    """Let the registry's flush (scheduled for the next loop iteration) run."""
    for _ in range(3):
        await asyncio.sleep(0)


def body(i: int) -> bytes:
    return b'{"from":"u","ts":0,"id":null,"data":%d}' % i


async def test_one_frame_object_for_every_member():
    """A message is encoded once and the same bytes object goes to every member."""
    bp = MemoryBackplane()
    reg = registry(bp)
    members = [FakeMember() for _ in range(3)]
    for m in members:
        await reg.join(m, "r")
    await bp.publish("r", body(1), "a")
    await settle()
    assert members[0].frames[0] is members[1].frames[0] is members[2].frames[0]
    assert members[0].writes[0] is members[1].writes[0] is members[2].writes[0]


async def test_frames_of_one_iteration_are_joined_into_one_write_per_member():
    """Messages delivered in the same loop iteration reach each member in one write, in
    order, with presence frames in between where they happened."""
    bp = MemoryBackplane()
    reg = registry(bp)
    members = [FakeMember() for _ in range(3)]
    for m in members:
        await reg.join(m, "r")
    for i in range(1, 4):
        reg._on_message(RoomMessage("r", i, i - 1, body(i)))
        if i == 2:
            reg.broadcast("r", b'{"type":"presence"}')
    await settle()
    for m in members:
        assert len(m.writes) == 1
        assert [json.loads(f).get("seq") for f in m.frames] == [1, 2, None, 3]
    assert members[0].writes[0] is members[1].writes[0]


async def test_member_handed_over_mid_iteration_gets_no_duplicate():
    """A catch-up that ends while the room's frames of this iteration are still queued: the
    frames it already sent the member directly are not written to it again, the rest are."""

    class NoYield(MemoryBackplane):  # history without an await: the handover happens within
        async def history(self, room, start_seq, limit):  # the iteration that queued seq 4
            return [m for m in self._rooms.get(room, ()) if m.seq >= start_seq][:limit]

    bp = NoYield()
    reg = registry(bp)
    watcher = FakeMember()
    await reg.join(watcher, "r")
    for i in range(3):
        await bp.publish("r", body(i), f"p{i}")
    await settle()
    handlers = bp._subs.pop("r")
    await bp.publish("r", body(3), "p3")  # stored as seq 4; its live copy comes below
    bp._subs["r"] = handlers
    room = reg.rooms["r"]
    late = FakeMember()
    room.catching[late] = []
    reg._on_message(RoomMessage("r", 4, 3, body(3)))  # queued for the watcher, buffered for late
    res = await reg._catch_up(room, late, 1)
    reg._on_message(RoomMessage("r", 5, 4, body(4)))  # same iteration, late is a member now
    assert late.seqs() == [2, 3, 4] and res.position == 4  # replay, sent directly
    await settle()
    assert late.seqs() == [2, 3, 4, 5]
    assert late.prevs() == [1, 2, 3, 4]
    assert watcher.seqs() == [1, 2, 3, 4, 5] and len(watcher.writes) == 4


async def test_subscription_is_reference_counted():
    """The node subscribes on first join and unsubscribes after the last leave."""
    bp = MemoryBackplane()
    reg = registry(bp)
    a, b = FakeMember(), FakeMember()
    await reg.join(a, "r")
    await reg.join(b, "r")
    assert len(bp._subs["r"]) == 1
    await reg.leave(a, "r")
    assert "r" in bp._subs
    await reg.leave(b, "r")
    assert "r" not in bp._subs and "r" not in reg.rooms


async def test_duplicates_dropped_and_gaps_repaired_from_history():
    """A redelivered message is dropped; a live gap is filled from history, in order."""
    bp = MemoryBackplane()
    reg = registry(bp)
    m = FakeMember()
    res = await reg.join(m, "r")
    assert res.position == 0
    await bp.publish("r", body(1), "1")
    # Store 2 and 3 without live delivery (as if the node was disconnected from NATS).
    handlers = bp._subs.pop("r")
    await bp.publish("r", body(2), "2")
    await bp.publish("r", body(3), "3")
    bp._subs["r"] = handlers
    reg._on_message(RoomMessage("r", 1, 0, body(1)))  # duplicate
    await bp.publish("r", body(4), "4")
    for _ in range(20):
        await asyncio.sleep(0)
    assert m.seqs() == [1, 2, 3, 4]
    assert m.prevs() == [0, 1, 2, 3]


async def test_catch_up_replays_then_goes_live_without_loss_or_duplicate():
    """Join with since: replay in pages, messages published meanwhile arrive exactly once."""
    bp = MemoryBackplane()
    reg = registry(bp, history_page=7)
    for i in range(50):
        await bp.publish("r", body(i), f"p{i}")
    watcher = FakeMember()
    await reg.join(watcher, "r")
    late = FakeMember()

    async def publish_more():
        for i in range(50, 80):
            await bp.publish("r", body(i), f"p{i}")

    res, _ = await asyncio.gather(reg.join(late, "r", since=10), publish_more())
    assert res.recovered is True
    await bp.publish("r", body(80), "p80")
    await settle()
    assert late.seqs() == list(range(11, 82))
    assert late.prevs() == list(range(10, 81))


async def test_catch_up_reports_not_recovered_when_history_was_trimmed():
    """When the position is no longer retained: recovered false, retained messages replayed."""
    bp = MemoryBackplane(history_per_room=5)
    reg = registry(bp)
    for i in range(20):
        await bp.publish("r", body(i), f"p{i}")
    m = FakeMember()
    res = await reg.join(m, "r", since=3)
    assert res.recovered is False and res.replayed == 5
    assert m.seqs() == [16, 17, 18, 19, 20]
    assert m.prevs() == [None, 16, 17, 18, 19]


async def test_catch_up_at_the_head_is_recovered():
    """A position equal to the newest message replays nothing and is recovered."""
    bp = MemoryBackplane()
    reg = registry(bp)
    for i in range(3):
        await bp.publish("r", body(i), f"p{i}")
    m = FakeMember()
    res = await reg.join(m, "r", since=3)
    assert (res.recovered, res.replayed, res.position) == (True, 0, 3)
    await bp.publish("r", body(3), "p3")
    await settle()
    assert m.seqs() == [4] and m.prevs() == [3]


async def test_catch_up_buffer_overflow_closes_member():
    """A member whose live buffer overflows during replay is told to go (it resumes later)."""

    class SlowHistory(MemoryBackplane):
        gate = asyncio.Event()

        async def history(self, room, start_seq, limit):
            await self.gate.wait()
            return await super().history(room, start_seq, limit)

    bp = SlowHistory()
    reg = registry(bp, catchup_buffer=3)
    for i in range(5):
        await bp.publish("r", body(i), f"p{i}")
    m = FakeMember()
    task = asyncio.create_task(reg.join(m, "r", since=1))
    for _ in range(5):
        await asyncio.sleep(0)
    for i in range(5, 10):
        await bp.publish("r", body(i), f"p{i}")
    assert m.overflowed and m.frames == []
    bp.gate.set()
    await task


async def test_a_new_member_gets_no_presence_frame_queued_before_it_joined():
    """Presence frames queued in the iteration a member joins (its own join event among them)
    are not sent to it; frames queued after its join are (§4.10)."""
    bp = MemoryBackplane()
    reg = registry(bp)
    watcher, joiner = FakeMember(), FakeMember()
    await reg.join(watcher, "r")
    await settle()
    reg.broadcast("r", b'{"type":"presence","event":"join","user":"joiner"}')  # its own event
    await reg.join(joiner, "r")  # same iteration: the room is subscribed, no await inside
    reg.broadcast("r", b'{"type":"presence","event":"join","user":"later"}')
    await settle()
    assert [json.loads(f)["user"] for f in watcher.frames] == ["joiner", "later"]
    assert [json.loads(f)["user"] for f in joiner.frames] == ["later"]


async def test_a_re_join_of_a_member_reports_the_position_before_frames_still_queued():
    """Joining a room already joined, while messages of this iteration are still queued for
    the member, answers the position before them: they follow the `joined`, none is dropped
    by the client as a duplicate."""
    bp = MemoryBackplane()
    reg = registry(bp)
    m = FakeMember()
    await reg.join(m, "r")
    await bp.publish("r", body(1), "a")
    await settle()
    await bp.publish("r", body(2), "b")
    res = await reg.join(m, "r")
    assert res.position == 1
    await settle()
    assert m.seqs() == [1, 2]


async def test_since_beyond_the_rooms_last_seq_is_not_confirmed():
    """`since` past anything the room stored (a position never issued) is answered
    recovered=False with everything retained replayed, as for since=0, and the room's real
    position; live messages then flow (§3.1)."""
    bp = MemoryBackplane()
    reg = registry(bp)
    await bp.publish("r", body(1), "a")
    for since in (5, 1_000_000, 2**53 - 1):
        m = FakeMember()
        res = await reg.join(m, "r", since=since)
        assert (res.recovered, res.position, res.replayed) == (False, 1, 1)
        assert m.seqs() == [1]
        await reg.leave(m, "r")
    m = FakeMember()
    res = await reg.join(m, "r", since=1)
    assert (res.recovered, res.position) == (True, 1)
    await bp.publish("r", body(2), "b")
    await settle()
    assert m.seqs() == [2]


async def test_join_now_answers_as_join_does_once_the_room_is_subscribed():
    """``join_now`` (no coroutine) is ``join`` without ``since`` for a subscribed room, and
    declines (None) for a room not subscribed yet, which must be awaited."""
    bp = MemoryBackplane()
    reg = registry(bp)
    first, second, third = FakeMember(), FakeMember(), FakeMember()
    assert reg.join_now(first, "r") is None and "r" not in reg.rooms
    await reg.join(first, "r")
    await bp.publish("r", body(1), "a")
    await settle()
    await bp.publish("r", body(2), "b")  # queued for this iteration
    assert reg.join_now(second, "r").position == 2  # new: at the head, 2 not sent to it
    assert reg.join_now(first, "r").position == 1  # already a member: 2 is still to come
    await settle()
    await bp.publish("r", body(3), "c")
    await settle()
    assert first.seqs() == [1, 2, 3] and second.seqs() == [3]
    res = await reg.join(third, "r")  # the awaited join answers the same
    assert res.position == reg.join_now(FakeMember(), "r").position == 3
