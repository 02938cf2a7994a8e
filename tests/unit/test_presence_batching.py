"""How a node's presence deltas are batched into NATS messages (presence/tracker.py), on the
tracker's own logic: NATS here is a recorder of publishes (the cluster tests cover the wire)."""

from __future__ import annotations

import asyncio
import itertools

from presence.state import Conn
from presence.tracker import (
    DELTA_BATCH,
    DELTA_BUSY_INTERVAL,
    PresenceConfig,
    PresenceTracker,
)
from presence.wire import Deltas, OneDelta, Step, dec_delta, enc
from roomcast.backplane import subjects


class Recorder:
    """Takes the tracker's publishes, with the loop time each was made."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, str, bytes]] = []
        self._changed = asyncio.Event()

    async def publish(self, subject: str, payload: bytes = b"", **_: object) -> None:
        self.sent.append((asyncio.get_running_loop().time(), subject, payload))
        self._changed.set()

    async def until(self, done) -> None:
        """Wait (at most 10 s) until ``done()`` holds after some publish."""
        async with asyncio.timeout(10):
            while not done():
                self._changed.clear()
                await self._changed.wait()

    def deltas(self) -> list[tuple[float, object]]:
        return [(t, dec_delta.decode(p)) for t, s, p in self.sent
                if s == subjects.PRESENCE_DELTA]


async def _stored(subject: str, data: bytes, msg_id: str) -> asyncio.Future:
    fut = asyncio.get_running_loop().create_future()
    fut.set_result(None)
    return fut


def tracker(nc: Recorder, instance: str = "A") -> tuple[PresenceTracker, list]:
    seen: list = []
    t = PresenceTracker(nc, _stored, node_id="a", instance=instance, config=PresenceConfig(),
                        replicas=1, on_transitions=seen.extend, close_conn=lambda c: None)
    return t, seen


def counters(msg) -> list[int]:
    return [s.counter for s in msg.deltas] if msg.deltas is not None else [msg.counter]


async def test_a_change_after_a_quiet_spell_leaves_after_one_batch_interval() -> None:
    nc = Recorder()
    t, _ = tracker(nc)
    loop = asyncio.get_running_loop()
    start = loop.time()
    t.track("r", "A.1", "ann", {})
    t.track("r", "A.2", "bob", {})
    await nc.until(nc.deltas)
    [(at, msg)] = nc.deltas()
    assert at - start >= DELTA_BATCH
    assert counters(msg) == [1, 2]  # both changes of the batch, one message
    t.events.close()


async def test_a_busy_node_sends_at_most_one_message_per_busy_interval_and_loses_nothing() -> None:
    nc = Recorder()
    t, _ = tracker(nc)
    n = 0
    for _ in range(40):  # changes every few ms for a while
        n += 1
        t.track("r", f"A.{n}", f"u{n}", {})
        await asyncio.sleep(0.004)
    await nc.until(lambda: sum(len(counters(m)) for _, m in nc.deltas()) >= n)
    sent = nc.deltas()
    times = [at for at, _ in sent]
    assert len(sent) >= 2
    assert all(b - a >= DELTA_BUSY_INTERVAL for a, b in itertools.pairwise(times))
    assert [c for _, m in sent for c in counters(m)] == list(range(1, n + 1))
    t.events.close()


def test_own_messages_are_dropped_and_a_similar_origin_is_not() -> None:
    nc = Recorder()
    t, seen = tracker(nc, instance="A")
    t.state.apply_snapshot("A2", 0, [])  # A2 is known and in sync
    own = enc.encode(Deltas("A", [Step(1, "join", Conn("r", "A.9", "eve", "A", 1))]))
    t._on_delta(b"", None, own)
    assert not t.state.has_conn("r", "A.9") and not seen
    other = enc.encode(OneDelta("A2", 1, "join", Conn("r", "A2.1", "ann", "A2", 1)))
    t._on_delta(b"", None, other)
    assert t.state.has_conn("r", "A2.1")
    assert [(x.op, x.user) for x in seen] == [("join", "ann")]
