"""The backend event log: presence events stored in the ``PRESENCE`` stream, batched per room.

Each stored message is a JSON array of one or more events of one room, oldest first
(``docs/presence.md``). One store is in flight per node at a time; the events that arrive
meanwhile wait in their room's queue, and each room's waiting events are stored together, as one
message, when its turn comes. A room also stores at most one message per ``ROOM_INTERVAL``
(0.25 s) unless a whole batch is waiting: an event of a room that has not stored for that long
goes at once, alone (no added delay at low load); in a burst (a resume storm, a node's death) a
room's events go out in a few messages instead of one each. Storing an R3 message costs the NATS
servers ~1.5 ms of CPU on the dev machine whatever its size, so this keeps a burst of thousands
of joins or leaves from taking the CPU that clients' messages need (a 2,000-client resume storm:
~490 stored messages without the interval, ~180 with it, and NATS CPU halved). It also keeps a
room's events in order when a store has to be retried. Backend events are not on any client's
path: up to a quarter of a second of queueing in a burst costs nobody anything.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

import nats.errors

from roomcast.backplane import subjects
from roomcast.backplane.natsclient import AckError

log = logging.getLogger("roomcast.presence")

#: Events per stored message at most (~250 bytes each: well below NATS' 1 MiB max_payload).
MAX_BATCH = 256
#: Stores in flight at once, all rooms together. One: while it is out, every room's events
#: wait and merge (measured in a resume storm of 2,000 clients over 20 rooms: 1 in flight gave
#: ~480 stored messages, 2 ~1,000, 4 ~1,600, and one per room ~1,600).
MAX_IN_FLIGHT = 1
#: Events waiting to be stored, all rooms together, at most; past it the oldest are dropped
#: (logged and counted): memory stays bounded while JetStream is unavailable.
MAX_PENDING = 100_000
#: Seconds a message is retried (same message id, so never stored twice) before it is dropped.
RETRY_FOR = 20.0
RETRY_PAUSE = 0.25
#: Seconds between the starts of two stores of one room's events, unless ``MAX_BATCH`` events
#: of it are waiting (a busy room is never held below one full batch per store).
ROOM_INTERVAL = 0.25
#: Rooms whose last store time is remembered, beyond which the stale entries are forgotten.
ROOM_TIMES_MAX = 4096

Store = Callable[[str, bytes, str], Awaitable[asyncio.Future]]


class _Batch:
    """Events waiting in a room's queue. ``fixed`` batches are stored exactly as built (their
    message id must name the same events on every node); others may merge with their
    neighbours, under the id of the first one."""

    __slots__ = ("events", "msg_id", "fixed")

    def __init__(self, events: list[bytes], msg_id: str, fixed: bool) -> None:
        self.events = events
        self.msg_id = msg_id
        self.fixed = fixed


def _holds(q: deque[_Batch], n: int) -> bool:
    """Whether the batches in ``q`` hold at least ``n`` events (stops counting there)."""
    total = 0
    for b in q:
        total += len(b.events)
        if total >= n:
            return True
    return False


def body(events: list[bytes]) -> bytes:
    return b"[" + b",".join(events) + b"]"


def fixed_batches(room: str, events: list[tuple[str, bytes]], prefix: str) -> list[_Batch]:
    """Chunks of ``(conn, event)`` pairs, ordered by connection id, each with a message id
    derived from its content: nodes that build them from the same view get the same ids, and
    JetStream's duplicate window keeps one copy."""
    events = sorted(events)
    out = []
    for i in range(0, len(events), MAX_BATCH):
        chunk = events[i:i + MAX_BATCH]
        digest = hashlib.blake2b("\n".join(c for c, _ in chunk).encode(), digest_size=12)
        out.append(_Batch([e for _, e in chunk], f"{prefix}:{room}:{digest.hexdigest()}", True))
    return out


class EventLog:
    def __init__(self, store: Store) -> None:
        self._store = store  # NatsBackplane.store_begin: JetStream publish, ack in flight
        self._queues: dict[str, deque[_Batch]] = {}
        self._tasks: dict[str, asyncio.Task] = {}  # room -> its store loop
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._room_next: dict[str, float] = {}  # room -> when it may store again (loop time)
        self._room_times_cap = ROOM_TIMES_MAX
        self.pending = 0
        self.stored = 0  # messages
        self.stored_events = 0
        self.dropped = 0  # events

    def add(self, room: str, event: bytes, msg_id: str) -> None:
        """One event of this node; ``msg_id`` is unique to it (``<instance>:<counter>``)."""
        self._enqueue(room, [_Batch([event], msg_id, False)], 1)

    def add_fixed(self, room: str, events: list[tuple[str, bytes]], prefix: str) -> None:
        """Events every survivor of a dead node stores alike (see :func:`fixed_batches`)."""
        self._enqueue(room, fixed_batches(room, events, prefix), len(events))

    def _enqueue(self, room: str, batches: list[_Batch], n: int) -> None:
        """Queue ``batches`` (``n`` events in all) and make sure the room's store loop runs."""
        q = self._queues.get(room)
        if q is None:
            q = self._queues[room] = deque()
        q.extend(batches)
        self.pending += n
        if self.pending > MAX_PENDING:
            self._shed()
        if room not in self._tasks:
            if len(self._room_next) > self._room_times_cap:
                self._forget_room_times()
            task = asyncio.get_running_loop().create_task(self._run(room))
            self._tasks[room] = task

    def _forget_room_times(self) -> None:
        """Drop the rooms whose interval is over; the next sweep waits until the map doubles
        (amortised O(1) per event even when thousands of rooms are inside their interval)."""
        now = asyncio.get_running_loop().time()
        self._room_next = {r: t for r, t in self._room_next.items() if t > now}
        self._room_times_cap = max(ROOM_TIMES_MAX, 2 * len(self._room_next))

    def _shed(self) -> None:
        """Drop the oldest waiting batches of the longest queue until under the bound."""
        while self.pending > MAX_PENDING:
            q = max(self._queues.values(), key=len)
            b = q.popleft()
            self.pending -= len(b.events)
            self.dropped += len(b.events)
            log.warning("presence event log full: %d events dropped", len(b.events))

    def _take(self, q: deque[_Batch]) -> _Batch:
        first = q.popleft()
        if first.fixed:
            return first
        events = list(first.events)
        while q and not q[0].fixed and len(events) + len(q[0].events) <= MAX_BATCH:
            events.extend(q.popleft().events)  # not events + …: a full batch is 256 events
        return _Batch(events, first.msg_id, False)

    async def _run(self, room: str) -> None:
        q = self._queues[room]
        subject = subjects.presence_events(room)
        loop = asyncio.get_running_loop()
        try:
            while q:
                wait = self._room_next.get(room, 0.0) - loop.time()
                if wait > 0 and not _holds(q, MAX_BATCH):
                    await asyncio.sleep(wait)  # events keep merging meanwhile
                async with self._slots:  # ... and while we wait for a slot
                    if not q:
                        break
                    self._room_next[room] = loop.time() + ROOM_INTERVAL
                    batch = self._take(q)
                    self.pending -= len(batch.events)
                    await self._store_one(subject, body(batch.events), batch.msg_id,
                                          len(batch.events))
        finally:
            del self._tasks[room]
            if not q:
                del self._queues[room]

    async def _store_one(self, subject: str, data: bytes, msg_id: str, n: int) -> None:
        deadline = time.monotonic() + RETRY_FOR
        while True:
            try:
                await (await self._store(subject, data, msg_id))
                self.stored += 1
                self.stored_events += n
                return
            except (TimeoutError, AckError, nats.errors.Error, OSError) as exc:
                if time.monotonic() > deadline:
                    self.dropped += n
                    log.warning("presence events not stored (%d): %s", n, exc)
                    return
                await asyncio.sleep(RETRY_PAUSE)

    async def flush(self, seconds: float) -> bool:
        """Wait until every waiting event is stored (or dropped); False on timeout."""
        try:
            async with asyncio.timeout(seconds):
                while self._tasks:
                    await asyncio.wait(list(self._tasks.values()))
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
