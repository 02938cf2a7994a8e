"""The server API over HTTP on the internal port (docs/api.md): the same bodies and answers as
over NATS, behind X-API-Key; real nodes, a real 3-server JetStream cluster, real sockets."""

from __future__ import annotations

import asyncio
import http.client
import json
import statistics
import time

import pytest
import pytest_asyncio

from tests.helpers import WsClient, assert_chain, room_name, start_node

KEYS = ["old-key-0123456789abcdef", "new-key-fedcba9876543210"]


def post(port: int, method: str, body, key: str | None = KEYS[0],
         conn: http.client.HTTPConnection | None = None) -> tuple[int, dict]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["X-API-Key"] = key
    conn.request("POST", f"/api/{method}", payload, headers)
    resp = conn.getresponse()
    data = resp.read()
    if own:
        conn.close()
    return resp.status, json.loads(data)


@pytest_asyncio.fixture
async def http_nodes(nats3, tmp_path):
    keyfile = tmp_path / "api-keys"
    keyfile.write_text("# one key per line\n" + "\n".join(KEYS) + "\n")
    a = await start_node(nats3.urls, node_id="http-a", api_key_file=str(keyfile))
    b = await start_node(nats3.urls, node_id="http-b", api_key_file=str(keyfile))
    yield a, b, keyfile
    await a.stop()
    await b.stop()


async def test_a_publish_over_http_reaches_members_on_both_nodes_once(http_nodes):
    a, b, _ = http_nodes
    room = room_name()
    ma, mb = await WsClient.connect(a.port), await WsClient.connect(b.port)
    await ma.join(room)
    await mb.join(room)
    first = await ma.publish(room, "client")
    body = {"room": room, "data": {"order": 9}, "id": "http-1"}
    s1, r1 = await asyncio.to_thread(post, a.internal_port, "publish", body)
    s2, r2 = await asyncio.to_thread(post, b.internal_port, "publish", body, KEYS[1])
    assert (s1, s2) == (200, 200) and r1["duplicate"] is False
    assert r2 == {"seq": r1["seq"], "duplicate": True}  # the retry, through the other node
    for m in (ma, mb):
        msgs = await m.wait_messages(room, 2)
        assert [x["seq"] for x in msgs] == [first["seq"], r1["seq"]]
        assert_chain(msgs)
        assert (msgs[1]["from"], msgs[1]["data"]) == ("backend", {"order": 9})
    status, hist = await asyncio.to_thread(post, b.internal_port, "history", {"room": room})
    assert status == 200 and [m["seq"] for m in hist["messages"]] == [r1["seq"], first["seq"]]
    await ma.close()
    await mb.close()


@pytest.mark.parametrize("method,body,status,code", [
    ("publish", b"{not json", 400, "bad_request"),
    ("publish", {"room": "a b", "data": 1}, 400, "bad_room"),
    ("publish", {"room": "r", "data": "x" * 70_000}, 413, "bad_request"),
    ("history", {"room": "r", "limit": 0}, 400, "bad_request"),
    ("disconnect", {"user": ""}, 400, "bad_request"),
    ("unsubscribe", {"user": "u", "room": "r."}, 400, "bad_room"),
    ("nope", {}, 404, "unknown_method"),
])
async def test_bad_http_requests_get_documented_errors(http_nodes, method, body, status, code):
    a, _, _ = http_nodes
    got, reply = await asyncio.to_thread(post, a.internal_port, method, body)
    assert (got, reply["error"]["code"]) == (status, code), reply


async def test_the_api_key_is_required_and_rotates(http_nodes):
    a, _, keyfile = http_nodes
    port = a.internal_port
    body = {"room": room_name(), "data": 1}
    for key in (None, "", "wrong-key-0123456789", KEYS[0] + "x", KEYS[0][:-1]):
        status, reply = await asyncio.to_thread(post, port, "publish", body, key)
        assert status == 401 and reply["error"]["code"] == "unauthorized", key

    def get() -> int:  # the node runs on this test's event loop: blocking calls in a thread
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/api/publish")
        resp = conn.getresponse()
        resp.read()
        conn.close()
        return resp.status

    assert await asyncio.to_thread(get) == 405
    # Rotation: the file loses the old key and the node follows within seconds, no restart.
    keyfile.write_text(KEYS[1] + "\n")
    import os

    os.utime(keyfile, (time.time() + 10, time.time() + 10))
    async with asyncio.timeout(30):
        while (await asyncio.to_thread(post, port, "publish", body, KEYS[0]))[0] != 401:  # noqa: ASYNC110
            await asyncio.sleep(0.5)
    assert (await asyncio.to_thread(post, port, "publish", body, KEYS[1]))[0] == 200


async def test_no_timing_difference_between_wrong_keys(http_nodes):
    """A simple loop cannot tell a key that shares a long prefix with a real one from one that
    shares nothing: the given key is hashed and compared with every key in constant time.
    Interleaved samples on one keep-alive connection; medians within noise."""
    a, _, _ = http_nodes
    conn = http.client.HTTPConnection("127.0.0.1", a.internal_port, timeout=30)
    near, far = KEYS[0][:-1] + "?", "z" * len(KEYS[0])
    times: dict[str, list[float]] = {near: [], far: []}

    def sample() -> None:
        for _ in range(300):
            for key in (near, far):
                t0 = time.perf_counter()
                status, _ = post(a.internal_port, "publish", b"{}", key, conn)
                times[key].append(time.perf_counter() - t0)
                assert status == 401

    await asyncio.to_thread(sample)
    conn.close()
    m_near, m_far = statistics.median(times[near]), statistics.median(times[far])
    assert abs(m_near - m_far) < max(0.0003, 0.2 * min(m_near, m_far)), (m_near, m_far)


async def test_without_a_key_file_the_http_api_refuses_everything(nats3):
    node = await start_node(nats3.urls)
    try:
        status, reply = await asyncio.to_thread(post, node.internal_port, "publish",
                                                {"room": "r", "data": 1}, "anything-at-all-123")
        assert status == 401
    finally:
        await node.stop()
