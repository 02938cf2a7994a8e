"""The server API over NATS (docs/api.md): backend publishes, broadcasts and history, on real
nodes and a real 3-server JetStream cluster."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest
import pytest_asyncio

from roomcast.natsserver import NatsCluster
from tests.helpers import UNIT, WsClient, assert_chain, room_name, start_node, token


@pytest.fixture(scope="module")
def big_history():
    """A cluster of its own: its streams keep 6,000 messages per room."""
    with NatsCluster(3) as c:
        yield c


@pytest_asyncio.fixture
async def api_nodes(big_history):
    kw = {"nats_kw": {"history_per_room": 6000}, "rate_limit": 1e5, "rate_burst": 100_000}
    a = await start_node(big_history.urls, node_id="api-a", **kw)
    b = await start_node(big_history.urls, node_id="api-b", **kw)
    nc = await nats.connect(big_history.urls)
    yield a, b, nc
    await nc.close()
    await a.stop()
    await b.stop()


async def call(nc, method: str, body) -> dict:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    msg = await nc.request(f"roomcast.api.{method}", payload, timeout=10 * UNIT)
    return json.loads(msg.data)


async def test_a_backend_publish_reaches_members_on_both_nodes_once(api_nodes):
    """Stored before the reply, in the room's seq/prev chain with client publishes, once after
    a retried request with the same id; a user publishing the same id is another message."""
    a, b, nc = api_nodes
    room = room_name()
    ma, mb = await WsClient.connect(a.port), await WsClient.connect(b.port)
    await ma.join(room)
    await mb.join(room)
    user = await WsClient.connect(a.port, token("backend"))  # a user named like the backend
    first = await user.publish(room, "from a user", "order-1")
    r1 = await call(nc, "publish", {"room": room, "data": {"shipped": 7}, "id": "order-1"})
    r2 = await call(nc, "publish", {"room": room, "data": {"shipped": 7}, "id": "order-1"})
    r3 = await call(nc, "publish", {"room": room, "data": "no id", "from": "billing"})
    assert r1["duplicate"] is False and r2 == {"seq": r1["seq"], "duplicate": True}
    assert first["duplicate"] is False and first["seq"] != r1["seq"]
    for m in (ma, mb):
        msgs = await m.wait_messages(room, 3)
        assert [x["seq"] for x in msgs] == [first["seq"], r1["seq"], r3["seq"]]
        assert_chain(msgs)
        assert (msgs[1]["from"], msgs[1]["id"], msgs[1]["data"]) == ("backend", "order-1",
                                                                     {"shipped": 7})
        assert msgs[2]["from"] == "billing"
    hist = await call(nc, "history", {"room": room})
    assert [x["seq"] for x in hist["messages"]] == [r3["seq"], r1["seq"], first["seq"]]
    assert hist["more"] is False
    for c in (ma, mb, user):
        await c.close()


async def test_broadcast_answers_per_room(api_nodes):
    _, _, nc = api_nodes
    rooms = [room_name(), room_name(), "bad room"]
    reply = await call(nc, "broadcast", {"rooms": rooms, "data": 1, "id": "b-1"})
    assert reply["error"]["code"] == "bad_room"  # one bad name refuses the whole request
    reply = await call(nc, "broadcast", {"rooms": rooms[:2], "data": 1, "id": "b-1"})
    again = await call(nc, "broadcast", {"rooms": rooms[:2], "data": 1, "id": "b-1"})
    results = reply["results"]
    assert results[rooms[0]]["seq"] != results[rooms[1]]["seq"]
    assert all(again["results"][r] == {**results[r], "duplicate": True} for r in rooms[:2])


async def test_history_pages_through_5000_messages_both_ways(api_nodes):
    """Pages of `limit` newest-first with `before`, and oldest-first with `after`: together
    every message once, in order, no gap or duplicate between pages; `more` says when to stop."""
    a, _, nc = api_nodes
    room = room_name()
    pub = await WsClient.connect(a.port)
    sent = []
    for start in range(0, 5000, 250):
        acks = await asyncio.gather(*(pub.publish(room, i) for i in range(start, start + 250)))
        sent += [x["seq"] for x in acks]
    sent.sort()
    back, before = [], None
    while True:
        req = {"room": room, "limit": 700, **({"before": before} if before else {})}
        page = await call(nc, "history", req)
        seqs = [m["seq"] for m in page["messages"]]
        assert seqs == sorted(seqs, reverse=True) and len(seqs) <= 700
        back += seqs
        if not page["more"]:
            break
        before = seqs[-1]
    assert back[::-1] == sent
    forward, after = [], 0
    while True:
        page = await call(nc, "history", {"room": room, "after": after, "limit": 900})
        msgs = page["messages"]
        forward += [m["seq"] for m in msgs]
        for x, y in zip(msgs, msgs[1:], strict=False):
            assert y["prev"] == x["seq"]
        if not page["more"]:
            break
        after = msgs[-1]["seq"]
    assert forward == sent
    await pub.close()


@pytest.mark.parametrize("method,body,code", [
    ("publish", b"{not json", "bad_request"),
    ("publish", {"room": "a b", "data": 1}, "bad_room"),
    ("publish", {"room": "chat.y\n", "data": 1}, "bad_room"),
    ("publish", {"room": "r"}, "bad_request"),
    ("publish", ("{\"room\":\"r\",\"data\":" + "[" * 1000 + "]" * 1000 + "}").encode(),
     "bad_request"),
    ("publish", {"room": "r", "data": "x" * 70_000}, "bad_request"),
    ("history", {"room": "r", "limit": 100_000}, "bad_request"),
    ("history", {"room": "r", "before": 2**60}, "bad_request"),
    ("disconnect", {}, "bad_request"),
    ("disconnect", {"user": "u", "code": 4001}, "bad_request"),
    ("disconnect", {"user": "u\n"}, "bad_request"),
    ("disconnect", {"user": "u", "reason": "r" * 101}, "bad_request"),
    ("unsubscribe", {"user": "u"}, "bad_request"),
    ("unsubscribe", {"user": "u", "room": "a b"}, "bad_room"),
    ("unsubscribe", {"user": "u", "room": ""}, "bad_room"),
    ("nope", {}, "unknown_method"),
])
async def test_bad_requests_get_documented_errors(api_nodes, method, body, code):
    _, _, nc = api_nodes
    reply = await call(nc, method, body)
    assert reply["error"]["code"] == code, reply


async def test_the_python_sdk_and_the_cli(api_nodes, big_history, capsys):
    """roomcast.api (async and sync) and `roomcast publish` / `roomcast history` do what the
    raw requests do; a refused request is an ApiRequestError with the documented code."""
    from roomcast.api import ApiRequestError, ServerApi, SyncServerApi
    from roomcast.cli import main

    room = room_name()
    async with ServerApi(big_history.urls) as api:
        seq = await api.publish(room, {"n": 1}, id="sdk-1", sender="sdk")
        assert await api.publish(room, {"n": 1}, id="sdk-1") == seq
        with pytest.raises(ApiRequestError) as info:
            await api.publish("bad room", 1)
        assert info.value.code == "bad_room"
    sync = await asyncio.to_thread(SyncServerApi, big_history.urls)
    try:
        seq2 = await asyncio.to_thread(sync.publish, room, "sync")
        page = await asyncio.to_thread(sync.history, room, limit=10)
        assert [m["seq"] for m in page["messages"]] == [seq2, seq]
    finally:
        await asyncio.to_thread(sync.close)
    url = ",".join(big_history.urls)
    assert await asyncio.to_thread(main, ["publish", room, '{"cli": true}', "--nats-url", url]) == 0
    seq3 = int(capsys.readouterr().out.strip())
    assert await asyncio.to_thread(main, ["history", room, "--limit", "2", "--nats-url", url]) == 0
    out = capsys.readouterr()
    lines = [json.loads(x) for x in out.out.splitlines()]
    assert [m["seq"] for m in lines] == [seq3, seq2] and lines[0]["data"] == {"cli": True}
    assert "more" in out.err
    assert await asyncio.to_thread(main, ["publish", "a b", "1", "--nats-url", url]) == 1


async def test_unsubscribe_and_disconnect_act_on_every_node(api_nodes):
    """`unsubscribe` takes the user's connections on both nodes out of the room (a `left` with
    the reason, bystanders unaffected); `disconnect` of one connection closes it with 4003;
    `disconnect` with `ban` closes the rest with 4502 and revokes the resume tokens issued so
    far, on every node; a session started after the ban resumes normally."""
    a, b, nc = api_nodes
    room = room_name()
    zed = [await WsClient.connect(n.port, token("zed")) for n in (a, a, b)]
    bystander = await WsClient.connect(b.port, token("yan"))
    for c in (*zed, bystander):
        await c.join(room)
    reply = await call(nc, "unsubscribe", {"user": "zed", "room": room})
    assert reply["removed"] == 3 and reply["nodes"] >= 2
    for c in zed:
        left = await c.wait_for(lambda f: f["type"] == "left")
        assert left["room"] == room and left["reason"] == "unsubscribed"
    seq = (await bystander.publish(room, "still here"))["seq"]
    assert (await bystander.wait_messages(room, 1))[0]["seq"] == seq
    assert all(not c.messages(room) for c in zed)
    one = zed[2].welcome["conn"]
    reply = await call(nc, "disconnect", {"user": "zed", "conn": one, "reason": "bye"})
    assert reply == {"closed": 1, "nodes": reply["nodes"], "banned": False}
    assert await asyncio.wait_for(zed[2].closed, 10 * UNIT) == 4003
    ws = zed[2].ws
    assert ws.close_reason == "bye"
    await zed[0].join(room)
    old_token = (await zed[0].wait_for(lambda f: f["type"] == "joined")).get("resume_token")
    reply = await call(nc, "disconnect", {"user": "zed", "ban": True})
    assert reply["closed"] == 2 and reply["banned"] is True
    for c in zed[:2]:
        assert await asyncio.wait_for(c.closed, 10 * UNIT) == 4502
    for node in (a, b):  # the ban is in force on both nodes at once
        again = await WsClient.connect(node.port, token("zed"))
        refused = await again.request({"type": "resume", "token": old_token,
                                       "rooms": {room: seq}})
        assert refused["code"] == "bad_resume_token" and "revoked" in refused["message"]
        fresh = (await again.join(room))["resume_token"]
        await again.close()
        later = await WsClient.connect(node.port, token("zed"))
        ok = await later.request({"type": "resume", "token": fresh, "rooms": {room: seq}})
        assert ok["type"] == "resumed" and ok["rooms"][room]["recovered"] is True
        await later.close()
    await bystander.close()


async def test_a_node_started_after_a_ban_reads_it(api_nodes, big_history):
    a, _, nc = api_nodes
    room = room_name()
    c = await WsClient.connect(a.port, token("quinn"))
    old = (await c.join(room))["resume_token"]
    await call(nc, "disconnect", {"user": "quinn", "ban": True})
    late = await start_node(big_history.urls, node_id="api-late")
    try:
        again = await WsClient.connect(late.port, token("quinn"))
        refused = await again.request({"type": "resume", "token": old, "rooms": {}})
        assert refused["code"] == "bad_resume_token"
        await again.close()
    finally:
        await late.stop()


async def test_disconnect_and_unsubscribe_from_the_sdk_and_the_cli(api_nodes, big_history, capsys):
    from roomcast.api import ServerApi
    from roomcast.cli import main

    a, b, _ = api_nodes
    room = room_name()
    c1, c2 = (await WsClient.connect(a.port, token("uma")),
              await WsClient.connect(b.port, token("uma")))
    for c in (c1, c2):
        await c.join(room)
    url = ",".join(big_history.urls)
    assert await asyncio.to_thread(main, ["unsubscribe", "uma", room, "--nats-url", url]) == 0
    assert "removed 2 connection(s)" in capsys.readouterr().out
    async with ServerApi(big_history.urls) as api:
        assert (await api.unsubscribe("uma", room))["removed"] == 0
        assert (await api.disconnect("uma", conn=c1.welcome["conn"]))["closed"] == 1
    assert await asyncio.to_thread(main, ["disconnect", "uma", "--ban", "--nats-url", url]) == 0
    assert "closed 1 connection(s)" in capsys.readouterr().out
    assert await asyncio.wait_for(c1.closed, 10 * UNIT) == 4003
    assert await asyncio.wait_for(c2.closed, 10 * UNIT) == 4502
