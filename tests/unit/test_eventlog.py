"""The presence event log's batching: one store in flight per node, the rest merged behind it,
and at most one store per room per ``ROOM_INTERVAL`` unless a whole batch waits."""

from __future__ import annotations

import asyncio
import json

import pytest

from roomcast.backplane.natsclient import AckError
from roomcast.presence import eventlog
from roomcast.presence.eventlog import EventLog, fixed_batches


class Store:
    """Records every store attempt; each one's ack is resolved by the test."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list, str, asyncio.Future]] = []

    async def __call__(self, subject: str, data: bytes, msg_id: str) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.calls.append((subject, json.loads(data), msg_id, fut))
        return fut

    def in_flight(self) -> list:
        return [c for c in self.calls if not c[3].done()]


@pytest.fixture(autouse=True)
def no_room_interval(monkeypatch):
    """The batching tests below take the per-room interval out; its own tests put it back."""
    monkeypatch.setattr(eventlog, "ROOM_INTERVAL", 0.0)


def ev(n: int) -> bytes:
    return json.dumps({"n": n}).encode()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_first_event_goes_at_once_and_a_burst_is_merged_behind_it():
    store = Store()
    log = EventLog(store)
    log.add("r", ev(1), "i:1")
    await settle()
    assert [(c[1], c[2]) for c in store.calls] == [([{"n": 1}], "i:1")]
    for n in range(2, 6):
        log.add("r", ev(n), f"i:{n}")
    await settle()
    assert len(store.calls) == 1  # still one in flight for the room
    store.calls[0][3].set_result(None)
    await settle()
    assert [(c[1], c[2]) for c in store.calls[1:]] == [
        ([{"n": 2}, {"n": 3}, {"n": 4}, {"n": 5}], "i:2")]
    store.calls[1][3].set_result(None)
    assert await log.flush(1.0)
    assert (log.pending, log.stored, log.dropped) == (0, 2, 0)


async def test_one_store_in_flight_per_node_rooms_take_turns():
    store = Store()
    log = EventLog(store)
    log.add("a", ev(1), "i:1")
    log.add("b", ev(2), "i:2")
    log.add("a", ev(3), "i:3")
    await settle()
    log.add("b", ev(4), "i:4")
    seen = []
    for _ in range(2):
        await settle()
        (call,) = store.in_flight()
        seen.append((call[0], call[1]))
        call[3].set_result(None)
    assert await log.flush(1.0)
    assert seen == [("presence.events.a", [{"n": 1}, {"n": 3}]),
                    ("presence.events.b", [{"n": 2}, {"n": 4}])]


async def test_batches_are_capped(monkeypatch):
    monkeypatch.setattr(eventlog, "MAX_BATCH", 3)
    store = Store()
    log = EventLog(store)
    for n in range(7):
        log.add("r", ev(n), f"i:{n}")
    sizes = []
    while len(sizes) < 3:
        await settle()
        (call,) = store.in_flight()
        sizes.append(len(call[1]))
        call[3].set_result(None)
    assert sizes == [3, 3, 1]
    assert await log.flush(1.0)


async def test_fixed_batches_are_never_merged_and_keep_their_ids():
    store = Store()
    log = EventLog(store)
    log.add("r", ev(0), "i:0")
    log.add_fixed("r", [("c2", ev(2)), ("c1", ev(1))], "down")
    log.add("r", ev(3), "i:3")
    log.add("r", ev(4), "i:4")
    for _ in range(3):
        await settle()
        store.in_flight()[0][3].set_result(None)
    assert await log.flush(1.0)
    (digest_id,) = [b.msg_id for b in fixed_batches("r", [("c1", b""), ("c2", b"")], "down")]
    assert [(c[1], c[2]) for c in store.calls] == [
        ([{"n": 0}], "i:0"), ([{"n": 1}, {"n": 2}], digest_id), ([{"n": 3}, {"n": 4}], "i:3")]


def test_fixed_batch_ids_depend_on_the_connections_only():
    a = fixed_batches("r", [("c1", b"x"), ("c2", b"y")], "down")
    b = fixed_batches("r", [("c2", b"other ts"), ("c1", b"z")], "down")
    c = fixed_batches("r", [("c1", b"x")], "down")
    assert [x.msg_id for x in a] == [x.msg_id for x in b] != [x.msg_id for x in c]


async def test_a_failed_store_is_retried_with_the_same_id_before_later_events(monkeypatch):
    monkeypatch.setattr(eventlog, "RETRY_PAUSE", 0.01)
    store = Store()
    log = EventLog(store)
    log.add("r", ev(1), "i:1")
    await settle()
    log.add("r", ev(2), "i:2")
    store.calls[0][3].set_exception(AckError("stream unavailable"))
    await asyncio.sleep(0.05)
    assert [(c[1], c[2]) for c in store.calls] == [([{"n": 1}], "i:1"), ([{"n": 1}], "i:1")]
    store.calls[1][3].set_result(None)
    await settle()
    assert [(c[1], c[2]) for c in store.calls[2:]] == [([{"n": 2}], "i:2")]
    store.calls[2][3].set_result(None)
    assert await log.flush(1.0)


async def test_a_store_failing_past_the_retry_budget_is_dropped_and_counted(monkeypatch):
    monkeypatch.setattr(eventlog, "RETRY_PAUSE", 0.01)
    monkeypatch.setattr(eventlog, "RETRY_FOR", 0.05)

    async def failing(subject, data, msg_id):
        raise AckError("no stream")

    log = EventLog(failing)
    log.add("r", ev(1), "i:1")
    assert await log.flush(1.0)
    assert (log.stored, log.dropped, log.pending) == (0, 1, 0)


async def test_memory_is_bounded_while_stores_hang(monkeypatch):
    monkeypatch.setattr(eventlog, "MAX_PENDING", 10)
    store = Store()
    log = EventLog(store)
    for n in range(25):
        log.add("r", ev(n), f"i:{n}")
    assert (log.pending, log.dropped) == (10, 15)  # the oldest went
    await settle()
    assert store.calls[0][1] == [{"n": n} for n in range(15, 25)]
    assert not await log.flush(0.05)  # the store never answers
    log.close()


async def test_flush_with_nothing_waiting_returns_at_once():
    assert await EventLog(Store()).flush(0.01)


async def test_a_room_stores_once_per_interval_and_merges_what_arrives_meanwhile(monkeypatch):
    monkeypatch.setattr(eventlog, "ROOM_INTERVAL", 0.2)
    store = Store()
    log = EventLog(store)
    loop = asyncio.get_running_loop()
    log.add("r", ev(1), "i:1")
    await settle()
    assert len(store.calls) == 1  # a quiet room's first event goes at once
    t0 = loop.time()
    store.calls[0][3].set_result(None)
    log.add("r", ev(2), "i:2")
    log.add("other", ev(3), "i:3")
    await settle()
    assert [c[0] for c in store.calls[1:]] == ["presence.events.other"]  # not held back
    store.calls[1][3].set_result(None)
    await asyncio.sleep(0.1)
    log.add("r", ev(4), "i:4")
    await settle()
    assert len(store.calls) == 2  # room r is inside its interval
    for _ in range(100):
        if len(store.calls) == 3:
            break
        await asyncio.sleep(0.01)
    assert len(store.calls) == 3 and loop.time() - t0 >= 0.15
    assert store.calls[2][1:3] == ([{"n": 2}, {"n": 4}], "i:2")
    store.calls[2][3].set_result(None)
    assert await log.flush(1.0)
    assert (log.pending, log.stored, log.dropped) == (0, 3, 0)


async def test_a_whole_batch_waiting_is_not_held_by_the_interval(monkeypatch):
    monkeypatch.setattr(eventlog, "ROOM_INTERVAL", 30.0)
    store = Store()
    log = EventLog(store)
    log.add("r", ev(0), "i:0")
    await settle()
    store.calls[0][3].set_result(None)
    for n in range(1, eventlog.MAX_BATCH + 1):
        log.add("r", ev(n), f"i:{n}")
    await settle()
    assert len(store.calls) == 2 and len(store.calls[1][1]) == eventlog.MAX_BATCH
    store.calls[1][3].set_result(None)
    assert await log.flush(1.0)


async def test_remembered_room_times_stay_bounded_and_are_not_rescanned_per_event(monkeypatch):
    monkeypatch.setattr(eventlog, "ROOM_INTERVAL", 0.01)
    monkeypatch.setattr(eventlog, "ROOM_TIMES_MAX", 50)
    store = Store()
    log = EventLog(store)

    async def one_event_per_room(prefix: str, rooms: int, pause_every: int = 0) -> None:
        for n in range(rooms):
            log.add(f"{prefix}{n}", ev(n), f"{prefix}:{n}")
            await settle()
            for c in store.in_flight():
                c[3].set_result(None)
            if pause_every and n % pause_every == pause_every - 1:
                await asyncio.sleep(0.02)  # earlier rooms' intervals are over

    await one_event_per_room("r", 200, pause_every=50)
    assert await log.flush(1.0)
    assert len(log._room_next) <= 50 + 50
    # 300 rooms all inside their interval: the map is swept when it doubles, not on every event.
    monkeypatch.setattr(eventlog, "ROOM_INTERVAL", 30.0)
    sweeps = 0
    real = log._forget_room_times

    def counting() -> None:
        nonlocal sweeps
        sweeps += 1
        real()

    monkeypatch.setattr(log, "_forget_room_times", counting)
    await one_event_per_room("busy", 300)
    assert await log.flush(1.0)
    assert len(log._room_next) >= 300 and sweeps <= 4
