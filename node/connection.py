"""The I/O of one client connection: read frames, carry out the Peer's actions, write frames.

Every frame to the client goes through one of two seams that write pre-encoded bytes straight
to the transport without awaiting (``docs/performance.md``): :meth:`Connection.send_frame` for
the connection's own frames (queued, written once per loop iteration) and
:meth:`Connection.write_shared` for a room's frames of the iteration (the same joined bytes for
every member). Both respect the connection state and bound the send buffer: a client that does
not read is closed with 4001 and resumes from its last ``seq`` later.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import struct
import time
from typing import TYPE_CHECKING

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from roomcast import protocol as p
from roomcast.errors import AuthError, BackplaneError, PublishError
from roomcast.node import history
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
from roomcast.node.wire import text_frame
from roomcast.protocol import CloseCode, ErrorCode
from roomcast.resume import ResumeTokenError

if TYPE_CHECKING:
    from roomcast.node.server import Node

log = logging.getLogger("roomcast.node.connection")

#: Rooms of one ``resume`` re-joined at once (each is ~3 NATS round trips plus its replay).
RESUME_CONCURRENCY = 16
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


async def _public_ping(ws: ServerConnection) -> None:
    await (await ws.ping())


def _quiet(fut: asyncio.Future) -> None:
    if not fut.cancelled():
        fut.exception()  # retrieved: a ping on a closed connection is nobody's error


class Connection:
    __slots__ = ("ws", "peer", "node", "_closing", "_limit", "_inflight", "_out", "_out_bytes",
                 "_direct", "_pong", "_ping_at", "_handed_over", "_held", "_held_bytes",
                 "_refresh_at", "__weakref__")

    def __init__(self, ws: ServerConnection, peer: Peer, node: Node) -> None:
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
            ws.transport.write(out[0] if len(out) == 1 else b"".join(out))
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
        ``timeout`` seconds, else send a new one. Pongs are matched by websockets
        (``pending_pings``), as for its own pings; one sweep replaces a task per connection."""
        ws = self.ws
        if self._closing or ws.protocol.state is not State.OPEN:
            return
        if self._pong is not None and not self._pong.done():
            if now - self._ping_at > timeout:
                self.close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            return
        self._ping_at = now
        pings = getattr(ws, "pending_pings", None)
        if type(pings) is not dict:
            # Not the websockets internals this seam was tested with (roomcast/compat.py
            # refuses such a version at start-up): its public ping, one task per ping.
            self._pong = asyncio.ensure_future(_public_ping(ws))
            self._pong.add_done_callback(_quiet)
            return
        data = struct.pack("!I", random.getrandbits(32))
        while data in pings:
            data = struct.pack("!I", random.getrandbits(32))
        self._pong = ws.loop.create_future()
        pings[data] = (self._pong, now)
        try:
            ws.protocol.send_ping(data)
            ws.send_data()
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
        self.node.metrics.closes.labels(code=str(int(code))).inc()
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
        self.node.metrics.errors.labels(code=frame[start:frame.find(b'"', start)].decode()).inc()

    def _error(self, code: ErrorCode, message: str, rid: p.Rid, room: str | None) -> None:
        self.node.metrics.errors.labels(code=code.value).inc()
        self.send_frame(p.error(code, message, rid, room))

    def resume_token(self) -> str:
        return self.node.resume.issue(self.peer.identity.user, self.peer.rooms,
                                      self.node.backplane.epoch, self.peer.conn_id)

    async def _join_room(self, room: str, since: int | None, epoch: str | None):
        """Join (with ``since``: replay first); None when the backplane failed."""
        stale = (since is not None and epoch is not None
                 and not self.node.backplane.epoch_matches(room, epoch))
        if stale:
            since = 0  # positions from another stream epoch mean nothing here
        storage = self.node.namespaces.of(room).storage
        if storage == "ephemeral" and since is not None:
            since, stale = None, True  # nothing stored: nothing to replay (recovered: false)
        elif since is None and storage == "latest":
            since = 0  # a latest-value room hands every new member its last message
        presence = self.node.presence if self.node.tracks_presence(room) else None
        if presence is not None:
            # Tracked before we become a member: our own join event is not sent to us; the
            # member list in ``joined`` includes us.
            presence.track(room, self.peer.conn_id, self.peer.identity.user,
                           self.peer.identity.info)
        try:
            res = await self.node.rooms.join(self, room, since)
        except (TimeoutError, BackplaneError):
            self.peer.join_failed(room)
            if presence is not None:
                presence.untrack(room, self.peer.conn_id)
            return None
        if stale:
            res.recovered = False
        return res

    async def join_token_rooms(self) -> dict[str, dict]:
        """Join the rooms the token names (§1) before ``welcome``; live frames of those rooms
        are held until :meth:`release_held` (after ``welcome``)."""
        rooms = self.peer.identity.rooms[:self.peer.limits.max_rooms]
        if not rooms:
            return {}
        self._held, self._held_bytes = [], 0
        self.peer.rooms.update(rooms)
        results = await asyncio.gather(*(self._join_room(r, None, None) for r in rooms))
        out: dict[str, dict] = {}
        for room, res in zip(rooms, results, strict=True):
            if res is None:
                out[room] = {"error": ErrorCode.UNAVAILABLE.value}
                continue
            out[room] = {"seq": res.position}
            if (summary := self.node.presence_summary(room)) is not None:
                out[room]["presence"] = summary
        return out

    async def _history(self, a: DoHistory) -> None:
        try:
            page = await history.read_page(self.node.backplane, a.room, before=a.before,
                                           after=a.after, limit=a.limit,
                                           batch=self.node.config.history_page,
                                           max_bytes=self._limit // 4)
        except BackplaneError:
            self._error(ErrorCode.UNAVAILABLE, "history not readable right now; retry",
                        a.rid, a.room)
            return
        self.send_frame(p.history(a.room, a.rid, page.frames, page.more))

    async def _refresh(self, a: DoRefresh) -> None:
        """Replace the connection's token with a newer one for the same user (§3.7); rooms it
        no longer allows are left with ``reason: "forbidden"``."""
        try:
            identity = await self.node.authenticate(a.token)
        except AuthError as exc:
            self._error(ErrorCode.BAD_TOKEN, exc.reason, a.rid, None)
            return
        if identity.user != self.peer.identity.user:
            self._error(ErrorCode.BAD_TOKEN, "token names another user", a.rid, None)
            return
        gone = self.peer.replace_identity(identity)
        self._plan_refresh(time.time())
        for room in gone:
            await self.remove_from(room, "forbidden")
        self.send_frame(p.refreshed(a.rid, identity.expires_at))

    async def remove_from(self, room: str, reason: str) -> None:
        """Take the connection out of ``room`` on the server's initiative (a refreshed token
        that no longer allows it, the server API's ``unsubscribe``): a ``left`` frame with the
        reason."""
        self.peer.rooms.discard(room)
        await self._leave_room(room, None, reason)

    async def _leave_room(self, room: str, rid: p.Rid, reason: str | None = None) -> None:
        """Out of the room's presence and membership, then ``left`` (the peer has already
        dropped the room)."""
        if self.node.presence is not None:
            self.node.presence.untrack(room, self.peer.conn_id)
        await self.node.rooms.leave(self, room)
        self.send_frame(p.left(room, rid, self.resume_token(), reason=reason))

    async def _join(self, a: DoJoin) -> None:
        try:
            res = await self._join_room(a.room, a.since, a.epoch)
        except ConnectionError:
            return
        if res is None:
            self._error(ErrorCode.UNAVAILABLE, "room temporarily unavailable", a.rid, a.room)
            return
        self.send_frame(p.joined(a.room, a.rid, seq=res.position, recovered=res.recovered,
                                 replayed=res.replayed, resume_token=self.resume_token(),
                                 presence=self.node.presence_summary(a.room)))

    async def _resume(self, a: DoResume) -> None:
        """Re-join the token's rooms, at most ``RESUME_CONCURRENCY`` at a time, each replayed
        from its position. The documented order holds (§3.4): every replay, then ``resumed``,
        then live frames — the live frames of rooms already re-joined are held meanwhile
        (bounded like the send buffer) and written right after ``resumed``."""
        try:
            claims = self.node.resume.verify(a.token, self.peer.identity.user)
        except ResumeTokenError as exc:
            self._error(ErrorCode.BAD_RESUME_TOKEN, exc.reason, a.rid, None)
            return
        control = self.node.control
        if control is not None and control.revoked(claims.user,
                                                   claims.expires_at - self.node.resume.ttl):
            self._error(ErrorCode.BAD_RESUME_TOKEN, "resume token revoked", a.rid, None)
            return
        results: dict[str, dict] = {}
        allowed = set(self.peer.resume_rooms(claims.rooms))
        gate = asyncio.Semaphore(RESUME_CONCURRENCY)

        async def rejoin(room: str) -> bool:
            """False when the client went away during the replay."""
            since = a.positions.get(room)
            async with gate:
                try:
                    res = await self._join_room(room, since, claims.epoch)
                except ConnectionError:
                    return False
            if res is None:
                results[room] = {"error": ErrorCode.UNAVAILABLE.value}
            else:
                results[room] = {"seq": res.position, "replayed": res.replayed,
                                 "recovered": bool(res.recovered) if since is not None
                                 else False}
            return True

        for room in claims.rooms:
            if room not in allowed:
                results[room] = {"error": ErrorCode.FORBIDDEN.value}
        if self._held is None:
            self._held, self._held_bytes = [], 0
        try:
            todo = [r for r in claims.rooms if r in allowed]
            # Most sessions have one room: no task for it.
            done = ([await rejoin(todo[0])] if len(todo) == 1
                    else await asyncio.gather(*map(rejoin, todo)))
            if not all(done):
                return
            for room, res in results.items():
                summary = self.node.presence_summary(room) if "seq" in res else None
                if summary is not None:
                    res["presence"] = summary
            if self.node.presence is not None:
                self.node.presence.evict_elsewhere(claims.conn)
            full = all(r.get("recovered") for r in results.values())
            self.node.metrics.resumes.labels(recovered=str(full).lower()).inc()
            self.send_frame(p.resumed({r: results[r] for r in claims.rooms if r in results},
                                      a.rid, self.resume_token()))
        finally:
            self.release_held()

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

    async def _publish(self, a: DoPublish) -> None:
        """Start storing a publish; the ack is sent from a callback when JetStream confirms
        (many in flight per connection, no task per message). A transient failure of that
        first attempt hands over to :meth:`_publish_and_ack`, which retries with the same id."""
        body = p.stored_body(self.peer.user_json, int(time.time() * 1000), a.client_id, a.body)
        t0 = time.perf_counter()
        fut = await self.node.backplane.publish_begin(a.room, body, a.dedupe_id)
        self.node.inflight.add(fut)  # both sets: drains wait for it; the callback removes it
        if self._inflight is None:
            self._inflight = set()
        self._inflight.add(fut)
        fut.add_done_callback(functools.partial(self._first_attempt_done, a, body, t0))

    def _first_attempt_done(self, a: DoPublish, body: bytes, t0: float,
                            fut: asyncio.Future) -> None:
        self._inflight.discard(fut)
        self.node.inflight.discard(fut)
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is None:
            self._acked(a, fut.result(), t0)
        elif isinstance(exc, PublishError):
            self._publish_failed(a)
        else:
            task = self.node.spawn(self._publish_and_ack(a, body, t0), inflight=True)
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _publish_and_ack(self, a: DoPublish, body: bytes, t0: float) -> None:
        try:
            res = await self.node.backplane.publish(a.room, body, a.dedupe_id)
        except PublishError:
            self._publish_failed(a)
            return
        self._acked(a, res, t0)

    def _publish_failed(self, a: DoPublish) -> None:
        self._error(ErrorCode.PUBLISH_FAILED, "message not stored; retry with the same id",
                    a.rid, a.room)

    def _acked(self, a: DoPublish, res, t0: float) -> None:
        metrics = self.node.metrics
        metrics.publish_latency.observe(time.perf_counter() - t0)
        metrics.received.inc()
        self.send_frame(p.ack(a.room, a.rid, a.client_id, res.seq, res.duplicate))
