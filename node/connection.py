"""The I/O of one client connection: read frames, carry out the Peer's actions, write frames.

Every frame to the client goes through :meth:`Connection.send_frame`, the one seam that writes
pre-encoded bytes straight into the websockets protocol and transport without awaiting
(``docs/performance.md``). It respects the connection state and bounds the send buffer: a
client that does not read is closed with 4001 and resumes from its last ``seq`` later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from roomcast.node.peer import Close, DoJoin, DoLeave, DoPublish, Peer, Send
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from roomcast import protocol as p
from roomcast.errors import BackplaneError, PublishError
from roomcast.protocol import CloseCode, ErrorCode

if TYPE_CHECKING:
    from roomcast.node.server import Node

log = logging.getLogger("roomcast.node.connection")


class Connection:
    __slots__ = ("ws", "peer", "node", "_closing", "_limit", "__weakref__")

    def __init__(self, ws: ServerConnection, peer: Peer, node: Node) -> None:
        self.ws = ws
        self.peer = peer
        self.node = node
        self._closing = False
        self._limit = node.config.send_buffer_limit

    # -- the write seam (rooms.Member) -----------------------------------------------

    def send_frame(self, frame: bytes) -> bool:
        """Write one text frame now, without awaiting; False if the connection is gone."""
        if self._closing:
            return False
        ws = self.ws
        if ws.protocol.state is not State.OPEN:
            return False
        if ws.transport.get_write_buffer_size() > self._limit:
            self.overflow()
            return False
        try:
            ws.protocol.send_text(frame)
            ws.send_data()
        except Exception:  # noqa: BLE001 - transport failed; the read loop sees the close
            self._closing = True
            return False
        return True

    def overflow(self) -> None:
        if not self._closing:
            self.node.metrics.slow_consumers.inc()
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer")

    async def drain(self) -> None:
        if self.ws.transport.get_write_buffer_size() > self._limit // 2:
            await self.ws.drain()

    def close(self, code: CloseCode, reason: str) -> None:
        """Start closing with ``code``; nothing more is written to the client."""
        if self._closing:
            return
        self._closing = True
        self.node.metrics.closes.labels(code=str(int(code))).inc()
        self.node.spawn(self.ws.close(int(code), reason))

    # -- the read loop ---------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        expiry = loop.call_later(max(0.0, self.peer.identity.expires_at - time.time()),
                                 self.close, CloseCode.TOKEN_EXPIRED, "token expired")
        try:
            async for raw in self.ws:
                if self._closing:
                    continue  # keep reading so the closing handshake can complete
                for action in self.peer.handle(raw, loop.time()):
                    if isinstance(action, Send):
                        if action.frame.startswith(b'{"type":"error"'):
                            self._count_error(action.frame)
                        self.send_frame(action.frame)
                    elif isinstance(action, DoPublish):
                        self._publish(action)
                    elif isinstance(action, DoJoin):
                        await self._join(action)
                    elif isinstance(action, DoLeave):
                        await self.node.rooms.leave(self, action.room)
                        self.send_frame(p.left(action.room, action.rid))
                    elif isinstance(action, Close):
                        self.close(action.code, action.reason)
        except ConnectionClosed:
            pass
        finally:
            expiry.cancel()
            self._closing = True
            for room in list(self.peer.rooms):
                await self.node.rooms.leave(self, room)

    def _count_error(self, frame: bytes) -> None:
        start = frame.find(b'"code":"') + 8
        self.node.metrics.errors.labels(code=frame[start:frame.find(b'"', start)].decode()).inc()

    def _error(self, code: ErrorCode, message: str, rid: p.Rid, room: str | None) -> None:
        self.node.metrics.errors.labels(code=code.value).inc()
        self.send_frame(p.error(code, message, rid, room))

    async def _join(self, a: DoJoin) -> None:
        since = a.since
        if since is not None and a.epoch is not None and a.epoch != self.node.backplane.epoch:
            since = 0  # positions from another stream epoch mean nothing here
        try:
            res = await self.node.rooms.join(self, a.room, since)
        except (TimeoutError, BackplaneError):
            self.peer.join_failed(a.room)
            self._error(ErrorCode.UNAVAILABLE, "room temporarily unavailable", a.rid, a.room)
            return
        except ConnectionError:
            return
        if a.since is not None and since != a.since:
            res.recovered = False
        self.send_frame(p.joined(a.room, a.rid, seq=res.position, recovered=res.recovered,
                                 replayed=res.replayed))

    def _publish(self, a: DoPublish) -> None:
        body = p.stored_body(self.peer.user_json, int(time.time() * 1000), a.client_id, a.body)
        self.node.spawn(self._publish_and_ack(a, body), inflight=True)

    async def _publish_and_ack(self, a: DoPublish, body: bytes) -> None:
        metrics = self.node.metrics
        t0 = time.perf_counter()
        try:
            res = await self.node.backplane.publish(a.room, body, a.dedupe_id)
        except PublishError:
            self._error(ErrorCode.PUBLISH_FAILED, "message not stored; retry with the same id",
                        a.rid, a.room)
            return
        metrics.publish_latency.observe(time.perf_counter() - t0)
        metrics.received.inc()
        self.send_frame(p.ack(a.room, a.rid, a.client_id, res.seq, res.duplicate))
