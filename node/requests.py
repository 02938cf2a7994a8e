"""What a client asks of its session: join, leave, resume, history, token refresh, publish.

The request half of :class:`roomcast.node.connection.Connection` (a mixin over the same
slots): each handler carries out one action the pure :class:`roomcast.node.peer.Peer` decided
on, talks to the node's rooms, presence and backplane, and answers through the connection's
write seam (``send_frame``). The read loop, the write seam, keepalive and closing stay in
``connection.py``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import TYPE_CHECKING

from roomcast import protocol as p
from roomcast.errors import AuthError, BackplaneError, PublishError
from roomcast.node import history
from roomcast.node.peer import DoHistory, DoJoin, DoPublish, DoRefresh, DoResume
from roomcast.protocol import ErrorCode
from roomcast.resume import ResumeTokenError

if TYPE_CHECKING:
    from roomcast.node.peer import Peer
    from roomcast.node.server import Node

#: Rooms of one ``resume`` re-joined at once (each is ~3 NATS round trips plus its replay).
RESUME_CONCURRENCY = 16


class SessionRequests:
    """Mixin: the session requests of a :class:`~roomcast.node.connection.Connection`."""

    __slots__ = ()

    if TYPE_CHECKING:  # provided by Connection
        node: Node
        peer: Peer
        _limit: int
        _inflight: set[asyncio.Future] | None
        _held: list | None
        _held_bytes: int

        def send_frame(self, frame: bytes, wire: bytes | None = None) -> bool: ...
        def _error(self, code: ErrorCode, message: str, rid: p.Rid, room: str | None) -> None: ...
        def resume_token(self) -> str: ...
        def _plan_refresh(self, now: float) -> None: ...
        def release_held(self) -> None: ...

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
            res = self.node.rooms.join_now(self, room) if since is None else None
            if res is None:
                res = await self.node.rooms.join(self, room, since)
        except (TimeoutError, BackplaneError):
            self.peer.join_failed(room)
            if presence is not None:
                presence.untrack(room, self.peer.conn_id)
            return None
        if presence is not None and (ready := presence.room_ready(room)) is not None:
            # Room-scoped presence reads the room's other members at its first local join (at
            # most ROOM_READ_WAIT: a slower read sends them as presence frames when it ends).
            await asyncio.shield(ready)
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
