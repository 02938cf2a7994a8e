"""Hostile input against real nodes on a real 3-server JetStream cluster: names that would
break NATS subjects, idempotency keys of different users, positions never issued, deep
nesting. Each gets a typed error (or an honest answer), the node keeps serving everyone else
and its NATS connection is never reset (docs/protocol.md §2, §3.1, §5)."""

from __future__ import annotations

import asyncio
import json
import logging

import nats
import pytest

from roomcast.errors import BackplaneError, PublishError
from tests.helpers import UNIT, WsClient, room_name, token

#: Room names NATS would misread inside a subject; every one must be refused as bad_room.
HOSTILE_ROOMS = ["chat.y\n", "chat.y\r\n", "chat\n.y", "a b", "a\tb", "a\r\nPUB x 1\r\n",
                 "a\x00", "a.>", "a.*", ">", "*", "a..b", ".a", "a.", "ünï", "x" * 201]


def reconnects(node) -> int:
    return node.backplane.nc.stats["reconnects"]


async def test_names_nats_would_misread_are_refused_and_nats_is_untouched(nodes):
    """join/publish/leave/resume with hostile room names: bad_room or bad_frame, the
    connection stays open, the node's NATS connection is not reset, and a bystander's
    publishes on the same node are acknowledged as usual."""
    a, _ = nodes
    before = reconnects(a)
    room = room_name()
    bystander = await WsClient.connect(a.port, token("bystander"))
    await bystander.join(room)
    bad = await WsClient.connect(a.port, token("mallory"))
    for name in HOSTILE_ROOMS:
        for frame in ({"type": "join", "room": name}, {"type": "publish", "room": name,
                                                       "data": 1}):
            reply = await bad.request(frame)
            assert reply["type"] == "error" and reply["code"] == "bad_room", (name, reply)
        assert (await bad.request({"type": "leave", "room": name}))["code"] == "not_joined"
        reply = await bad.request({"type": "resume", "token": bad.welcome["resume_token"],
                                   "rooms": {name: 1}})
        assert reply["code"] == "bad_frame", (name, reply)
        ack = await bystander.publish(room, {"after": name})
        assert ack["type"] == "ack"
    assert (await bad.request({"type": "ping"}))["type"] == "pong"
    assert not bad.closed.done()
    assert len(await bystander.wait_messages(room, len(HOSTILE_ROOMS))) == len(HOSTILE_ROOMS)
    assert reconnects(a) == before and a.backplane.connected
    await bad.close()
    await bystander.close()


async def test_a_bad_subject_fails_that_request_only(nodes):
    """Defence in depth: a name that slipped past validation fails its own request at the NATS
    seam (publish, subscribe, history, last_seq), at once, and the connection is untouched."""
    a, _ = nodes
    bp = a.backplane
    before = reconnects(a)
    async with asyncio.timeout(2 * UNIT):  # refused at once, not retried for the budget
        with pytest.raises(PublishError):
            await bp.publish("chat.y\n", b"{}", "u1.x")
        with pytest.raises(PublishError):
            await (await bp.publish_begin("a b", b"{}", "u1.y"))
        with pytest.raises(BackplaneError):
            await bp.subscribe("chat.y\n", lambda m: None)
        with pytest.raises(BackplaneError):
            await bp.history("chat.y\r\n", 1, 10)
        with pytest.raises(BackplaneError):
            await bp.last_seq("a b")
    room = room_name()
    res = await bp.publish(room, b'{"from":"x","ts":0,"id":null,"data":1}', "u1.ok")
    assert res.seq > 0 and reconnects(a) == before and bp.connected


async def test_a_stream_nobody_serves_yet_is_a_backplane_error_after_a_short_retry(nodes):
    """"No responders" (a direct get before any server serves the stream: just created, or
    between leaders) is retried briefly, then a BackplaneError, which a join turns into an
    `unavailable` error frame. It once escaped as nats' own error and closed the connection."""
    from roomcast.backplane import subjects

    a, _ = nodes
    t0 = asyncio.get_running_loop().time()
    with pytest.raises(BackplaneError, match="no JetStream server answers"):
        await a.backplane._request(f"{subjects.direct_get('NO_SUCH_STREAM')}.x", b"",
                                   "last_seq of 'x'")
    assert asyncio.get_running_loop().time() - t0 >= 1.0  # retried, not refused at once


async def test_two_users_cannot_affect_each_others_publishes(nodes):
    """Idempotency keys are per (user, id), unambiguous and unaltered: `col` + `x:y` and
    `col:x` + `y` are two messages; ids differing in whitespace are two messages; a user whose
    `sub` is another connection's id cannot squat that connection's publishes without id."""
    a, b = nodes
    room = room_name()
    member = await WsClient.connect(b.port, token("watcher"))
    await member.join(room)
    col = await WsClient.connect(a.port, token("col"))
    colx = await WsClient.connect(b.port, token("col:x"))
    acks = [await col.publish(room, 1, "x:y"), await colx.publish(room, 2, "y"),
            await col.publish(room, 3, "m"), await col.publish(room, 4, "m "),
            await col.publish(room, 5, " m")]
    victim = await WsClient.connect(a.port, token("victim"))
    conn_id = victim.welcome["conn"]
    squatter = await WsClient.connect(b.port, token(conn_id))
    # Old scheme: the victim's first publish without id had the key "<conn id>:1".
    acks.append(await squatter.publish(room, 6, "1"))
    acks.append(await squatter.publish(room, 7, f"{conn_id}:1"))
    acks.append(await victim.publish(room, 8))
    acks.append(await victim.publish(room, 9))
    assert all(x["type"] == "ack" and x["duplicate"] is False for x in acks), acks
    assert len({x["seq"] for x in acks}) == len(acks)
    msgs = await member.wait_messages(room, len(acks))
    assert [m["data"] for m in msgs] == list(range(1, 10))
    assert [m["id"] for m in msgs][:5] == ["x:y", "y", "m", "m ", " m"]  # never altered
    # A retry is still recognised, through the other node too.
    again = await WsClient.connect(b.port, token("col"))
    dup = await again.publish(room, 1, "x:y")
    assert dup["duplicate"] is True and dup["seq"] == acks[0]["seq"]
    for c in (member, col, colx, victim, squatter, again):
        await c.close()


async def test_a_position_never_issued_is_not_confirmed(nodes):
    """`join` with `since` beyond the room's last seq is recovered=false with the real
    position, and the client then receives live messages; numbers no JSON peer represents
    exactly are bad_frame (§3.1)."""
    a, b = nodes
    room = room_name()
    c = await WsClient.connect(a.port)
    fresh = await c.join(room, since=1_000_000)
    assert (fresh["type"], fresh["recovered"], fresh["seq"]) == ("joined", False, 0)
    pub = await WsClient.connect(b.port)
    first = await pub.publish(room, "one")
    await c.wait_messages(room, 1)
    last, stored = first["seq"], 1
    for since in (last + 1, 2**53 - 1):
        other = await WsClient.connect(b.port)
        j = await other.join(room, since=since)
        # Not confirmed: everything retained is replayed, as for since=0.
        assert (j["recovered"], j["seq"], j["replayed"]) == (False, last, stored)
        assert other.messages(room)[-1]["seq"] == last
        last = (await pub.publish(room, since))["seq"]
        stored += 1
        assert (await other.wait_messages(room, stored))[-1]["seq"] == last
        await other.close()
    ok = await WsClient.connect(b.port)
    j = await ok.join(room, since=last)
    assert (j["recovered"], j["seq"]) == (True, last)
    for raw in ('{"type":"join","room":"%s","since":1000000000000000000000000000000,"rid":"x"}',
                '{"type":"join","room":"%s","since":9223372036854775808,"rid":"x"}'):
        await ok.ws.send(raw % room)
        err = await ok.wait_for(lambda f: f.get("rid") == "x")
        assert err["code"] == "bad_frame"
        ok.frames.clear()
    for x in (c, pub, ok):
        await x.close()


async def test_deep_nesting_is_a_bad_frame_without_error_logs(nodes, caplog):
    """About 1,000 levels of nesting in data, rid, an unknown field or since (and 100,000):
    bad_frame on an open connection, no error-level log; the admin subjects answer a nested
    payload with an error reply."""
    a, _ = nodes
    room = room_name()
    c = await WsClient.connect(a.port)
    await c.join(room)
    caplog.set_level(logging.WARNING)
    for depth in (1000, 32_000):  # the second just under the 64 KiB frame limit
        nest = "[" * depth + "]" * depth
        for raw in (f'{{"type":"publish","room":"{room}","data":{nest}}}',
                    f'{{"type":"ping","rid":{nest}}}', f'{{"type":"ping","zz":{nest}}}',
                    f'{{"type":"join","room":"{room}","since":{nest}}}'):
            c.frames.clear()
            await c.ws.send(raw)
            err = await c.wait_for(lambda f: f["type"] == "error")
            assert err["code"] == "bad_frame", err
    assert (await c.request({"type": "ping"}))["type"] == "pong"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    nc = await nats.connect(a.config.nats.urls[0])
    try:
        for nested in ('{"user":' + "[" * 1000 + "]" * 1000 + "}",
                       '{"user":"u","zz":' + "[" * 1000 + "]" * 1000 + "}"):
            msg = await nc.request("roomcast.admin.user", nested.encode(), timeout=5 * UNIT)
            assert "nested deeper" in json.loads(msg.data)["error"]
        msg = await nc.request("roomcast.admin.user", b"{not json", timeout=5 * UNIT)
        assert "unreadable" in json.loads(msg.data)["error"]
    finally:
        await nc.close()
    await c.close()
