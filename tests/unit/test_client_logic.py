"""roomcast.client pieces that need no server: close-code policy, message handling."""

from __future__ import annotations

import pytest

from roomcast.client import Client, retryable


@pytest.mark.parametrize("code,ok", [(None, True), (1000, True), (1006, True), (1012, True),
                                     (4001, True), (4002, True), (4499, True), (4500, False),
                                     (4999, False)])
def test_reconnect_policy(code, ok):
    """Codes below 4500 reconnect; 4500+ mean the credentials will not work again."""
    assert retryable(code) is ok


def frame(seq, prev, room="r"):
    return {"type": "message", "room": room, "seq": seq, "prev": prev, "from": "u", "ts": 1,
            "id": None, "data": seq}


async def test_dedupe_and_gap_detection():
    """Duplicates are dropped; a prev mismatch drops the message and asks for a replay."""
    c = Client("ws://unused", "t")
    asked = []
    c._send_join = lambda room, state: asked.append((room, state.position))  # type: ignore
    from roomcast.client.client import _Room

    c._rooms["r"] = _Room(position=10)
    await c._on_message(frame(11, 10))
    await c._on_message(frame(11, 10))  # duplicate
    await c._on_message(frame(9, 8))  # old
    await c._on_message(frame(15, 13))  # gap: 12..13 missing
    import asyncio

    await asyncio.sleep(0)
    assert asked == [("r", 11)]
    await c._on_message(frame(13, 11))  # the replay fills the gap
    await c._on_message(frame(15, 13))
    await c._on_message(frame(20, None))  # unknown prev after a lost window: accepted
    got = [c._inbox.get_nowait().seq for _ in range(c._inbox.qsize())]
    assert got == [11, 13, 15, 20]


def test_argument_validation():
    with pytest.raises(ValueError):
        Client([], "t")
    with pytest.raises(ValueError):
        Client("ws://x", "t", backoff_cap=60)


@pytest.mark.parametrize("position,seq,prev,verdict", [
    (None, 5, 3, "deliver"),  # nothing received yet: accept whatever comes first
    (5, 6, 5, "deliver"),
    (5, 5, 4, "duplicate"),
    (5, 3, 2, "duplicate"),
    (5, 9, 7, "gap"),
    (5, 9, None, "deliver"),  # prev unknown (history window exceeded): accept
])
def test_judge(position, seq, prev, verdict):
    """The dedupe/gap rule shared by the Python and browser clients."""
    from roomcast.client.model import judge

    assert judge(position, seq, prev).value == verdict


async def test_temporary_join_refusal_is_retried_not_dropped():
    """An 'unavailable' join keeps the room wanted and schedules another join."""
    import asyncio

    from roomcast.client.client import _Room

    c = Client("ws://unused", "t")
    c._rooms["r"] = _Room()
    rejoined = []

    async def fake_rejoin(room, session):
        rejoined.append(room)

    c._rejoin_later = fake_rejoin  # type: ignore[method-assign]
    c._requests[1] = ("join", ("r", None))
    c._on_error({"type": "error", "code": "unavailable", "message": "x", "temporary": True,
                 "room": "r", "rid": 1})
    await asyncio.sleep(0)
    assert rejoined == ["r"] and "r" in c._rooms
    c._requests[2] = ("join", ("r", None))
    c._on_error({"type": "error", "code": "forbidden", "message": "x", "temporary": False,
                 "room": "r", "rid": 2})
    assert "r" not in c._rooms


async def test_outbox_bounds_resends_and_settles():
    """Bounded; re-sent entries are those not sent on the current session; ack/fail settle."""
    import asyncio

    from roomcast.client.model import Outbox

    loop = asyncio.get_running_loop()
    box = Outbox(limit=2)
    a = box.add("r", "1", "a", loop.create_future())
    box.add("r", "2", "b", loop.create_future())
    with pytest.raises(OverflowError):
        box.add("r", "3", "c", loop.create_future())
    a.sent_on = 1
    assert [p.id for p in box.unsent(1)] == ["b"]
    assert [p.id for p in box.unsent(2)] == ["a", "b"]
    box.settle("a", 7)
    assert a.future.result() == 7
    box.fail("b", RuntimeError("no"))
    assert isinstance(box.get("b").future.exception(), RuntimeError)
    box.remove("a")
    box.remove("b")
    assert len(box) == 0 and box.get("a") is None and box.get(None) is None


def test_positions_move_forward_unless_the_server_says_not_recovered():
    """joined/resumed seq: max with the position, except recovered=False, which replaces it
    (a position from another epoch or never issued; protocol §7)."""
    from roomcast.client.client import Client
    from roomcast.client.model import _Room

    state = _Room(position=10)
    Client._advance(state, 7)
    assert state.position == 10
    Client._advance(state, 7, True)
    assert state.position == 10
    Client._advance(state, 12, None)
    assert state.position == 12
    Client._advance(state, 3, False)
    assert state.position == 3
