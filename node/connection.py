"""The I/O of one client connection: read frames, carry out the Peer's actions, write frames.
(The session requests those actions are — join, resume, publish, … — are in
:mod:`roomcast.node.requests`.)

Every frame to the client goes through one of two seams that write pre-encoded bytes straight
to the transport without awaiting (``docs/performance.md``): :meth:`Connection.send_frame` for
the connection's own frames (queued, written once per loop iteration) and
:meth:`Connection.write_shared` for a room's frames of the iteration (the same joined bytes for
every member). Both respect the connection state and bound the send buffer: a client that does
not read is closed with 4001 and resumes from its last ``seq`` later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from roomcast import protocol as p
from roomcast.node.peer import (
    Close,
    DoHistory,
    DoJoin,
    DoLeave,
    DoPublish,
    DoRefresh,
    DoResume,
    Peer,
    Send,
)
from roomcast.node.requests import SessionRequests
from roomcast.node.wire import text_frame
from roomcast.protocol import CloseCode, ErrorCode

if TYPE_CHECKING:
    from roomcast.node.server import Node
    from roomcast.node.wsconn import WsConnection

log = logging.getLogger("roomcast.node.connection")

#: ``refresh_needed`` is sent this long before the token expires, or after half the token's
#: life when that is shorter (§4.13).
REFRESH_LEAD_MAX = 30.0


async def wait_all(futures: set[asyncio.Future], seconds: float) -> None:
    """Wait until every future in ``futures`` is done, for at most ``seconds``. The set may be
    refilled meanwhile by done-callbacks (a publish whose first attempt failed hands over to a
    retry task) and may or may not be emptied by them."""
    deadline = time.monotonic() + seconds
    await asyncio.sleep(0)  # done-callbacks already scheduled run first (they may add a retry)
    while pending := [f for f in futures if not f.done()]:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        await asyncio.wait(pending, timeout=left)
        await asyncio.sleep(0)  # let the done-callbacks run (they may add a retry)


class Connection(SessionRequests):
    __slots__ = ("ws", "peer", "node", "_closing", "_limit", "_inflight", "_out", "_out_bytes",
                 "_direct", "_pong", "_ping_at", "_handed_over", "_held", "_held_bytes",
                 "_refresh_at", "__weakref__")

    def __init__(self, ws: WsConnection, peer: Peer, node: Node) -> None:
        self.ws = ws
        self.peer = peer
        self.node = node
        self._closing = False
        self._limit = node.config.send_buffer_limit
        self._inflight: set[asyncio.Future] | None = None  # publishes awaiting their ack
        self._out: list[bytes] | None = None  # frames of this loop iteration, not yet written
        self._out_bytes = 0
        self._direct = not node.config.compression  # pre-framed writes need no compression
        self._pong: asyncio.Future | None = None  # keepalive: the pong we wait for
        self._ping_at = 0.0
        self._handed_over = False  # closed by a drain: presence waits for the resume elsewhere
        #: While a resume re-joins rooms: the live frames of rooms already re-joined, written
        #: after ``resumed`` (§3.4); None otherwise.
        self._held: list[tuple[bytes, list]] | None = None
        self._held_bytes = 0
        self._refresh_at = 0.0  # when to send ``refresh_needed`` (0: sent already)
        self._plan_refresh(time.time())

    # -- the write seam (rooms.Member) -----------------------------------------------

    def send_frame(self, frame: bytes, wire: bytes | None = None) -> bool:
        """Queue one text frame (``frame`` is its JSON payload, ``wire`` the same already
        framed, when the caller built it once for many members); False if the connection is
        gone. Frames queued during one event-loop iteration are written with one call at its
        end (:meth:`flush`), in order: no timer, so no added delay."""
        if self._closing:
            return False
        if not self._direct:
            ws = self.ws
            if ws.protocol.state is not State.OPEN:
                return False
            try:
                ws.protocol.send_text(frame)
                ws.send_data()
            except Exception:  # noqa: BLE001 - transport failed; the read loop sees the close
                self._closing = True
                return False
            return True
        if wire is None:
            wire = text_frame(frame)
        out = self._out
        if out is None:
            # First frame of this iteration: what the transport still holds counts too (it
            # does not change until our flush writes).
            self._out = [wire]
            self._out_bytes = len(wire) + self.ws.transport.get_write_buffer_size()
            self.node.mark_dirty(self)
        else:
            out.append(wire)
            self._out_bytes += len(wire)
        if self._out_bytes > self._limit:
            self.overflow()
            return False
        return True

    def flush(self) -> None:
        """Write what this iteration queued, in one call (nothing if the connection closed)."""
        out = self._out
        self._out = None
        if not out:
            return
        ws = self.ws
        if ws.protocol.state is not State.OPEN:
            return
        try:
            ws.write(out[0] if len(out) == 1 else b"".join(out))  # the first: after the 101
        except Exception:  # noqa: BLE001 - transport failed; the read loop sees the close
            self._closing = True

    def write_shared(self, data: bytes, frames: list[tuple[int, bytes, bytes]]) -> bool:
        """Write a room's frames of this iteration (``data``: already framed and joined, the
        same bytes for every member), after this connection's own frames, which the node
        flushed first. Bounded like :meth:`send_frame`."""
        if self._closing:
            return False
        if self._held is not None:
            self._held.append((data, frames))
            self._held_bytes += len(data)
            if self._held_bytes > self._limit:
                self.overflow()
                return False
            return True
        if not self._direct:
            for _, frame, wire in frames:
                self.send_frame(frame, wire)  # compressed per connection; flushed next
            return True
        ws = self.ws
        if ws.protocol.state is not State.OPEN:
            return False
        transport = ws.transport
        if transport.get_write_buffer_size() + len(data) > self._limit:
            self.overflow()
            return False
        try:
            if ws.head is not None:
                ws.write_head()
            transport.write(data)
        except Exception:  # noqa: BLE001 - transport failed; the read loop sees the close
            self._closing = True
            return False
        return True

    def overflow(self) -> None:
        if not self._closing:
            self.node.metrics.slow_consumers.inc()
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer")

    def needs_drain(self) -> bool:
        queued = (self._out_bytes if self._out is not None
                  else self.ws.transport.get_write_buffer_size())
        return queued > self._limit // 4

    async def drain(self) -> None:
        self.flush()
        if not self._closing:
            await self.ws.drain()  # returns at once unless the transport paused writing

    def keepalive(self, now: float, timeout: float) -> None:
        """Called by the node's keepalive sweep: close if the last ping went unanswered for
        ``timeout`` seconds, else send a new one (the connection matches its pong). One sweep
        replaces a task per connection."""
        ws = self.ws
        if self._closing or ws.protocol.state is not State.OPEN:
            return
        if self._pong is not None and not self._pong.done():
            if now - self._ping_at > timeout:
                self.close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            return
        self._ping_at = now
        try:
            self._pong = ws.ping()
        except Exception:  # noqa: BLE001 - transport failed; the read loop sees the close
            self._closing = True

    def _plan_refresh(self, now: float) -> None:
        exp = self.peer.identity.expires_at
        self._refresh_at = exp - min(REFRESH_LEAD_MAX, max(0.0, exp - now) / 2)

    def check_token(self, now: float) -> None:
        """Called by the node's expiry sweep: ``refresh_needed`` ahead of ``exp`` (once per
        token), 4500 at ``exp``."""
        exp = self.peer.identity.expires_at
        if exp <= now:
            self.close(CloseCode.TOKEN_EXPIRED, "token expired")
        elif self._refresh_at and now >= self._refresh_at:
            self._refresh_at = 0.0
            self.send_frame(p.refresh_needed(exp))

    def leave_presence(self) -> None:
        """Remove this connection from presence in every room (idempotent)."""
        self._handed_over = False
        presence = self.node.presence
        if presence is not None:
            for room in self.peer.rooms:
                presence.untrack(room, self.peer.conn_id)

    def close(self, code: CloseCode, reason: str) -> None:
        """Start closing with ``code``; nothing more is written to the client."""
        if self._closing:
            return
        if code is not CloseCode.SLOW_CONSUMER:
            self.flush()  # what was queued goes out before the close frame
        self._out = None
        self._closing = True
        self.node.metrics.count_close(int(code))
        self.node.spawn(self.ws.close(int(code), reason))

    # -- the read loop ---------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        recv = self.ws.recv
        try:
            while True:
                raw = await recv()
                if self._closing:
                    continue  # keep reading so the closing handshake can complete
                for action in self.peer.handle(raw, loop.time()):
                    if isinstance(action, Send):
                        if action.frame.startswith(b'{"type":"error"'):
                            self._count_error(action.frame)
                        self.send_frame(action.frame)
                    elif isinstance(action, DoPublish):
                        await self._publish(action)
                    elif isinstance(action, DoJoin):
                        await self._join(action)
                    elif isinstance(action, DoLeave):
                        await self._leave_room(action.room, action.rid)
                    elif isinstance(action, DoResume):
                        await self._resume(action)
                    elif isinstance(action, DoHistory):
                        await self._history(action)
                    elif isinstance(action, DoRefresh):
                        await self._refresh(action)
                    elif isinstance(action, Close):
                        self.close(action.code, action.reason)
        except ConnectionClosed:
            pass
        finally:
            self._closing = True
            if self._handed_over:
                self.node.hand_over(self)
            else:
                self.leave_presence()
            for room in list(self.peer.rooms):
                await self.node.rooms.leave(self, room)

    def _count_error(self, frame: bytes) -> None:
        start = frame.find(b'"code":"') + 8
        self.node.metrics.count_error(frame[start:frame.find(b'"', start)].decode())

    def _error(self, code: ErrorCode, message: str, rid: p.Rid, room: str | None) -> None:
        self.node.metrics.count_error(code.value)
        self.send_frame(p.error(code, message, rid, room))

    def resume_token(self) -> str:
        return self.node.resume.issue(self.peer.identity.user, self.peer.rooms,
                                      self.node.backplane.epoch, self.peer.conn_id)

    def release_held(self) -> None:
        """Write ``resumed`` (and whatever was queued before it), then the held live frames."""
        held, self._held = self._held, None
        self._held_bytes = 0
        if not held:
            return
        self.flush()
        for data, frames in held:
            if not self.write_shared(data, frames):
                return

    async def drain_close(self, retry_after_ms: int, deadline=None,
                          reason: str = "node draining") -> None:
        """Close for a node drain (or a recreated stream): let in-flight acks out (until the
        drain's deadline), hand over a resume token, 1012."""
        if self._inflight:
            await wait_all(self._inflight, deadline.left() if deadline is not None
                           else self.node.config.drain_timeout)
        self.send_frame(p.reconnect(self.resume_token(), retry_after_ms, reason))
        # Its presence stays until the session resumes elsewhere (the resuming node evicts
        # it) or the presence timeout passes: members see no leave/join flap (presence.md).
        self._handed_over = True
        self.close(CloseCode.SERVICE_RESTART, reason)
