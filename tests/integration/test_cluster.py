"""Foundation acceptance: a real 3-server JetStream cluster, two real edge nodes, real clients."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.chaos import kill_9_of_the_rooms_stream_leader
from tests.helpers import UNIT, WsClient, assert_chain, room_name, start_node


async def test_cross_node_delivery_same_seq(nodes):
    """A message published on node A reaches members on A and B with the same seq."""
    a, b = nodes
    room = room_name()
    ca, cb = await WsClient.connect(a.port), await WsClient.connect(b.port)
    assert (await ca.join(room))["type"] == "joined"
    assert (await cb.join(room))["type"] == "joined"
    ack = await ca.publish(room, {"text": "hello"}, "m1")
    assert ack["type"] == "ack" and ack["seq"] > 0 and ack["duplicate"] is False
    ma = (await ca.wait_messages(room, 1))[0]
    mb = (await cb.wait_messages(room, 1))[0]
    for m in (ma, mb):
        assert m["seq"] == ack["seq"]
        assert m["data"] == {"text": "hello"}
        assert m["from"] == "alice" and m["id"] == "m1" and isinstance(m["ts"], int)
        assert m["prev"] == 0
    await ca.close()
    await cb.close()


async def test_concurrent_publishers_identical_sequence(nodes):
    """Publishers on both nodes at once: every member sees the identical gap-free sequence."""
    a, b = nodes
    room = room_name()
    members = [await WsClient.connect(n.port) for n in (a, a, b, b)]
    for c in members:
        await c.join(room)
    pubs = [await WsClient.connect(a.port), await WsClient.connect(b.port)]
    per_publisher = 150

    async def publish_all(c: WsClient, tag: str) -> list[int]:
        acks = await asyncio.gather(*(c.publish(room, {"n": i}, f"{tag}-{i}")
                                      for i in range(per_publisher)))
        return [x["seq"] for x in acks]

    acked = await asyncio.gather(publish_all(pubs[0], "a"), publish_all(pubs[1], "b"))
    total = 2 * per_publisher
    assert len(set(acked[0]) | set(acked[1])) == total
    seen = [await c.wait_messages(room, total) for c in members]
    first = [m["seq"] for m in seen[0]]
    assert sorted(first) == sorted(acked[0] + acked[1])
    for msgs in seen:
        assert [m["seq"] for m in msgs] == first
        assert msgs[0]["prev"] == 0
        assert_chain(msgs)
    for c in members + pubs:
        await c.close()


async def test_publish_retry_with_same_id_is_stored_once(nodes):
    """Publishing twice with one id stores one message; the retry's ack says duplicate."""
    a, b = nodes
    room = room_name()
    member = await WsClient.connect(b.port)
    await member.join(room)
    pub = await WsClient.connect(a.port)
    first = await pub.publish(room, "once", "same-id")
    again = await pub.publish(room, "once", "same-id")
    assert again["seq"] == first["seq"] and again["duplicate"] is True
    sentinel = await pub.publish(room, "after", "sentinel")
    msgs = await member.wait_messages(room, 2)
    assert [m["id"] for m in msgs] == ["same-id", "sentinel"]
    assert msgs[1]["prev"] == first["seq"] and msgs[1]["seq"] == sentinel["seq"]
    # History agrees: a replay from the start holds the message once.
    late = await WsClient.connect(a.port)
    joined = await late.join(room, since=0)
    assert joined["replayed"] == 2
    assert [m["id"] for m in late.messages(room)] == ["same-id", "sentinel"]
    for c in (member, pub, late):
        await c.close()


async def test_bad_input_gets_errors_and_others_unaffected(nodes):
    """Malformed JSON, unknown type, bad fields: typed errors; an oversized frame: close 1009."""
    a, _ = nodes
    room = room_name()
    bystander = await WsClient.connect(a.port)
    await bystander.join(room)
    bad = await WsClient.connect(a.port)
    await bad.ws.send("{not json")
    err = await bad.wait_for(lambda f: f["type"] == "error")
    assert err["code"] == "bad_frame" and err["temporary"] is False
    await bad.ws.send(json.dumps({"type": "subscribe-all", "rid": 7}))
    err = await bad.wait_for(lambda f: f.get("rid") == 7)
    assert err["code"] == "unknown_type"
    await bad.ws.send(json.dumps({"type": "publish", "room": room, "rid": 8}))
    assert (await bad.wait_for(lambda f: f.get("rid") == 8))["code"] == "bad_frame"
    err = await bad.request({"type": "join", "room": "no spaces allowed"})
    assert err["code"] == "bad_room"
    err = await bad.request({"type": "leave", "room": room})
    assert err["code"] == "not_joined"
    assert (await bad.request({"type": "ping"}))["type"] == "pong"
    await bad.ws.send(json.dumps({"type": "publish", "room": room, "data": "x" * 70_000}))
    assert await asyncio.wait_for(bad.closed, 5 * UNIT) == 1009
    # The bystander on the same node still publishes and receives.
    ack = await bystander.publish(room, "still here")
    assert (await bystander.wait_messages(room, 1))[0]["seq"] == ack["seq"]
    await bystander.close()


async def test_forbidden_room_is_an_error_frame_and_connection_stays(nodes):
    """A room outside the token's patterns gets 'forbidden'; the connection keeps working."""
    a, _ = nodes
    from tests.helpers import token

    c = await WsClient.connect(a.port, token("bob", subscribe=["chat.*"], publish=["chat.mine"]))
    ok_room = "chat." + room_name()
    assert (await c.join(ok_room))["type"] == "joined"
    err = await c.join("admin.secrets")
    assert err["type"] == "error" and err["code"] == "forbidden" and err["room"] == "admin.secrets"
    err = await c.publish(ok_room, "nope")
    assert err["code"] == "forbidden"
    ack = await c.publish("chat.mine", "yes")
    assert ack["type"] == "ack"
    await c.close()


async def test_flood_is_rate_limited_then_closed(nats3):
    """A client over its frame rate gets rate_limited errors, then close code 4002."""
    node = await start_node(nats3.urls, rate_limit=5, rate_burst=5, flood_close_after=20)
    try:
        c = await WsClient.connect(node.port)
        for i in range(40):
            try:
                await c.ws.send(json.dumps({"type": "ping", "rid": f"p{i}"}))
            except Exception:  # noqa: BLE001 - the server may already have closed
                break
        assert await asyncio.wait_for(c.closed, 5 * UNIT) == 4002
        limited = [f for f in c.frames if f.get("code") == "rate_limited"]
        assert limited and all(f["temporary"] for f in limited)
        assert len([f for f in c.frames if f["type"] == "pong"]) == 5
    finally:
        await node.stop()


async def test_nats_server_stopped_mid_stream_publishing_continues(nats3, nodes):
    """Killing the NATS server node A uses: publishes keep being acked and delivered in order."""
    a, b = nodes
    room = room_name()
    member_b = await WsClient.connect(b.port)
    member_a = await WsClient.connect(a.port)
    await member_b.join(room)
    await member_a.join(room)
    pub = await WsClient.connect(a.port)
    total = 60
    victim = next(s for s in nats3.servers if s.url.endswith(
        f":{a.backplane._nc.connected_url.port}"))

    async def publisher() -> list[dict]:
        acks = []
        for i in range(total):
            acks.append(await pub.publish(room, {"i": i}, f"k{i}"))
            await asyncio.sleep(0.02)
        return acks

    task = asyncio.create_task(publisher())
    await asyncio.sleep(0.3)
    victim.kill()
    try:
        acks = await asyncio.wait_for(task, 60 * UNIT)
        assert all(x["type"] == "ack" for x in acks), [x for x in acks if x["type"] != "ack"]
        for member in (member_a, member_b):
            msgs = await member.wait_messages(room, total, timeout=30 * UNIT)
            assert [m["data"]["i"] for m in msgs] == list(range(total))
            assert_chain(msgs)
    finally:
        victim.start()
        victim.wait_ready()
    for c in (member_a, member_b, pub):
        await c.close()


async def test_rooms_stream_leader_killed_with_publishes_in_flight(nats3, nodes):
    """The ROOMS stream's leader is killed while a client has publishes in flight: each ends
    acked, is stored once and reaches members on both nodes exactly once, in order, with the
    seq its ack named (tests/chaos.py)."""
    a, b = nodes
    await kill_9_of_the_rooms_stream_leader(nats3, a, b, total=120, tag="lk")


async def test_http_endpoints(nodes):
    """/healthz, /readyz and /metrics answer on the internal port only; the public port
    answers 404 for them (an Ingress routing every path there exposes none of them)."""
    import urllib.error
    import urllib.request

    a, _ = nodes

    def get(port: int, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    assert a.internal_port != a.port
    assert await asyncio.to_thread(get, a.internal_port, "/healthz") == (200, "ok\n")
    assert await asyncio.to_thread(get, a.internal_port, "/readyz") == (200, "ready\n")
    status, body = await asyncio.to_thread(get, a.internal_port, "/metrics")
    assert status == 200 and "roomcast_connections" in body and "roomcast_nats_connected 1.0" in body
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await asyncio.to_thread(get, a.port, path))[0] == 404
    assert (await asyncio.to_thread(get, a.internal_port, "/ws"))[0] == 404
    assert (await asyncio.to_thread(get, a.port, "/roomcast.js"))[0] == 200


def _alg_none(claims: dict) -> str:
    import base64

    def enc(d):
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{enc({'alg': 'none', 'typ': 'JWT'})}.{enc(claims)}."


@pytest.mark.parametrize("make_token,reason", [
    (lambda: None, "missing token"),
    (lambda: __import__("roomcast.auth").auth.mint_token("wrong-" + "k" * 40, "eve"),
     "bad token signature"),
    (lambda: __import__("tests.helpers").helpers.token("eve", ttl=-30), "token expired"),
    (lambda: _alg_none({"sub": "eve", "exp": 4102444800}), "token algorithm not allowed"),
])
async def test_bad_tokens_get_401_before_upgrade(nodes, make_token, reason):
    """Missing, badly signed, expired and alg:none tokens: HTTP 401 with the reason."""
    import websockets

    a, _ = nodes
    tok = make_token()
    url = f"ws://127.0.0.1:{a.port}/ws" + (f"?token={tok}" if tok else "")
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(url)
    assert info.value.response.status_code == 401
    assert bytes(info.value.response.body).decode().strip() == reason


async def test_served_handshake_is_forgotten_and_messages_still_flow(nodes):
    """The idle-memory measure holds (docs/performance.md): once upgraded, a connection keeps
    neither its handshake's headers nor the path with the token; traffic is unaffected."""
    from roomcast.node.wsconn import NO_HEADERS

    a, _ = nodes
    room = room_name()
    c = await WsClient.connect(a.port)
    await c.join(room)
    conn = next(x for x in a.connections if x.peer.conn_id == c.welcome["conn"])
    assert conn.ws.request.headers is NO_HEADERS and "token" not in conn.ws.request.path
    assert conn.ws.response is None and conn.ws.identity is None
    for i in range(50):
        await c.publish(room, {"i": i})
    msgs = await c.wait_messages(room, 50)
    assert [m["data"]["i"] for m in msgs] == list(range(50))
    await c.close()


async def test_connection_is_closed_with_4500_when_its_token_expires(nodes):
    """A connection's JWT expiring closes it with 4500 (within the 1 s expiry sweep)."""
    from tests.helpers import token

    a, _ = nodes
    c = await WsClient.connect(a.port, token("tina", ttl=2))
    t0 = asyncio.get_running_loop().time()
    code = await asyncio.wait_for(asyncio.shield(c.closed), 10 * UNIT)
    assert code == 4500
    assert asyncio.get_running_loop().time() - t0 <= 2 + 1 + 2 * UNIT


async def test_compression_on_delivers_in_order_to_compressed_and_plain_clients(nats3):
    """With --compression, room traffic goes through websockets' per-connection (compressed)
    path instead of the shared pre-framed bytes; both kinds of client get every message."""
    node = await start_node(nats3.urls, node_id="node-z", compression=True)
    try:
        room = room_name()
        zipped = await WsClient.connect(node.port, compression="deflate")
        plain = await WsClient.connect(node.port, compression=None)
        assert "permessage-deflate" in (zipped.ws.response.headers.get(
            "Sec-WebSocket-Extensions") or "")
        for c in (zipped, plain):
            await c.join(room)
        for i in range(30):
            await plain.publish(room, {"i": i, "pad": "x" * 200})
        for c in (zipped, plain):
            msgs = await c.wait_messages(room, 30)
            assert [m["data"]["i"] for m in msgs] == list(range(30))
            assert_chain(msgs)
        await zipped.close()
        await plain.close()
    finally:
        await node.stop()
