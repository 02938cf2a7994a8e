"""Rooms on one node: reference-counted subscriptions, ordered fan-out, catch-up.

* A node subscribes to a room's live subject while it has at least one local member.
* Each live message is encoded and framed once; a room's frames of one event-loop iteration
  are joined once and the same bytes are written to every local member (:meth:`flush`,
  ``docs/performance.md``).
* A per-room sequencer drops duplicates (``seq <= last``) and, when ``prev`` shows a gap (the
  node missed messages, e.g. across a NATS reconnect), reads the missing ones from JetStream
  before delivering anything newer. Members therefore see a gap-free ``prev`` chain.
* A join with ``since`` first buffers the member's live messages, replays history after
  ``since`` page by page (no cap), then delivers the buffer minus what the replay covered and
  switches the member to live delivery with no await in between: no loss, no duplicate at the
  replay/live boundary (``docs/protocol.md`` §7).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

import msgspec

from roomcast import protocol as p
from roomcast.backplane.base import Backplane, RoomMessage
from roomcast.node.metrics import NodeMetrics
from roomcast.node.replaycache import Entry, ReplayCache
from roomcast.node.wire import text_frame

log = logging.getLogger("roomcast.node.rooms")

REPAIR_ATTEMPTS = 20
REPAIR_DELAY = 0.05


class Member(Protocol):
    """A local recipient (a client connection)."""

    def send_frame(self, frame: bytes, wire: bytes | None = None) -> bool:
        """Queue ``frame`` (``wire``: the same, WebSocket-framed) without waiting; False if
        the member is gone."""
        ...

    def write_shared(self, data: bytes, frames: list[tuple[int, bytes, bytes]]) -> bool:
        """Write ``data``: the WebSocket frames of ``frames`` (``(seq or 0, payload, framed)``)
        joined, the same bytes object for every member of the room; False if the member is
        gone or was closed as a slow consumer."""
        ...

    def overflow(self) -> None:
        """The member fell too far behind; close it so it resumes later."""
        ...

    def needs_drain(self) -> bool:
        """Whether a replay should wait (:meth:`drain`) before queueing more."""
        ...

    async def drain(self) -> None:
        """Write what is queued and wait until the send buffer is low (replay backpressure)."""
        ...


@dataclass(slots=True)
class JoinResult:
    position: int
    recovered: bool | None = None
    replayed: int = 0


class Room:
    __slots__ = ("name", "name_json", "members", "catching", "last_seq", "subscribed",
                 "lock", "pending", "out", "late", "base_seq")

    def __init__(self, name: str) -> None:
        self.name = name
        self.name_json = msgspec.json.encode(name)
        self.members: dict[Member, None] = {}
        self.catching: dict[Member, list[tuple[int, int | None, bytes]]] = {}
        self.last_seq = 0  # last seq delivered on this node; 0 = none known yet
        self.subscribed = False
        self.lock = asyncio.Lock()
        self.pending: list[RoomMessage] | None = None  # set while a gap is being repaired
        # Frames of this loop iteration, not yet written: (seq or 0, payload, framed).
        self.out: list[tuple[int, bytes, bytes]] = []
        # Members added during this iteration, with (n, position): of out[:n], queued before
        # they joined, they get only the messages above their position, and no presence frame
        # (their ``joined`` lists the members, their own join included; §4.10).
        self.late: dict[Member, tuple[int, int]] | None = None
        self.base_seq = 0  # last_seq before the first frame of out was queued

    def __len__(self) -> int:
        return len(self.members) + len(self.catching)


class RoomRegistry:
    def __init__(self, backplane: Backplane, metrics: NodeMetrics, *, history_page: int = 256,
                 history_per_room: int = 1000, catchup_buffer: int = 10_000,
                 request_flush: Callable[[], None] | None = None,
                 cache: ReplayCache | None = None,
                 history_for: Callable[[str], int] | None = None) -> None:
        """``request_flush``: called when the first frame of a loop iteration is queued; the
        caller must then call :meth:`flush` once, later in the same or the next iteration
        (the node does it in its own flush, after each connection's direct frames). Without
        it the registry schedules its own flush with ``call_soon``."""
        self.bp = backplane
        self.metrics = metrics
        self.history_page = history_page
        self.history_per_room = history_per_room
        #: Messages a room keeps (per namespace, docs/namespaces.md); default: history_per_room.
        self.history_for = history_for or (lambda room: self.history_per_room)
        self.catchup_buffer = catchup_buffer
        self.rooms: dict[str, Room] = {}
        self.cache = cache if cache is not None else ReplayCache()
        self._tasks: set[asyncio.Task] = set()
        self._dirty: list[Room] = []
        self._request_flush = request_flush or self._flush_soon
        #: Called with a room's name when its last local member left (the presence feed).
        self.on_room_gone: Callable[[str], None] | None = None

    # -- membership ------------------------------------------------------------------

    async def join(self, member: Member, name: str, since: int | None = None) -> JoinResult:
        """Add ``member`` to room ``name``; with ``since``, replay what it missed first."""
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name)
            self.metrics.rooms.set(len(self.rooms))
        catching_up = since is not None
        existed = member in room.members
        if catching_up:
            room.catching[member] = []
            room.members.pop(member, None)
        else:
            room.members.setdefault(member, None)
        if not room.subscribed:  # (the common case, subscribed, needs no coroutine)
            try:
                await self._ensure_subscribed(room)
            except BaseException:
                await self.leave(member, name)
                raise
        if not catching_up:
            return self._joined(room, member, existed)
        try:
            return await self._catch_up(room, member, since)
        except BaseException:
            room.catching.pop(member, None)
            raise

    def join_now(self, member: Member, name: str) -> JoinResult | None:
        """:meth:`join` without ``since``, done at once when the room is subscribed already
        (the usual case: no coroutine); None otherwise (then await :meth:`join`)."""
        room = self.rooms.get(name)
        if room is None or not room.subscribed:
            return None
        existed = member in room.members
        room.members.setdefault(member, None)
        return self._joined(room, member, existed)

    def _joined(self, room: Room, member: Member, existed: bool) -> JoinResult:
        if existed:
            # Already a member: what this iteration queued is still to come to it.
            return JoinResult(position=room.base_seq if room.out else room.last_seq)
        self._mark_late(room, member, room.last_seq)
        return JoinResult(position=room.last_seq)

    @staticmethod
    def _mark_late(room: Room, member: Member, position: int) -> None:
        """``member`` became a member at ``position`` with frames of this iteration queued:
        of those it gets only messages above ``position`` (no presence frame: its ``joined``
        lists the members, its own join included)."""
        if room.out:
            if room.late is None:
                room.late = {}
            room.late[member] = (len(room.out), position)

    async def leave(self, member: Member, name: str) -> None:
        room = self.rooms.get(name)
        if room is None:
            return
        room.members.pop(member, None)
        room.catching.pop(member, None)
        if len(room):
            return
        async with room.lock:
            if len(room) == 0 and self.rooms.get(name) is room:
                del self.rooms[name]
                self.cache.drop(name)
                if self.on_room_gone is not None:
                    self.on_room_gone(name)
                self.metrics.rooms.set(len(self.rooms))
                if room.subscribed:
                    room.subscribed = False
                    await self.bp.unsubscribe(name)

    async def _ensure_subscribed(self, room: Room) -> None:
        if room.subscribed:
            return
        async with room.lock:
            if room.subscribed:
                return
            await self.bp.subscribe(room.name, self._on_message)
            room.subscribed = True
            # Anchor the sequencer: anything stored from now on arrives live, and a gap
            # after this position is noticed by ``prev`` and repaired.
            last = await self.bp.last_seq(room.name)
            if room.last_seq == 0:
                room.last_seq = last

    # -- live path -------------------------------------------------------------------

    def _on_message(self, msg: RoomMessage) -> None:
        room = self.rooms.get(msg.room)
        if room is None:
            return
        if not msg.seq:
            # An ephemeral room's message (core NATS, docs/namespaces.md): no order to keep,
            # nothing to cache or replay; members get it with seq 0.
            if room.members:
                frame = p.message_frame(room.name_json, 0, None, msg.body)
                self._queue(room, 0, frame, text_frame(frame))
            return
        if room.pending is not None:
            room.pending.append(msg)
            return
        if msg.seq <= room.last_seq:
            return  # duplicate (e.g. redelivered across a reconnect)
        if room.last_seq and msg.prev > room.last_seq:
            room.pending = [msg]
            self._spawn(self._repair(room))
            return
        self._deliver(room, msg.seq, msg.prev, msg.body)

    def _deliver(self, room: Room, seq: int, prev: int | None, body: bytes) -> None:
        if not room.out:
            room.base_seq = room.last_seq
        room.last_seq = seq
        self.cache.append(room.name, seq, prev, body)
        frame = p.message_frame(room.name_json, seq, prev, body)
        if room.members:
            # Framed once per node; written to the members with the room's other frames of
            # this loop iteration, in one call per member (:meth:`flush`).
            self._queue(room, seq, frame, text_frame(frame))
        for member, buf in room.catching.items():
            buf.append((seq, prev, frame))
            if len(buf) > self.catchup_buffer:
                member.overflow()

    def _queue(self, room: Room, seq: int, frame: bytes, wire: bytes) -> None:
        if not room.out:
            if not seq:
                room.base_seq = room.last_seq
            if not self._dirty:
                self._request_flush()
            self._dirty.append(room)
        room.out.append((seq, frame, wire))

    def _flush_soon(self) -> None:
        asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write each room's frames of this iteration: joined once, the same bytes to every
        member, one write per member and room (``docs/performance.md``)."""
        dirty, self._dirty = self._dirty, []
        metrics = self.metrics
        for room in dirty:
            out, room.out = room.out, []
            late, room.late = room.late, None
            if not out or not room.members:
                continue
            data = out[0][2] if len(out) == 1 else b"".join([w for _, _, w in out])
            sent = 0
            for member in room.members:
                if late is not None and member in late:
                    n, position = late[member]
                    part = [e for i, e in enumerate(out) if i >= n or e[0] > position]
                    if part:
                        member.write_shared(b"".join([w for _, _, w in part]), part)
                    continue
                if member.write_shared(data, out):
                    sent += 1
            if sent:
                messages = sum(1 for seq, _, _ in out if seq)
                if messages:
                    metrics.delivered.inc(sent * messages)
                    metrics.fanout.observe(sent, messages)

    async def _repair(self, room: Room) -> None:
        """Fill the gap before ``room.pending[0]`` from history, then drain ``pending``."""
        try:
            for _ in range(REPAIR_ATTEMPTS):
                first = room.pending[0]
                async for seq, prev, body in self._read_after(room.name, room.last_seq,
                                                              until=first.seq):
                    self._deliver(room, seq, prev, body)
                if first.prev <= room.last_seq:
                    break
                await asyncio.sleep(REPAIR_DELAY)  # a lagging replica answered; ask again
            else:
                log.warning("room %s: gap before seq %d could not be filled", room.name,
                            room.pending[0].seq)
            self.metrics.gaps_repaired.inc()
        except Exception:  # noqa: BLE001 - keep the room flowing; clients backfill by prev
            log.exception("room %s: gap repair failed", room.name)
        finally:
            pending, room.pending = room.pending or [], None
            for msg in pending:
                if msg.seq > room.last_seq:
                    self._deliver(room, msg.seq, msg.prev, msg.body)

    # -- history ---------------------------------------------------------------------

    async def _read_after(self, name: str, anchor: int, *, until: int | None = None
                          ) -> AsyncIterator[tuple[int, int | None, bytes]]:
        """Retained messages of ``name`` with ``anchor < seq < until``, ``prev``-chained.

        The first message's ``prev`` is ``anchor`` only when the anchor itself is still
        retained (history is a suffix of the room's messages, so nothing in between can be
        missing); otherwise it is None: unknown.
        """
        start = max(anchor, 1)
        prev: int | None = None
        first = True
        while True:
            page = await self.bp.history(name, start, self.history_page)
            for m in page:
                if first:
                    first = False
                    if m.seq == anchor:
                        prev = anchor
                        continue
                if until is not None and m.seq >= until:
                    return
                if m.seq <= anchor:
                    continue
                yield m.seq, prev, m.body
                prev = m.seq
            if len(page) < self.history_page:
                return
            start = page[-1].seq + 1

    async def _catch_up(self, room: Room, member: Member, since: int) -> JoinResult:
        replayed = 0
        last = since
        recovered: bool | None = None
        cached = None
        if room.subscribed and room.pending is None:
            cached = self.cache.after(room.name, since, room.last_seq)
        if cached is not None:
            # From this node's tail of the room: no JetStream read, no await unless the
            # member's buffer asks for one.
            recovered = True
            source: AsyncIterator[Entry] = _replay(cached)
            read: deque[Entry] | None = None
        else:
            source = self._read_after(room.name, since)
            read = deque(maxlen=self.cache.room_messages) if self.cache.enabled else None
        async for seq, prev, body in source:
            if recovered is None:
                recovered = prev is not None
            if not member.send_frame(p.message_frame(room.name_json, seq, prev, body)):
                raise ConnectionError("member gone during replay")
            if read is not None:
                read.append((seq, prev, body))
            replayed += 1
            last = seq
            if member.needs_drain():  # by bytes: a replay must never trip the slow-consumer cut
                await member.drain()
        if read:
            self.cache.prepend(room.name, list(read), room.last_seq)
        if recovered is None:
            # Nothing after ``since`` is retained: recovered iff nothing after it was stored,
            # and ``since`` is a position the store issued. One beyond the room's newest
            # message (asked of the stream leader: a replica may lag) was never issued — a
            # position from a recreated stream, or a client's mistake: not confirmed; the
            # member gets everything retained, as for ``since: 0`` (§3.1).
            newest = max(room.last_seq, await self.bp.last_seq(room.name))
            if newest < since:
                newest = max(room.last_seq, await self.bp.last_seq(room.name, leader=True))
            recovered = newest >= since
            if not recovered:
                last = 0
                async for seq, prev, body in self._read_after(room.name, 0, until=newest + 1):
                    if not member.send_frame(p.message_frame(room.name_json, seq, prev, body)):
                        raise ConnectionError("member gone during replay")
                    replayed += 1
                    last = seq
                    if member.needs_drain():
                        await member.drain()
        elif since == 0:
            recovered = replayed < self.history_for(room.name)
        # Hand over to live: deliver the buffered live frames the replay did not cover.
        while True:
            buf = room.catching.get(member)
            if buf is None:
                raise ConnectionError("member left during replay")
            if not buf:
                break
            room.catching[member] = []
            for seq, prev, frame in buf:
                if seq <= last:
                    continue
                if prev is not None and prev > last:
                    # The replica that served the replay lagged; read the missing part.
                    async for s, pv, body in self._read_after(room.name, last, until=seq):
                        member.send_frame(p.message_frame(room.name_json, s, pv, body))
                        replayed += 1
                        last = s
                        if member.needs_drain():
                            await member.drain()
                member.send_frame(frame)
                last = seq
        room.catching.pop(member, None)
        room.members[member] = None
        # This iteration's room frames up to ``last`` went to the member directly (replay or
        # buffer): at the flush it gets only the rest, and after its direct frames.
        self._mark_late(room, member, last)
        return JoinResult(position=last, recovered=recovered, replayed=replayed)

    def reset_positions(self, affected: Callable[[str], bool] | None = None) -> None:
        """A stream was recreated: forget the position of every room in it (``affected``;
        None: all) — the next live message anchors it again — and their replay cache (it
        holds the old incarnation's messages)."""
        for room in self.rooms.values():
            if affected is not None and not affected(room.name):
                continue
            room.last_seq = 0
            room.base_seq = 0
            room.pending = None
            self.cache.drop(room.name)

    def broadcast(self, name: str, frame: bytes) -> None:
        """Send a non-message frame (e.g. presence) to the room's live local members."""
        room = self.rooms.get(name)
        if room is not None and room.members:
            self._queue(room, 0, frame, text_frame(frame))  # in order with the room's messages

    # -- housekeeping ----------------------------------------------------------------

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self.rooms.clear()


async def _replay(entries: list[Entry]) -> AsyncIterator[Entry]:
    for e in entries:
        yield e
