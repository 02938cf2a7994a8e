"""Test helpers: time units, a raw WebSocket protocol client, node launchers."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import uuid
from typing import Any

import websockets

from roomcast.auth import AuthConfig, mint_token
from roomcast.backplane.nats import NatsConfig
from roomcast.config import NodeConfig
from roomcast.node.server import Node

#: Every timeout in the tests is a multiple of this; raise ROOMCAST_TEST_UNIT on slow machines.
UNIT = float(os.environ.get("ROOMCAST_TEST_UNIT", "1.0"))
KEY = "test-secret-" + "x" * 32


#: The presence scope (``--presence-scope``) of the test running now: the ``presence_scope``
#: fixture (tests/conftest.py) sets it, and runs each presence test under both scopes.
PRESENCE_SCOPE = {"scope": "cluster"}


def room_name(prefix: str = "r") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def token(user: str = "alice", **kw: Any) -> str:
    return mint_token(KEY, user, **kw)


def node_config(urls: list[str], *, replicas: int = 3, node_id: str | None = None,
                nats_kw: dict | None = None, **kw: Any) -> NodeConfig:
    return NodeConfig(
        auth=AuthConfig(KEY),
        nats=NatsConfig(urls=tuple(urls), replicas=replicas, **(nats_kw or {})),
        node_id=node_id or f"t-{uuid.uuid4().hex[:6]}",
        host="127.0.0.1",
        port=0,
        internal_port=0,
        **kw,
    )


async def start_node(urls: list[str], **kw: Any) -> Node:
    node = Node(node_config(urls, **kw))
    await node.start()
    return node


class WsClient:
    """A raw protocol client: records every frame, answers requests by ``rid``."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict] = []
        self.welcome: dict | None = None
        self._rids = itertools.count(1)
        self._waiters: dict[Any, asyncio.Future] = {}
        self._changed = asyncio.Event()
        self.closed: asyncio.Future = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, port: int, tok: str | None = None, **kw: Any) -> WsClient:
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws?token={tok or token()}",
                                      max_size=None, **kw)
        client = cls(ws)
        client.welcome = await client.wait_for(lambda f: f["type"] == "welcome")
        return client

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                self.frames.append(frame)
                fut = self._waiters.pop(frame.get("rid"), None)
                if fut is not None and not fut.done():
                    fut.set_result(frame)
                self._changed.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            if not self.closed.done():
                self.closed.set_result(self.ws.close_code)
            self._changed.set()

    async def request(self, frame: dict, timeout: float = 10 * UNIT) -> dict:
        rid = next(self._rids)
        fut = asyncio.get_running_loop().create_future()
        self._waiters[rid] = fut
        await self.ws.send(json.dumps({**frame, "rid": rid}))
        return await asyncio.wait_for(fut, timeout)

    async def join(self, room: str, **kw: Any) -> dict:
        return await self.request({"type": "join", "room": room, **kw})

    async def publish(self, room: str, data: Any, msg_id: str | None = None) -> dict:
        frame = {"type": "publish", "room": room, "data": data}
        if msg_id is not None:
            frame["id"] = msg_id
        return await self.request(frame)

    def messages(self, room: str | None = None) -> list[dict]:
        return [f for f in self.frames if f["type"] == "message"
                and (room is None or f["room"] == room)]

    async def wait_for(self, pred, timeout: float = 10 * UNIT) -> dict:
        """Wait for the first recorded frame matching ``pred``."""
        async with asyncio.timeout(timeout):
            seen = 0
            while True:
                for f in self.frames[seen:]:
                    if pred(f):
                        return f
                seen = len(self.frames)
                if self.closed.done():
                    raise ConnectionError(f"closed with {self.closed.result()}")
                self._changed.clear()
                await self._changed.wait()

    async def wait_messages(self, room: str, count: int, timeout: float = 20 * UNIT) -> list[dict]:
        async with asyncio.timeout(timeout):
            while len(self.messages(room)) < count:
                if self.closed.done():
                    raise ConnectionError(f"closed with {self.closed.result()}")
                self._changed.clear()
                await self._changed.wait()
        return self.messages(room)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()


def assert_chain(messages: list[dict]) -> None:
    """Strictly increasing seq, each prev equal to the seq before it."""
    seqs = [m["seq"] for m in messages]
    assert seqs == sorted(set(seqs)), f"not strictly increasing: {seqs[:20]}..."
    for a, b in zip(messages, messages[1:], strict=False):
        assert b["prev"] == a["seq"], f"prev chain broken at seq {b['seq']}: {b['prev']} != {a['seq']}"


class Gate:
    """A token source that holds reconnects until opened (the client awaits its token)."""

    def __init__(self, tok: str) -> None:
        self.tok = tok
        self.open = asyncio.Event()
        self.open.set()
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        await self.open.wait()
        return self.tok


def drop(client) -> None:
    """Cut a roomcast.client connection as a network failure would (no closing handshake)."""
    client._ws.transport.abort()


def assert_message_chain(msgs) -> None:
    """roomcast.client Messages: strictly increasing seq, prev linking each to the one before."""
    seqs = [m.seq for m in msgs]
    assert seqs == sorted(set(seqs)), "duplicates or disorder"
    for a, b in zip(msgs, msgs[1:], strict=False):
        assert b.prev == a.seq, f"gap before seq {b.seq}: prev {b.prev} != {a.seq}"


async def collect(client, count: int, timeout: float = 30 * UNIT) -> list:
    out = []
    async with asyncio.timeout(timeout):
        while len(out) < count:
            out.append(await client.next_message())
    return out


async def wait_connected(client, timeout: float = 20 * UNIT) -> None:
    """Until the client's current session is fully restored."""
    async with asyncio.timeout(timeout):
        await client._ready.wait()
