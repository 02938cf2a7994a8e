"""deploy/k8s/base/nats/auth.conf on a real nats-server: nodes work, operators only ask, backends
listen and call the server API, nothing more."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import nats
import pytest

from roomcast.natsserver import NatsCluster
from roomcast.presence.admin import query
from tests.helpers import UNIT, WsClient, room_name, start_node, token

AUTH = Path(__file__).parents[2] / "deploy" / "k8s" / "base" / "nats" / "auth.conf"
PW = {"ROOMCAST_NODE_PASSWORD": "node-pw-123", "ROOMCAST_OPERATOR_PASSWORD": "op-pw-456",
      "ROOMCAST_BACKEND_PASSWORD": "be-pw-789"}


@pytest.fixture
def secured(monkeypatch):
    for k, v in PW.items():
        monkeypatch.setenv(k, v)
    with NatsCluster(1, extra_conf=AUTH.read_text()) as cluster:
        yield cluster.servers[0].port


def url(user: str, pw: str, port: int) -> str:
    return f"nats://{user}:{pw}@127.0.0.1:{port}"


async def test_shipped_permissions(secured):
    """Node user runs a node; operator can query admin but not publish into rooms; backend
    receives presence events but cannot query admin."""
    port = secured
    from roomcast.namespaces import Namespace, parse

    # part.*: rooms over two streams of their own (rs.> / live.rs.> subjects)
    node = await start_node([url("roomcast-node", PW["ROOMCAST_NODE_PASSWORD"], port)],
                            replicas=1, nats_kw={"namespaces": parse(
                                "[namespaces.part]\nstreams = 2\n", Namespace())})
    errors: list[Exception] = []

    async def on_error(e: Exception) -> None:
        errors.append(e)

    try:
        room = room_name()
        backend = await nats.connect(url("roomcast-backend", PW["ROOMCAST_BACKEND_PASSWORD"], port),
                                     error_cb=on_error)
        events = []

        async def on_event(m):
            events.append(m)

        await backend.subscribe(f"roomcast.events.presence.{room}", cb=on_event)
        await backend.flush()
        c = await WsClient.connect(node.port, token("perm"))
        await c.join(room)
        ack = await c.publish(room, "allowed")
        assert ack["type"] == "ack"

        operator_url = url("roomcast-operator", PW["ROOMCAST_OPERATOR_PASSWORD"], port)
        reply = await query([operator_url], "presence", room)
        assert set(reply["members"]) == {"perm"}

        op = await nats.connect(operator_url, error_cb=on_error)
        await op.publish(f"room.{room}", b'{"forged":true}')
        await op.flush()
        async with asyncio.timeout(10 * UNIT):  # the server's -ERR comes back asynchronously
            while not any("permissions violation" in str(e).lower() for e in errors):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert [m["data"] for m in c.messages(room)] == ["allowed"]

        for _ in range(50):
            if events:
                break
            await asyncio.sleep(0.05)
        assert events and b'"type":"join"' in events[0].data
        errors.clear()
        with pytest.raises(nats.errors.Error):
            await backend.request("roomcast.admin.rooms", b"", timeout=1)
        # The server API is the backend's way in, and the only one: what it publishes there
        # is stored by a node (seq, chain, the backend identity); forging a stored message,
        # a node control request or a ban is refused by the server.
        msg = await backend.request("roomcast.api.publish",
                                    b'{"room":"%s","data":"from the backend"}' % room.encode(),
                                    timeout=10 * UNIT)
        assert b'"seq"' in msg.data, msg.data
        got = await c.wait_messages(room, 2)
        assert (got[1]["from"], got[1]["data"]) == ("backend", "from the backend")
        part = f"part.{room}"
        await c.join(part)
        assert (await c.publish(part, "partitioned"))["type"] == "ack"
        assert [m["data"] for m in await c.wait_messages(part, 1)] == ["partitioned"]
        for subject in (f"room.{room}", f"rs.PART.0.{part}", "roomcast.ctl.disconnect",
                        "$KV.ROOMCAST_BANS.x",
                        "$JS.API.STREAM.MSG.DELETE.ROOMS"):
            errors.clear()
            await backend.publish(subject, b'{"user":"perm"}')
            await backend.flush()
            async with asyncio.timeout(10 * UNIT):
                while not any("permissions violation" in str(e).lower() for e in errors):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
        reply = await backend.request("roomcast.api.disconnect", b'{"user":"perm"}',
                                      timeout=10 * UNIT)
        assert b'"closed":1' in reply.data, reply.data
        assert await asyncio.wait_for(c.closed, 10 * UNIT) == 4003
        assert [m["data"] for m in c.messages(room)] == ["allowed", "from the backend"]
        await op.close()
        await backend.close()
    finally:
        await node.stop()
    assert os.environ["ROOMCAST_NODE_PASSWORD"] == PW["ROOMCAST_NODE_PASSWORD"]
