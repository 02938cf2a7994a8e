"""Room-scoped presence (``--presence-scope rooms``): a node keeps only the rooms it has local
members in (docs/presence.md, "Room-scoped presence").

* **One owner per entry.** A connection's entry in a room is a record in the
  ``PRESENCE_STATE`` stream on its own subject (``roomcast.pstate.<node>.<conn>.<room>``, the
  last record of each kept), written only by the connection's node, stamped with that node's
  counter: of two records of one entry the higher counter is the newer, whatever order they
  arrive in. A leave is a record too, which expires from the stream after ``TOMBSTONE_TTL``.
* **Rooms with local members only.** At a room's first local join the node subscribes to the
  room's records (live, core NATS) and then reads them from the stream (batch direct gets);
  the join's ``joined`` waits for that read. The room is read once more ``REFRESH_AFTER``
  later (a replica answering the first read may lag, a subscription takes a moment to reach
  every server), after its own NATS reconnect, when a node's heartbeats show a gap, and at
  least every ``REREAD_EVERY`` seconds. When its last local member leaves, the node forgets
  the room.
* **Crashed nodes.** Heartbeats stay cluster-wide. A node silent for the timeout is dead:
  every survivor drops its entries from the rooms it follows, and the first survivor (the
  others later, as a safety net) reads the dead node's records from the stream, stores their
  ``node_down`` backend leaves — also for rooms no survivor follows — and purges them.

A node's memory and the records it receives then follow its own rooms, not the cluster.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import time

import msgspec
import nats.errors

from roomcast.backplane import subjects
from roomcast.backplane.natsclient import unsubscribe_quietly
from roomcast.errors import BackplaneError
from roomcast.presence import admin, writer
from roomcast.presence.records import RoomRecords
from roomcast.presence.state import Conn, Op, Transition
from roomcast.presence.tracker import PresenceTracker
from roomcast.presence.wire import (
    Peer,
    Record,
    Snapshot,
    dec_hb,
    dec_peer,
    dec_record,
    enc,
    event_bytes,
    from_wire,
)
from roomcast.presence.writer import RecordWriter

log = logging.getLogger("roomcast.presence")

#: Seconds a join waits for its room's first read; a slower read sends what it finds to the
#: room's members as presence frames.
ROOM_READ_WAIT = 2.0
#: Every room a node follows is read again at least this often (seconds): a record lost
#: between NATS servers without a lost heartbeat is repaired within it. The reads are spread
#: over the period.
REREAD_EVERY = 30.0
#: Seconds after a room's first read that it is read once more.
REFRESH_AFTER = 1.0
#: Seconds a leave stays in memory, to order late records (as long as in the stream).
TOMBSTONE_TTL = writer.TOMBSTONE_TTL
#: An entry heard within this many seconds survives a read that does not have it. Absence
#: proves little sooner: its record may not be stored yet (JetStream electing a leader, the
#: writer resending), while a leave we missed is still in the stream as a leave record for
#: ``TOMBSTONE_TTL`` seconds, and read as one.
GRACE = TOMBSTONE_TTL + 2.0
#: Seconds a dead node's records are ignored after it was declared dead.
DEAD_MEMORY = 120.0
#: Records per batch direct get.
READ_PAGE = 256
#: Rooms read at once when many are (after a reconnect).
READ_CONCURRENCY = 8




def _release(ready: asyncio.Future) -> None:
    if not ready.done():
        ready.set_result(None)


class _Room:
    __slots__ = ("ready", "sub", "local", "records", "read_at")

    def __init__(self) -> None:
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.sub = None
        self.local = 0  # local connections in the room
        self.records = RoomRecords()  # the newest record of every remote entry
        self.read_at = time.monotonic()  # when its last read began


class ScopedTracker(PresenceTracker):
    scoped = True

    def __init__(self, nc, store, backplane, **kwargs) -> None:
        super().__init__(nc, store, **kwargs)
        self._backplane = backplane  # NatsBackplane: read_stored, leader_last
        self.rooms: dict[str, _Room] = {}
        self._dead: dict[str, float] = {}  # origin -> when declared dead
        self._tombs: collections.deque[tuple[float, str, str]] = collections.deque()
        self.writer = RecordWriter(nc, self.instance)
        self._reading: asyncio.Task | None = None
        self._to_read: set[str] = set()
        self._pass: list[str] = []  # followed rooms still to visit in this re-read pass
        self._republished = 0.0
        self.cleanups_done = 0  # dead nodes cleaned up (or given up on) by this node

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        nc = self.nc
        acks = await self.writer.start()
        beats = await nc.subscribe(subjects.PRESENCE_HEARTBEAT)
        nc.direct(beats, self._on_heartbeat)
        self._subs = [
            acks, beats,
            await nc.subscribe(subjects.PRESENCE_HELLO, cb=self._on_sync_request),
            await nc.subscribe(subjects.presence_sync(self.instance), cb=self._on_sync_request),
            await nc.subscribe(subjects.presence_evict(self.instance), cb=self._on_evict),
            await nc.subscribe(subjects.PRESENCE_ASK_PREFIX + ">", cb=self._on_ask),
        ]
        await nc.flush()
        await self._hello()  # learns the live nodes (their replies carry no connections)
        self._hb_task = asyncio.get_running_loop().create_task(self._heartbeats())

    async def close(self, flush_seconds: float = 5.0) -> None:
        end = time.monotonic() + flush_seconds
        # The leaves of a drained node's connections.
        if self.nc.is_connected and not await self.writer.wait_acked(flush_seconds):
            log.warning("presence: %d records unacknowledged at shutdown", self.writer.pending)
        for r in self.rooms.values():
            if r.sub is not None:
                self.nc.undirect(r.sub)
                await unsubscribe_quietly(r.sub)
        await super().close(max(0.0, end - time.monotonic()))

    # -- local changes ---------------------------------------------------------------

    def track(self, room: str, conn_id: str, user: str, info: dict) -> None:
        r = self.rooms.get(room)
        if r is None:
            r = self.rooms[room] = _Room()
            self._spawn(self._open(room, r))
            asyncio.get_running_loop().call_later(ROOM_READ_WAIT, _release, r.ready)
        if not self.state.has_conn(room, conn_id):
            r.local += 1
        super().track(room, conn_id, user, info)

    def untrack(self, room: str, conn_id: str) -> None:
        if not self.state.has_conn(room, conn_id):
            return
        super().untrack(room, conn_id)
        r = self.rooms.get(room)
        if r is not None:
            r.local -= 1
            if r.local <= 0:
                self._forget(room, r)

    def room_ready(self, room: str) -> asyncio.Future | None:
        r = self.rooms.get(room)
        return r.ready if r is not None and not r.ready.done() else None

    def _send_deltas(self) -> None:
        """This batch's records, each on its own subject, then its evictions."""
        steps, self._outbox = self._outbox, []
        evictions, self._evictions = self._evictions, []
        sends = [self.writer.record(s.counter, s.op == Op.JOIN.value, s.conn) for s in steps]
        sends += [(subject, conn, None, "") for subject, conn in evictions]
        if sends:
            self._spawn(self.writer.send(sends))

    def _republish(self) -> None:
        """Write every local entry again (a full NATS outage, a purge by a node that took us
        for dead): new counters, so they win over anything older."""
        now = time.monotonic()
        if now - self._republished < 1.0:
            return
        self._republished = now
        sends = [self.writer.record(self.state.next_counter(), True, c)
                 for c in self.state.snapshot_of(self.instance)]
        if sends:
            self._spawn(self.writer.send(sends))

    # -- the rooms this node follows -------------------------------------------------

    async def _open(self, room: str, r: _Room) -> None:
        try:
            sub = await self.nc.subscribe(subjects.presence_room_filter(room))
            self.nc.direct(sub, self._on_record)
            if self.rooms.get(room) is not r:  # its members left meanwhile
                self.nc.undirect(sub)
                await unsubscribe_quietly(sub)
                return
            r.sub = sub
            await self._load(room, r)
        except (BackplaneError, nats.errors.Error, TimeoutError) as exc:
            log.warning("presence of room %s not readable yet (%s); members on other nodes "
                        "appear when it is", room[:80], exc)
        finally:
            _release(r.ready)
        asyncio.get_running_loop().call_later(REFRESH_AFTER, self._read_later, room)

    def _forget(self, room: str, r: _Room) -> None:
        del self.rooms[room]
        self.state.drop_room(room)
        if r.sub is not None:
            self.nc.undirect(r.sub)
            self._spawn(unsubscribe_quietly(r.sub))
        _release(r.ready)

    def _on_record(self, subject: bytes, headers: bytes | None, data: bytes) -> None:
        rec = dec_record.decode(data)
        if rec.conn.node == self.instance:
            return  # our own, back from NATS
        self.deltas_received += 1
        r = self.rooms.get(rec.conn.room)
        if r is None:
            return
        trans = self._apply(r, rec, time.monotonic())
        if trans and r.ready.done():
            self._on_transitions(trans)

    def _apply(self, r: _Room, rec: Record, now: float) -> list[Transition]:
        c = rec.conn
        origin = c.node
        if origin == self.instance or origin in self._dead:
            return []
        if not r.records.offer(c.conn, rec.counter, rec.alive, now):
            return []  # older than what we have
        if origin not in self.peers:
            # Not heard yet: it gets a timeout like any node, and is dead if it stays silent.
            self.peers[origin] = Peer(origin.rpartition(".")[0], now, 0, 0)
        if rec.alive:
            return self.state.apply_join(from_wire(c))
        self._tombs.append((now, c.room, c.conn))
        return self.state.apply_leave(c.room, c.conn)

    async def _load(self, room: str, r: _Room) -> None:
        """Read the room and apply what the read has; changes become presence frames unless
        the first joins are still waiting for this read (their ``joined`` lists them)."""
        started = r.read_at = time.monotonic()
        records = await self._read_fresh(subjects.presence_room_filter(room))
        if self.rooms.get(room) is not r:
            return
        now = time.monotonic()
        seen: set[str] = set()
        out: list[Transition] = []
        for _, rec in records:
            seen.add(rec.conn.conn)
            out += self._apply(r, rec, now)
        for cid in r.records.gone_after_read(seen, started, GRACE):
            out += self.state.apply_leave(room, cid)
        if out and r.ready.done():
            self._on_transitions(out)

    async def _read_fresh(self, subject: str) -> list[tuple[int, Record]]:
        """Every record on ``subject``, from a read at least as new as the stream's leader was
        when it began: a batch direct get may be answered by a replica a little behind, so
        it is repeated (up to 3 times) until it holds the leader's newest record."""
        for _ in range(3):
            newest, records = await asyncio.gather(
                self._backplane.leader_last(subjects.PRESENCE_STATE_STREAM, subject,
                                            what="presence read"),
                self._read_all(subject), return_exceptions=True)
            if isinstance(records, BaseException):
                raise records
            if isinstance(newest, BaseException):
                # No leader right now (an election): the replica's read is what there is; the
                # room's next read checks again.
                log.debug("presence read without the leader's check: %s", newest)
                break
            if newest == 0 or any(seq >= newest for seq, _ in records):
                break
        return records

    async def _read_all(self, subject: str) -> list[tuple[int, Record]]:
        out: list[tuple[int, Record]] = []
        start = 1
        while True:
            page = await self._backplane.read_stored(subjects.PRESENCE_STATE_STREAM, subject,
                                                     start, READ_PAGE, what="presence read")
            for m in page:
                try:
                    out.append((m.seq, dec_record.decode(m.body)))
                except msgspec.DecodeError:
                    log.warning("presence record at %d unreadable; skipped", m.seq)
            if len(page) < READ_PAGE:
                return out
            start = page[-1].seq + 1

    def _read_later(self, *rooms: str) -> None:
        """Read these rooms again (in one task, a few at a time)."""
        self._to_read.update(r for r in rooms if r in self.rooms)
        if self._to_read and (self._reading is None or self._reading.done()):
            self._reading = asyncio.get_running_loop().create_task(self._read_queued())
            self._tasks.add(self._reading)
            self._reading.add_done_callback(self._tasks.discard)

    async def _read_queued(self) -> None:
        sem = asyncio.Semaphore(READ_CONCURRENCY)

        async def one(room: str) -> None:
            async with sem:
                r = self.rooms.get(room)
                if r is None:
                    return
                try:
                    await self._load(room, r)
                except (BackplaneError, nats.errors.Error, TimeoutError) as exc:
                    log.info("presence re-read of %s failed (%s); retried", room[:80], exc)
                    asyncio.get_running_loop().call_later(1.0, self._read_later, room)

        while self._to_read:
            batch, self._to_read = self._to_read, set()
            await asyncio.gather(*map(one, batch))

    def resync_all(self) -> None:
        """After our own NATS reconnect: write our entries again, read our rooms again."""
        self._republish()
        self._read_later(*self.rooms)

    # -- other nodes -----------------------------------------------------------------

    def _on_heartbeat(self, subject: bytes, headers: bytes | None, data: bytes) -> None:
        hb = dec_hb.decode(data)
        if hb.origin == self.instance:
            self._heard_own()
            return
        now = time.monotonic()
        peer = self.peers.get(hb.origin)
        if peer is None or peer.beat == 0:
            self._check_scope(hb)
            if self._dead.pop(hb.origin, None) is not None:
                # Taken for dead (its records purged), but alive: it writes them again.
                log.warning("presence: node %s is back; asking it for its entries", hb.node)
                self._spawn(self._publish(subjects.presence_sync(hb.origin), b"republish"))
            if peer is None:
                self.peers[hb.origin] = Peer(hb.node, now, hb.counter, hb.conns, hb.beat)
                return
        gap = peer.beat and hb.beat != peer.beat + 1
        peer.node, peer.last_seen, peer.counter, peer.conns = hb.node, now, hb.counter, hb.conns
        peer.beat = hb.beat
        if gap:
            # A heartbeat lost between us, so records may be too: read the rooms it is in.
            rooms = {room for rooms in self.state._by_node.get(hb.origin, {}).values()
                     for room in ((rooms,) if isinstance(rooms, str) else rooms)}
            self._read_later(*rooms)

    def _apply_snapshot(self, data: bytes) -> None:
        snap = dec_peer.decode(data)
        if snap.origin != self.instance:
            self.peers.setdefault(snap.origin, Peer(snap.node, time.monotonic(), snap.counter,
                                                     0))

    async def _on_sync_request(self, msg) -> None:
        if msg.data == b"republish":
            self._republish()
        if msg.reply:
            await msg.respond(enc.encode(Snapshot(self.instance, self.node_id,
                                                    self.state.counter, [])))

    def _node_died(self, origin: str, gone: list[Conn], trans: list[Transition],
                   delay: float) -> None:
        """Its records are ignored from now on; its backend leaves come from the stream (for
        every room it was in, followed here or not), then its records are purged."""
        self._dead[origin] = time.monotonic()
        self._spawn(self._clean_dead(origin, delay))

    async def _clean_dead(self, origin: str, delay: float) -> None:
        """Store a dead node's ``node_down`` leaves (every room, followed here or not), then
        purge its records. Every survivor computes the same events under the same ids."""
        if delay:
            await asyncio.sleep(delay)
        try:
            records = [r for _, r in await self._read_all(subjects.presence_node_filter(origin))
                       if r.alive and r.conn.node == origin]
            by_room: dict[str, list[Conn]] = {}
            for rec in records:
                by_room.setdefault(rec.conn.room, []).append(from_wire(rec.conn))
            sem = asyncio.Semaphore(READ_CONCURRENCY)

            async def leaves(room: str, conns: list[Conn]) -> None:
                # Whether the user keeps a connection there (on a live node): the room's records.
                async with sem:
                    stored = await self._read_all(subjects.presence_room_filter(room))
                others = {rec.conn.user for _, rec in stored
                          if rec.alive and rec.conn.node != origin
                          and rec.conn.node not in self._dead}
                self.events.add_fixed(room, [(c.conn, event_bytes(Op.LEAVE, c, False,
                                                             c.user not in others, "node_down"))
                                             for c in conns], "down")

            # A few rooms read at once: a node dies with thousands of rooms.
            await asyncio.gather(*(leaves(room, conns) for room, conns in by_room.items()))
            if records and not await self.events.flush(10.0):
                log.warning("node_down events of %s not all stored yet; its records are kept "
                            "for the safety net", origin)
                return
            await self.nc.request(
                f"$JS.API.STREAM.PURGE.{subjects.PRESENCE_STATE_STREAM}",
                json.dumps({"filter": subjects.presence_node_filter(origin)}).encode(),
                timeout=5.0)
        except (BackplaneError, nats.errors.Error, TimeoutError) as exc:
            log.warning("presence clean-up of dead node %s failed: %s", origin, exc)
        finally:
            self.cleanups_done += 1

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if self.nc.is_connected and (late := self.writer.late(now)):
            self._spawn(self.writer.send(late))
        if self.nc.is_connected and self.rooms:
            # One pass over the followed rooms per REREAD_EVERY, a share per heartbeat: each
            # room not read for that long is read again.
            if not self._pass:
                self._pass = list(self.rooms)
            share = math.ceil(len(self.rooms) * self.config.heartbeat_interval / REREAD_EVERY)
            take, self._pass = self._pass[:share], self._pass[share:]
            due = [room for room in take
                   if (r := self.rooms.get(room)) is not None and now - r.read_at > REREAD_EVERY]
            if due:
                self._read_later(*due)
        tombs = self._tombs
        while tombs and now - tombs[0][0] > TOMBSTONE_TTL:
            heard, room, cid = tombs.popleft()
            r = self.rooms.get(room)
            if r is not None:
                r.records.expire(cid, heard)
        for origin, when in list(self._dead.items()):
            if now - when > DEAD_MEMORY:
                del self._dead[origin]

    def live_nodes(self) -> dict[str, dict]:
        out = super().live_nodes()
        for origin, p in self.peers.items():
            out[origin]["connections"] = p.conns  # from its heartbeats: we hold only our rooms
        return out

    # -- admin questions (scatter-gather: no node holds every room) ------------------

    async def _on_ask(self, msg) -> None:
        await admin.answer_ask(self, msg)

    def followed(self) -> list[str]:
        """The rooms this node follows (and has read)."""
        return [room for room, r in self.rooms.items() if r.ready.done()]

    async def room_members(self, room: str) -> dict[str, list[dict]]:
        """A room's members: from memory when followed here, else from the stream."""
        r = self.rooms.get(room)
        if r is not None and r.ready.done():
            return self.state.members(room)
        members: dict[str, list[dict]] = {}
        for _, rec in await self._read_fresh(subjects.presence_room_filter(room)):
            c = rec.conn
            if rec.alive and c.node not in self._dead:
                members.setdefault(c.user, []).append(from_wire(c).meta())
        return members
