"""Moves presence between nodes over NATS; the logic is in :mod:`roomcast.presence.state`.

* Each local join/leave becomes one delta on ``roomcast.presence.delta`` (core NATS) and one
  event for backends, stored in the ``PRESENCE`` stream by :mod:`roomcast.presence.eventlog`
  (batched per room under load): O(1) NATS operations, whatever the size of the room.
* Every node heartbeats its counter; a heartbeat ahead of what was applied, a gap in a
  delta's counter, or a node never seen before makes us ask that node for a snapshot.
* A node silent for ``timeout`` seconds is dead: its connections are removed, members get
  ``leave`` events, and every survivor stores the same backend leave events under the same
  message ids, so JetStream keeps each once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import nats.errors
from nats.aio.msg import Msg

from roomcast.backplane import subjects
from roomcast.errors import ConfigError
from roomcast.presence.eventlog import EventLog
from roomcast.presence.state import NO_INFO, OPS, Conn, Delta, Op, PresenceState, Transition
from roomcast.presence.wire import (
    Deltas,
    Heartbeat,
    OneDelta,
    Peer,
    Snapshot,
    Step,
    dec_delta,
    dec_hb,
    dec_snap,
    enc,
    event_bytes,
    from_wire,
)

log = logging.getLogger("roomcast.presence")

#: Seconds after which the survivors that are not first re-store a dead node's leave events
#: (deduplicated by JetStream within its 120 s window).
SAFETY_NET_DELAY = 15.0
#: Seconds a node gathers its local presence changes into one delta message: a connect storm
#: sends a few messages per interval, not one per join, and every other node decodes and
#: applies them in one callback (measured: ~170 µs of edge CPU per connect with one message
#: per event-loop iteration, bench/connects.py).
DELTA_BATCH = 0.01
#: ... and while changes keep coming, at most one delta message per this many seconds: each
#: message costs every node and the NATS servers a wakeup, a read and a write whatever it
#: holds (bench.connects: NATS CPU per connect ~20 % lower than at one per ``DELTA_BATCH``).
#: A change after a quiet spell still leaves after ``DELTA_BATCH``.
DELTA_BUSY_INTERVAL = 0.05
#: ``--presence-scope``: what each node holds (docs/presence.md).
SCOPES = ("cluster", "rooms")


@dataclass(frozen=True)
class PresenceConfig:
    """Args:
    heartbeat_interval: seconds between heartbeats.
    timeout: seconds without a heartbeat after which a node is dead; its connections are
        removed within ``timeout + heartbeat_interval`` (at most 10 s).
    list_max: a room lists its members (``joined``, ``presence_diff``) up to this many users,
        above it members get counts (``presence_count``; :mod:`roomcast.presence.feed`).
    events_max_age: seconds the backend event log is kept.
    diff_interval: seconds a room's presence changes are gathered into one frame.
    count_interval: at most one ``presence_count`` per room this often (seconds).
    scope: ``cluster`` (every node holds every room) or ``rooms`` (a node holds the rooms it
        has local members in: presence/scoped.py).
    """

    heartbeat_interval: float = 1.0
    timeout: float = 5.0
    list_max: int = 100
    events_max_age: float = 3600.0
    diff_interval: float = 0.1
    count_interval: float = 1.0
    scope: str = "cluster"

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ConfigError("presence_scope", f"must be one of {', '.join(SCOPES)}")
        if not 0 < self.diff_interval <= 5:
            raise ConfigError("presence_interval", "must be > 0 and at most 5 seconds")
        if not self.diff_interval <= self.count_interval <= 60:
            raise ConfigError("presence_count_interval",
                              "must be at least presence_interval and at most 60 seconds")
        if not 0 < self.heartbeat_interval < self.timeout:
            raise ConfigError("presence_heartbeat", "must be > 0 and below presence_timeout")
        if self.timeout + self.heartbeat_interval > 10:
            # A dead node is removed within timeout + one heartbeat interval (the reaper runs
            # once per interval): that bound stays within 10 s.
            raise ConfigError("presence_timeout",
                              "presence_timeout + presence_heartbeat must be at most 10 seconds")
        if self.list_max < 0:
            raise ConfigError("presence_list_max", "must be >= 0")


class PresenceTracker:
    #: Whether this tracker keeps only the rooms with local members (presence/scoped.py).
    scoped = False

    def __init__(self, nc, store, *, node_id: str, instance: str, config: PresenceConfig,
                 replicas: int, on_transitions: Callable[[list[Transition]], None],
                 close_conn: Callable[[str], None]) -> None:
        self.nc = nc
        self.events = EventLog(store)  # store: NatsBackplane.store_begin
        self.node_id = node_id
        self.instance = instance
        self.config = config
        self.replicas = replicas
        self.state = PresenceState(instance)
        self.peers: dict[str, Peer] = {}
        self._on_transitions = on_transitions
        self._close_conn = close_conn
        self._subs: list = []
        self._syncing: set[str] = set()
        self._outbox: list[Step] = []  # deltas of this batch, sent together
        self._evictions: list[tuple[str, bytes]] = []  # sent right after them
        self._last_sent = float("-inf")  # loop time of the last delta message
        #: How our own delta messages start (msgspec writes fields in order): ours come back
        #: from NATS too, and are dropped without decoding the batch.
        self._own_prefix = b'{"origin":' + enc.encode(instance) + b","
        self._tasks: set[asyncio.Task] = set()
        self._hb_task: asyncio.Task | None = None
        self.started_at = time.time()
        #: When we last heard our own heartbeat back from NATS: the proof that we can hear
        #: anyone. A node that cannot hear itself must not conclude its peers died.
        self._heard_self = time.monotonic()
        self._cut_off = False
        self._beat = 0
        self._warned: set[str] = set()
        #: Connection-level changes from other nodes applied here (the metrics' figure of
        #: what presence costs this node, bench.clustersize).
        self.deltas_received = 0

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        # The PRESENCE stream is verified (or created) by the backplane with the node's other
        # streams (roomcast.backplane.streams), before this starts.
        nc = self.nc
        # Deltas and heartbeats come from every node all the time: they skip nats-py's
        # per-message Msg, queue and task (the seam's direct handlers, with its exception
        # barrier); that machinery was most of the ~85 µs a node paid per delta.
        deltas = await nc.subscribe(subjects.PRESENCE_DELTA)
        nc.direct(deltas, self._on_delta)
        beats = await nc.subscribe(subjects.PRESENCE_HEARTBEAT)
        nc.direct(beats, self._on_heartbeat)
        self._subs = [
            deltas, beats,
            await nc.subscribe(subjects.PRESENCE_HELLO, cb=self._on_sync_request),
            await nc.subscribe(subjects.presence_sync(self.instance), cb=self._on_sync_request),
            await nc.subscribe(subjects.presence_evict(self.instance), cb=self._on_evict),
        ]
        await nc.flush()
        await self._hello()
        self._hb_task = asyncio.get_running_loop().create_task(self._heartbeats())

    async def close(self, flush_seconds: float = 5.0) -> None:
        """Stop; first store the events still waiting (a drained node's leaves)."""
        if not await self.events.flush(flush_seconds):
            log.warning("presence events still waiting at shutdown: %d", self.events.pending)
        self.events.close()
        if self._hb_task:
            self._hb_task.cancel()
        for t in list(self._tasks):
            t.cancel()
        for sub in self._subs:
            self.nc.undirect(sub)
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                pass

    async def _hello(self) -> None:
        """Learn every live node's connections before serving (scatter-gather)."""
        inbox = self.nc.new_inbox()
        replies: list[Msg] = []

        async def collect(m: Msg) -> None:
            replies.append(m)

        sub = await self.nc.subscribe(inbox, cb=collect)
        await self.nc.publish(subjects.PRESENCE_HELLO, b"", reply=inbox)
        await asyncio.sleep(min(0.5, self.config.heartbeat_interval))
        await sub.unsubscribe()
        for m in replies:
            self._apply_snapshot(m.data)

    # -- local changes -----------------------------------------------------------------

    def track(self, room: str, conn_id: str, user: str, info: dict) -> None:
        c = Conn(room, conn_id, user, self.instance, int(time.time() * 1000), info or NO_INFO)
        delta, trans = self.state.track(c)
        self._emit(delta, trans)

    def untrack(self, room: str, conn_id: str) -> None:
        out = self.state.untrack(room, conn_id)
        if out is not None:
            self._emit(*out)

    def evict_elsewhere(self, old_conn: str) -> None:
        """A session resumed here: ask the node still holding its old connection to close it."""
        origin = self.state.origin_of(old_conn)
        if origin is None:
            # Not in a room held here (room-scoped presence holds only its rooms): a
            # connection id starts with its node's instance.
            candidate = old_conn.rpartition(".")[0]
            origin = candidate if candidate in self.peers else None
        if origin is not None and origin != self.instance:
            # Sent after this batch's deltas, which carry the new connection (same NATS
            # connection, in order): nodes see the user's new connection before the old
            # node's leave of the old one. In a resume storm the deltas stay one message.
            if not self._outbox and not self._evictions:
                self._schedule_send()
            self._evictions.append((subjects.presence_evict(origin), old_conn.encode()))
        elif origin == self.instance:
            self._close_conn(old_conn)

    def room_ready(self, room: str) -> asyncio.Future | None:
        """What a join must wait for before the room's member list is right (None: nothing;
        this tracker holds every room)."""
        return None

    def _schedule_send(self) -> None:
        """The first change of a batch: send it after ``DELTA_BATCH``, and no sooner than
        ``DELTA_BUSY_INTERVAL`` after the previous message."""
        loop = asyncio.get_running_loop()
        loop.call_later(max(DELTA_BATCH, self._last_sent + DELTA_BUSY_INTERVAL - loop.time()),
                        self._send_deltas)

    def _emit(self, delta: Delta, trans: list[Transition]) -> None:
        if not self._outbox and not self._evictions:
            self._schedule_send()
        self._outbox.append(Step(delta.counter, delta.op.value, delta.conn))
        # A local change makes at most one transition, of its own connection.
        first = bool(trans) and delta.op is Op.JOIN
        last = bool(trans) and delta.op is Op.LEAVE
        self.events.add(delta.conn.room, event_bytes(delta.op, delta.conn, first, last, "client"),
                        f"{self.instance}:{delta.counter}")
        if trans:
            self._on_transitions(trans)

    def _send_deltas(self) -> None:
        """This batch's deltas in one message (one alone keeps the single form, which
        nodes before batching understand too), then the evictions of this batch."""
        steps, self._outbox = self._outbox, []
        evictions, self._evictions = self._evictions, []
        if steps:
            self._last_sent = asyncio.get_running_loop().time()
            if len(steps) == 1:
                s = steps[0]
                payload = enc.encode(OneDelta(self.instance, s.counter, s.op, s.conn))
            else:
                payload = enc.encode(Deltas(self.instance, steps))
            self._spawn(self._publish(subjects.PRESENCE_DELTA, payload))
        for subject, conn in evictions:
            self._spawn(self._publish(subject, conn))

    async def _publish(self, subject: str, payload: bytes) -> None:
        try:
            await self.nc.publish(subject, payload)
        except nats.errors.Error as exc:  # reconnecting: receivers resync from snapshots
            log.debug("presence publish failed: %s", exc)

    # -- remote changes ----------------------------------------------------------------

    def _on_delta(self, subject: bytes, headers: bytes | None, data: bytes) -> None:
        if data.startswith(self._own_prefix):
            return
        d = dec_delta.decode(data)
        if d.origin == self.instance:
            return
        steps = d.deltas if d.deltas is not None else [Step(d.counter, d.op, d.conn)]
        self.deltas_received += len(steps)
        out: list[Transition] = []
        for step in steps:
            trans, need_sync = self.state.apply_delta(Delta(d.origin, step.counter, OPS[step.op],
                                                            from_wire(step.conn)))
            if need_sync:
                self._request_snapshot(d.origin)
                break
            out += trans
        if out:
            self._on_transitions(out)

    def _heard_own(self) -> None:
        self._heard_self = now = time.monotonic()
        if self._cut_off:
            # We could hear nobody for a while: every peer gets a fresh timeout from now
            # and is re-synced; those that really died go silent again and are removed.
            self._cut_off = False
            log.warning("presence: hearing NATS again; re-syncing %d nodes", len(self.peers))
            for peer in self.peers.values():
                peer.last_seen = now
            self.resync_all()

    def _check_scope(self, hb: Heartbeat) -> None:
        """Nodes of one cluster must agree on ``--presence-scope``: said once per node."""
        if hb.scope != self.config.scope and hb.origin not in self._warned:
            self._warned.add(hb.origin)
            log.error("presence: node %s runs --presence-scope %s, this node %s: presence "
                      "is wrong until every node uses the same scope", hb.node, hb.scope,
                      self.config.scope)

    def _on_heartbeat(self, subject: bytes, headers: bytes | None, data: bytes) -> None:
        hb = dec_hb.decode(data)
        if hb.origin == self.instance:
            self._heard_own()
            return
        peer = self.peers.get(hb.origin)
        if peer is None:
            self._check_scope(hb)
            self.peers[hb.origin] = Peer(hb.node, time.monotonic(), hb.counter, hb.conns)
            self._request_snapshot(hb.origin)
            return
        peer.last_seen, peer.counter, peer.conns = time.monotonic(), hb.counter, hb.conns
        # Deltas and heartbeats of one node arrive in the order it sent them: a heartbeat
        # ahead of what we applied means a delta was lost.
        applied = self.state._origins.get(hb.origin)
        if applied is None or not applied.synced or applied.counter < hb.counter:
            self._request_snapshot(hb.origin)

    def _request_snapshot(self, origin: str) -> None:
        if origin in self._syncing:
            return
        self._syncing.add(origin)
        self._spawn(self._snapshot(origin))

    async def _snapshot(self, origin: str) -> None:
        try:
            msg = await self.nc.request(subjects.presence_sync(origin), b"", timeout=2.0)
            self._apply_snapshot(msg.data)
        except (TimeoutError, nats.errors.Error) as exc:
            log.info("presence snapshot from %s failed: %s", origin, exc)
        finally:
            self._syncing.discard(origin)

    def _apply_snapshot(self, data: bytes) -> None:
        snap = dec_snap.decode(data)
        if snap.origin == self.instance:
            return
        self.peers.setdefault(snap.origin, Peer(snap.node, time.monotonic(), snap.counter,
                                                 len(snap.conns)))
        trans = self.state.apply_snapshot(snap.origin, snap.counter,
                                          [from_wire(c) for c in snap.conns])
        if trans:
            self._on_transitions(trans)

    async def _on_sync_request(self, msg: Msg) -> None:
        if not msg.reply:
            return
        snap = Snapshot(self.instance, self.node_id, self.state.counter,
                         self.state.snapshot_of(self.instance))
        await msg.respond(enc.encode(snap))

    async def _on_evict(self, msg: Msg) -> None:
        self._close_conn(msg.data.decode())

    def resync_all(self) -> None:
        """After our own NATS reconnect: we may have missed deltas from anyone."""
        for origin in list(self.peers):
            self.state.forget_origin_sync(origin)
            self._request_snapshot(origin)

    # -- liveness ----------------------------------------------------------------------

    async def _heartbeats(self) -> None:
        interval = self.config.heartbeat_interval
        while True:
            # Deltas and heartbeats must leave in the order they were made (a heartbeat ahead of
            # the deltas it counts looks like a lost delta): both go through _spawn, whose
            # tasks start in creation order, this batch's deltas first.
            self._send_deltas()
            self._beat += 1
            hb = Heartbeat(self.instance, self.node_id, self.state.counter,
                            self.state.nodes().get(self.instance, 0), self._beat,
                            self.config.scope)
            self._spawn(self._publish(subjects.PRESENCE_HEARTBEAT, enc.encode(hb)))
            self._reap()
            self._housekeeping()
            await asyncio.sleep(interval)

    def _housekeeping(self) -> None:
        """Once per heartbeat (room-scoped presence: resends, expiries)."""

    def _cut_off_now(self, now: float) -> bool:
        """Whether we cannot hear NATS: disconnected, or our own heartbeat has not come back
        for two intervals (it goes out every interval)."""
        deaf = (not self.nc.is_connected
                or now - self._heard_self > 2 * self.config.heartbeat_interval + 0.5)
        if deaf and not self._cut_off:
            self._cut_off = True
            log.warning("presence: cannot hear NATS (own heartbeat silent %.1fs); no node is "
                        "declared dead until it can", now - self._heard_self)
        return self._cut_off

    def _reap(self) -> None:
        now = time.monotonic()
        if self._cut_off_now(now):
            return
        for origin, peer in list(self.peers.items()):
            if now - peer.last_seen <= self.config.timeout:
                continue
            del self.peers[origin]
            gone = self.state.snapshot_of(origin)
            trans = self.state.purge_node(origin)
            log.warning("node %s (%s) silent for %.1fs: removed %d connections", peer.node,
                        origin, now - peer.last_seen, len(gone))
            # Every survivor stores the dead node's leave events under the same message ids
            # (JetStream keeps one of each). The first survivor in instance order does it now;
            # the others only later, as a safety net in case it died too, so a crash does not
            # multiply the load on JetStream while clients are resuming.
            first = min([self.instance, *self.peers]) == self.instance
            self._node_died(origin, gone, trans, 0.0 if first else SAFETY_NET_DELAY)
            if trans:
                self._on_transitions(trans)

    def _node_died(self, origin: str, gone: list[Conn], trans: list[Transition],
                   delay: float) -> None:
        """Store the backend leave events of a dead node's connections after ``delay``."""
        left_users = {(t.room, t.user) for t in trans}
        events = [(c, (c.room, c.user) in left_users) for c in gone]
        self._spawn(self._store_down_events(events, delay))

    async def _store_down_events(self, events: list[tuple[Conn, bool]], delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        by_room: dict[str, list[tuple[str, bytes]]] = {}
        for c, last in events:
            by_room.setdefault(c.room, []).append(
                (c.conn, event_bytes(Op.LEAVE, c, False, last, "node_down")))
        for room, evs in by_room.items():
            self.events.add_fixed(room, evs, "down")

    def live_nodes(self) -> dict[str, dict]:
        now = time.monotonic()
        out = {self.instance: {"node": self.node_id,
                               "connections": self.state.nodes().get(self.instance, 0),
                               "last_seen_ms": 0, "self": True}}
        counts = self.state.nodes()
        for origin, p in self.peers.items():
            out[origin] = {"node": p.node, "connections": counts.get(origin, 0),
                           "last_seen_ms": int((now - p.last_seen) * 1000), "self": False}
        return out

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

