"""Client-side history paging, in-band token refresh and rooms named by the token
(docs/protocol.md §1, §3.6, §3.7), on real nodes, a real 3-server JetStream cluster and real
WebSocket clients (raw and the Python client)."""

from __future__ import annotations

import asyncio
import time

import pytest

from roomcast.client import connect
from tests.helpers import UNIT, WsClient, room_name, token


async def test_the_history_frame_pages_both_ways(nodes):
    """`history` answers newest-first pages below `before` and oldest-first pages above
    `after`, no gap or duplicate between pages, `limit` bounded, subscribe permission needed,
    membership not."""
    a, b = nodes
    room = room_name()
    pub = await WsClient.connect(a.port)
    sent = sorted([(await pub.publish(room, i))["seq"] for i in range(120)])
    reader = await WsClient.connect(b.port, token("bob", subscribe=[room], publish=[]))
    back, before = [], None
    while True:
        frame = {"type": "history", "room": room, "limit": 50}
        if before is not None:
            frame["before"] = before
        page = await reader.request(frame)
        assert page["type"] == "history" and page["room"] == room
        seqs = [m["seq"] for m in page["messages"]]
        assert len(seqs) <= 50 and seqs == sorted(seqs, reverse=True)
        back += seqs
        if not page["more"]:
            break
        before = seqs[-1]
    assert back[::-1] == sent
    page = await reader.request({"type": "history", "room": room, "after": sent[9], "limit": 5})
    assert [m["seq"] for m in page["messages"]] == sent[10:15] and page["more"] is True
    assert page["messages"][1]["prev"] == sent[10] and page["messages"][0]["data"] == 10
    too_many = await reader.request({"type": "history", "room": room, "limit": 101})
    assert too_many["type"] == "error" and too_many["code"] == "bad_frame"
    other = await reader.request({"type": "history", "room": room_name()})
    assert other["type"] == "error" and other["code"] == "forbidden"
    for c in (pub, reader):
        await c.close()


async def test_the_python_client_reads_history(nodes):
    a, _ = nodes
    room = room_name()
    async with connect(f"ws://127.0.0.1:{a.port}/ws", token()) as c:
        seqs = [await c.publish(room, {"n": i}) for i in range(7)]
        page = await c.history(room, limit=4)
        assert [m.seq for m in page.messages] == seqs[::-1][:4] and page.more
        older = await c.history(room, before=page.messages[-1].seq)
        assert [m.seq for m in older.messages] == seqs[:3][::-1] and not older.more
        assert older.messages[0].data == {"n": 2} and older.messages[0].sender == "alice"


async def test_refresh_replaces_the_token_and_rechecks_rooms(nodes):
    """`refreshed` carries the new exp; rooms the new token no longer allows are left with
    reason "forbidden"; another user's token or a bad one is refused and changes nothing."""
    a, _ = nodes
    keep, drop = room_name("keep"), room_name("drop")
    c = await WsClient.connect(a.port, token("carol", subscribe=[keep, drop]))
    assert abs(c.welcome["exp"] - (time.time() + 3600)) < 60
    await c.join(keep)
    await c.join(drop)
    bad = await c.request({"type": "refresh", "token": "nonsense"})
    assert bad["type"] == "error" and bad["code"] == "bad_token" and not bad["temporary"]
    other = await c.request({"type": "refresh", "token": token("mallory")})
    assert other["code"] == "bad_token" and "another user" in other["message"]
    new = token("carol", subscribe=[keep], publish=[keep], ttl=7200)
    reply = await c.request({"type": "refresh", "token": new})
    assert reply["type"] == "refreshed" and reply["exp"] > c.welcome["exp"] + 3000
    left = await c.wait_for(lambda f: f["type"] == "left" and f.get("reason"))
    assert left["room"] == drop and left["reason"] == "forbidden" and "rid" not in left
    ack = await c.publish(keep, "allowed now")  # the new token's publish permission
    assert ack["type"] == "ack"
    refused = await c.join(drop)
    assert refused["code"] == "forbidden"
    await c.close()


async def test_the_server_asks_for_a_refresh_and_closes_4500_without_one(nodes):
    """`refresh_needed` comes at half the life of a short token (at most 30 s before exp);
    a connection that never refreshes is closed with 4500 at exp."""
    a, _ = nodes
    c = await WsClient.connect(a.port, token(ttl=4))
    needed = await c.wait_for(lambda f: f["type"] == "refresh_needed", timeout=10 * UNIT)
    assert needed["exp"] == c.welcome["exp"]
    assert await asyncio.wait_for(c.closed, 15 * UNIT) == 4500


async def test_the_python_client_refreshes_short_tokens_in_band(nodes):
    """Tokens of 4 s from a token function: the session outlives several of them on one
    connection, no reconnect, and keeps publishing and receiving."""
    a, _ = nodes
    room = room_name()
    minted = []

    def fresh() -> str:
        minted.append(time.time())
        return token("dave", ttl=4)

    async with connect(f"ws://127.0.0.1:{a.port}/ws", fresh) as c:
        await c.join(room)
        first_exp = c.token_expires
        for i in range(5):
            await c.publish(room, i)
            assert (await c.next_message(10 * UNIT)).data == i
            await asyncio.sleep(2)
        assert c.sessions == 1 and c.token_expires > first_exp + 6
        assert len(minted) >= 4


async def test_rooms_named_by_the_token_are_joined_at_connect_and_resumed(nodes):
    """`roomcast.rooms` in the token: joined before `welcome`, which reports them; the
    connection gets their messages without a join, and a resume replays what it missed."""
    a, b = nodes
    personal = f"user.erin-{room_name()}"
    tok = token("erin", subscribe=[], publish=[], rooms=[personal])
    c = await WsClient.connect(a.port, tok)
    assert set(c.welcome["rooms"]) == {personal} and "seq" in c.welcome["rooms"][personal]
    backend = await WsClient.connect(b.port)
    s1 = (await backend.publish(personal, "hello"))["seq"]
    assert (await c.wait_messages(personal, 1))[0]["seq"] == s1
    resume_token = c.welcome["resume_token"]
    await c.close()
    s2 = (await backend.publish(personal, "while away"))["seq"]
    again = await WsClient.connect(b.port, tok)
    reply = await again.request({"type": "resume", "token": resume_token,
                                 "rooms": {personal: s1}})
    assert reply["rooms"][personal]["recovered"] is True
    assert [m["seq"] for m in again.messages(personal)] == [s2]
    await again.close()
    await backend.close()


async def test_the_python_client_keeps_token_rooms(nodes):
    a, b = nodes
    personal = f"user.fay-{room_name()}"
    backend = await WsClient.connect(b.port)
    async with connect(f"ws://127.0.0.1:{a.port}/ws", token("fay", rooms=[personal])) as c:
        seq = (await backend.publish(personal, "note"))["seq"]
        msg = await c.next_message(10 * UNIT)
        assert (msg.room, msg.seq, msg.data) == (personal, seq, "note")
    await backend.close()


@pytest.mark.parametrize("rooms,reason", [
    ("lobby", "must be a list"),
    (["a b"], "invalid room name"),
    ([f"r{i}" for i in range(21)], "at most 20"),
])
async def test_a_bad_rooms_claim_is_refused_at_the_handshake(nodes, rooms, reason):
    import websockets

    a, _ = nodes
    tok = token(rooms=rooms)
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(f"ws://127.0.0.1:{a.port}/ws?token={tok}")
    assert info.value.response.status_code == 401
    assert reason in info.value.response.body.decode()
