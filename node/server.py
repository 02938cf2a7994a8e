"""The edge node: a websockets server on uvloop, JWT auth at the handshake, HTTP endpoints.

The public port serves ``/ws`` (the roomcast protocol, ``docs/protocol.md``), the browser
client and its demo page. ``/healthz``, ``/readyz`` and ``/metrics`` are served on the internal
port only (``--internal-port``), which no Ingress routes to; readiness is a read of local state
kept fresh by a background check (``docs/deploy.md``).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import random
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import replace

from roomcast import protocol as p
from roomcast.auth import Identity, verify_token
from roomcast.backplane import streams, subjects
from roomcast.backplane.base import Backplane
from roomcast.backplane.nats import NatsBackplane
from roomcast.config import NodeConfig
from roomcast.errors import ConfigError
from roomcast.jwks import JwksKeys
from roomcast.namespaces import single
from roomcast.node import handshake, internal, sweeps
from roomcast.node.api import ServerApi
from roomcast.node.connection import Connection, wait_all
from roomcast.node.control import Control
from roomcast.node.handover import Handover
from roomcast.node.handshake import WS_PATH
from roomcast.node.internal import ApiKeys, InternalServer
from roomcast.node.lean import tune_gc
from roomcast.node.metrics import NodeMetrics, probe_loop_lag
from roomcast.node.peer import Peer, PeerLimits
from roomcast.node.presence_out import PresenceOut
from roomcast.node.readiness import Readiness
from roomcast.node.replaycache import ReplayCache
from roomcast.node.rooms import RoomRegistry
from roomcast.node.wsconn import WsConnection
from roomcast.node.wsserver import WsServer
from roomcast.presence.admin import AdminService
from roomcast.presence.feed import FeedOptions, PresenceFeed
from roomcast.presence.scoped import ScopedTracker
from roomcast.presence.tracker import PresenceTracker
from roomcast.protocol import CloseCode
from roomcast.resume import ResumeSigner

log = logging.getLogger("roomcast.node")

#: Seconds a drain may run past its deadline: the steps that end by force (aborting clients
#: that never answered the close, closing NATS) are given this much, no more.
FORCED_STOP_SECONDS = 2.0
CLOSE_TIMEOUT = 3.0  # seconds a client gets to answer our close frame


class Deadline:
    """A point in (monotonic) time; steps of a shutdown are handed what is left of it."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def left(self, *, signed: bool = False) -> float:
        left = self.at - time.monotonic()
        return left if signed else max(0.0, left)


class Node:
    """One edge node. ``async with Node(config) as node:`` serves until the block exits."""

    def __init__(self, config: NodeConfig, backplane: Backplane | None = None) -> None:
        self.config = config
        self.metrics = NodeMetrics(config.node_id)
        self.backplane = backplane or NatsBackplane(config.nats)
        #: Where rooms are stored and which options they have (docs/namespaces.md).
        self.layout = (self.backplane.layout if isinstance(self.backplane, NatsBackplane)
                       else config.nats.layout())
        self.namespaces = self.layout.namespaces
        if config.nats.namespaces is None and config.presence is not None:
            # No namespaces file: every room lists members up to --presence-list-max.
            self.namespaces = single(replace(self.namespaces.defaults,
                                             member_list_max=config.presence.list_max))
        if isinstance(self.backplane, NatsBackplane):
            self.backplane.on_state_change = self._nats_state
            self.backplane.on_epoch_change = self._epoch_changed
            nats = config.nats
            wanted = streams.wanted_streams(
                replicas=nats.replicas, history_per_room=nats.history_per_room,
                history_max_age=nats.history_max_age, duplicate_window=nats.duplicate_window,
                events_max_age=(config.presence.events_max_age if config.presence else 3600.0),
                rooms_stream=nats.stream, layout=self.layout)
            if config.presence is None:
                wanted = [s for s in wanted if s.name != subjects.PRESENCE_EVENTS_STREAM]
            if config.presence is None or config.presence.scope != "rooms":
                wanted = [s for s in wanted if s.name != subjects.PRESENCE_STATE_STREAM]
            self.backplane.require_streams(wanted)
        self.rooms = RoomRegistry(self.backplane, self.metrics,
                                  history_page=config.history_page,
                                  history_per_room=config.nats.history_per_room,
                                  request_flush=self._schedule_flush,
                                  cache=ReplayCache(total_bytes=config.replay_cache_bytes),
                                  history_for=lambda room: self.namespaces.of(room).kept_per_room)
        self.metrics.watch_replay_cache(self.rooms.cache)
        backend_only = (None if all(ns.publish == "clients" for ns in self.namespaces.all())
                        else lambda room: self.namespaces.of(room).publish == "backend")
        self.limits = PeerLimits(config.max_rooms_per_connection, config.rate_limit,
                                 config.rate_burst, config.flood_close_after, backend_only)
        self.resume = ResumeSigner(config.effective_resume_keys(), config.resume_ttl)
        self.instance = f"{config.node_id}.{secrets.token_hex(2)}"
        self.presence: PresenceTracker | None = None
        self.presence_out: PresenceOut | None = None
        self._feed_opts: dict[str, FeedOptions] = {}  # namespace name -> the feed's options
        self._admin: AdminService | None = None
        self._api: ServerApi | None = None
        self.control: Control | None = None
        #: called by :meth:`request_drain` (run_node: the same as SIGTERM); None: drain here
        self.on_drain_request: Callable[[], None] | None = None
        auth = config.auth
        self._jwks = (JwksKeys(auth.jwks_url, lifespan=auth.jwks_refresh,
                               min_refetch=auth.jwks_min_refetch) if auth.jwks_url else None)
        self.connections: dict[Connection, None] = {}
        self.metrics.watch_connections(self.connections)
        self.by_conn_id: dict[str, Connection] = {}
        self._dirty: list[Connection] = []
        self._flush_scheduled = False
        self._keepalive_task: asyncio.Task | None = None
        self._expiry_task: asyncio.Task | None = None
        self._lag_task: asyncio.Task | None = None
        self._readiness = Readiness(self)
        self.draining = False
        self._server: WsServer | None = None
        self._internal: InternalServer | None = None
        self._port = config.port
        self._internal_port = config.internal_port
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task] = set()
        #: Publishes awaiting their ack and their retry tasks: a drain waits for them.
        self.inflight: set[asyncio.Future] = set()
        #: Connections a drain closed whose presence stays until they resume elsewhere.
        self.handover = Handover()

    # -- lifecycle -------------------------------------------------------------------

    def _nats_state(self, up: bool) -> None:
        self.metrics.nats_connected.set(int(up))
        if up and self.presence is not None:
            self.presence.resync_all()  # deltas may have been lost while disconnected
        if up and self.control is not None:
            self.spawn(self.control.load_bans())  # bans broadcast meanwhile were missed

    async def start(self) -> None:
        if self._jwks is not None:
            await self._jwks.start()  # refuses to start without keys (one clear line)
        await self.backplane.start()
        if isinstance(self.backplane, NatsBackplane):
            self.metrics.watch_nats_client(self.backplane.nc)
        cfg = self.config
        if cfg.presence is not None and isinstance(self.backplane, NatsBackplane):
            kwargs = dict(node_id=cfg.node_id, instance=self.instance, config=cfg.presence,
                          replicas=cfg.nats.replicas, on_transitions=self._on_presence,
                          close_conn=self._close_resumed)
            self.presence = (
                ScopedTracker(self.backplane.nc, self.backplane.store_begin,
                              self.backplane, **kwargs)
                if cfg.presence.scope == "rooms"
                else PresenceTracker(self.backplane.nc, self.backplane.store_begin, **kwargs))
            pc = cfg.presence
            self.presence_out = PresenceOut(PresenceFeed(
                self.presence.state, interval=pc.diff_interval, count_interval=pc.count_interval,
                options_for=self._feed_options), self.rooms)
            await self.presence.start()
            self.handover.presence = self.presence
            self.metrics.watch_event_log(self.presence.events)
            self.metrics.watch_presence(self.presence)
            self._admin = AdminService(self.backplane.nc, self.presence)
            await self._admin.start()
        if isinstance(self.backplane, NatsBackplane):
            self.control = Control(self.backplane.nc, self)
            await self.control.start()
            self._api = ServerApi(self.backplane.nc, self)
            await self._api.start()
        try:
            await self._listen()
        except OSError as exc:  # a busy port: one line for the operator, nothing left running
            await self._abort_start()
            raise ConfigError("port", f"cannot listen: {exc.strerror or exc} "
                              f"({cfg.host}:{cfg.port} or internal {cfg.internal_host or cfg.host}"
                              f":{cfg.internal_port})") from None
        if isinstance(self.backplane, NatsBackplane):
            self._readiness.start()
        if cfg.ping_interval:
            self._keepalive_task = self.spawn(
                self._keepalive(cfg.ping_interval, cfg.ping_timeout or cfg.ping_interval))
        self._expiry_task = self.spawn(sweeps.expire_tokens(self))
        self._lag_task = self.spawn(probe_loop_lag(self.metrics.loop_lag))
        log.info("node listening", extra={"port": self._port, "ws_path": WS_PATH,
                                          "internal_port": self._internal_port})

    async def _abort_start(self) -> None:
        if self._server is not None:
            self._server.close()
        for part in (self._api, self.control, self._admin):
            if part is not None:
                await part.close()
        if self.presence is not None:
            await self.presence.close(flush_seconds=0.5)
        await self.backplane.close(within=1.0)

    async def _listen(self) -> None:
        cfg = self.config
        self._server = WsServer(
            self._handle,
            functools.partial(handshake.process_request, self),  # (a coroutine less)
            max_size=cfg.max_frame,
            compression=cfg.compression,
            close_timeout=CLOSE_TIMEOUT,
            server_header="roomcast",
        )
        # A reconnect storm sends thousands of connects at once; with the default backlog
        # (100) the kernel drops SYNs and clients wait out TCP's 1-3-7-15 s retries.
        await self._server.start(cfg.host, cfg.port, backlog=cfg.listen_backlog)
        self._port = self._server.sockets[0].getsockname()[1]
        self._internal = InternalServer(functools.partial(internal.answer_get, self),
                                        functools.partial(internal.answer_post, self),
                                        ApiKeys(cfg.api_key_file), max_body=cfg.max_frame + 4096)
        self._internal_port = await self._internal.start(cfg.internal_host or cfg.host,
                                                         cfg.internal_port)

    @property
    def port(self) -> int:
        """The public port the node listens (or listened) on."""
        return self._port

    @property
    def internal_port(self) -> int:
        """The port of ``/healthz``, ``/readyz`` and ``/metrics``."""
        return self._internal_port

    async def stop(self) -> None:
        """Drain: refuse new connections, close clients, finish in-flight publishes.

        One deadline, ``drain_window + drain_timeout`` from now, bounds the whole drain: the
        paced closes take the window, and every later step (in-flight publishes, the presence
        hand-over, closing handshakes, tasks, the presence event flush, the NATS drain) gets
        only the time left, then is cut short. Worst case: that deadline plus
        ``FORCED_STOP_SECONDS`` for the steps that finish by force (``docs/deploy.md``)."""
        if self.draining:
            return
        cfg = self.config
        deadline = Deadline(cfg.drain_window + cfg.drain_timeout)
        self.draining = True
        self.metrics.draining.set(1)
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
        if self._expiry_task is not None:
            self._expiry_task.cancel()
        if self._lag_task is not None:
            self._lag_task.cancel()
        self._readiness.stop()
        log.info("draining", extra={"connections": len(self.connections)})
        # Keep listening while draining: /readyz answers 503 "draining", /metrics shows the
        # drain, and new upgrades get 503 (node/handshake.py). The listener closes last.
        await self._close_paced(cfg.drain_window, deadline)
        await self._wait(self.inflight, deadline.left())
        await self.handover.finish(deadline.left())
        if self._server is not None:
            self._server.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(),
                                       min(CLOSE_TIMEOUT + 1, deadline.left()))
            except TimeoutError:
                # Clients that never answered the closing handshake: drop them.
                for conn in list(self.connections):
                    conn.ws.transport.abort()
                try:
                    await asyncio.wait_for(self._server.wait_closed(), FORCED_STOP_SECONDS / 2)
                except TimeoutError:
                    log.warning("connections still open at the drain deadline: %d",
                                len(self.connections))
        await self._wait(self._tasks, deadline.left())
        await self.rooms.close()
        if self._admin is not None:
            await self._admin.close()
        if self._api is not None:
            await self._api.close()
        if self.control is not None:
            await self.control.close()
        if self.presence is not None:
            await asyncio.sleep(0.05)  # let the last leave deltas go out
            if self.presence_out is not None:
                self.presence_out.close()
            await self.presence.close(flush_seconds=deadline.left())
        await self.backplane.close(within=max(0.1, deadline.left()))
        if self._internal is not None:
            self._internal.close()
        log.info("stopped", extra={"over_deadline_s": round(-deadline.left(signed=True), 3)})

    async def _close_paced(self, window: float, deadline: Deadline) -> None:
        """Close every client with a ``reconnect`` frame, spread evenly over ``window``."""
        conns = list(self.connections)
        if not conns:
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        closing = []
        for i, conn in enumerate(conns):
            delay = start + window * i / len(conns) - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            closing.append(self.spawn(conn.drain_close(random.randint(0, 250), deadline)))
        await self._wait(set(closing), deadline.left())

    @staticmethod
    async def _wait(tasks: set[asyncio.Future], seconds: float) -> None:
        await wait_all(tasks, seconds)

    # -- presence --------------------------------------------------------------------

    def _on_presence(self, transitions) -> None:
        if self.presence_out is not None:
            self.presence_out.on_transitions(transitions)

    def _close_resumed(self, conn_id: str) -> None:
        conn = self.by_conn_id.get(conn_id)
        if conn is not None:
            conn.leave_presence()  # now, not after a closing handshake that may never come
            conn.close(CloseCode.SESSION_RESUMED, "session resumed elsewhere")
            return
        self.handover.release(conn_id)  # one our drain closed, resumed elsewhere

    def hand_over(self, conn: Connection) -> None:
        """A connection we closed on purpose keeps its presence until it resumes elsewhere
        (``node/handover.py``)."""
        if not self.handover.keep(conn.peer.conn_id, tuple(conn.peer.rooms),
                                  expire=not self.draining):
            conn.leave_presence()

    def _feed_options(self, room: str) -> FeedOptions:
        ns = self.namespaces.of(room)
        options = self._feed_opts.get(ns.name)
        if options is None:
            options = self._feed_opts[ns.name] = FeedOptions(
                threshold=ns.member_list_max, events=ns.presence_events if ns.presence else "off")
        return options

    def tracks_presence(self, room: str) -> bool:
        """Whether joins of ``room`` are tracked in presence (on, and its namespace's option)."""
        return self.presence is not None and self.namespaces.of(room).presence

    def presence_summary(self, room: str) -> dict | None:
        """The ``presence`` of ``joined``/``resumed``/``welcome.rooms`` (§4.2)."""
        if self.presence_out is None or not self.namespaces.of(room).presence:
            return None
        return self.presence_out.feed.summary(room)

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _keepalive(self, interval: float, silence: float, **kw) -> None:
        await sweeps.keepalive(self, interval, silence, **kw)

    def mark_dirty(self, conn: Connection) -> None:
        """``conn`` queued frames this iteration: flush every such connection at its end."""
        self._dirty.append(conn)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Once per loop iteration with output: each connection's own frames first (replies,
        replays), then each room's frames, joined once and written to every member."""
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()
        self.rooms.flush()

    def spawn(self, coro, *, inflight: bool = False) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        group = self.inflight if inflight else self._tasks
        group.add(task)
        task.add_done_callback(group.discard)
        return task

    # -- HTTP and handshake ----------------------------------------------------------

    def stats(self) -> dict:
        """What the operator console shows per node (counters; it computes the rates)."""
        m = self.metrics
        return {"id": self.config.node_id, "connections": len(self.connections),
                "rooms": len(self.rooms.rooms),
                "delivered": m.delivered.value, "received": m.received.value,
                "lag_sum": m.loop_lag.sum, "lag_count": sum(m.loop_lag.counts),
                "draining": self.draining, "nats": self.backplane.connected}

    def request_drain(self) -> None:
        """An operator asked this node to drain (the console): as SIGTERM would."""
        if self.on_drain_request is not None:
            self.on_drain_request()
        else:
            self.spawn(self.stop())

    def _epoch_changed(self, epoch: str, stream: str) -> None:
        """A rooms stream was deleted and created again: the positions of its rooms are from
        the old incarnation. Those rooms forget theirs (new messages are not dropped as
        duplicates of old ones) and every client in one of them is sent to resume, which
        answers ``recovered: false`` for them (their stream's part of the epoch changed,
        docs/protocol.md §2.2); rooms of the other streams are left alone."""
        if len(self.layout.streams) == 1:
            def affected(room: str) -> bool:
                return True
        else:
            def affected(room: str) -> bool:
                return self.layout.place(room).stream == stream
        self.rooms.reset_positions(affected)
        for conn in list(self.connections):
            if any(affected(room) for room in conn.peer.rooms):
                self.spawn(conn.drain_close(random.randint(0, 250), reason="stream recreated"))

    async def authenticate(self, token: str | None) -> Identity:
        """Verify a client's JWT (at the handshake and for ``refresh``).

        Raises:
            AuthError: with a reason safe to show to the client.
        """
        identity = self.authenticate_now(token)
        if identity is None:  # the key comes from the JWKS (fetched if not known yet)
            identity = verify_token(token, self.config.auth, key=await self._jwks.key_for(token))
        return identity

    def authenticate_now(self, token: str | None) -> Identity | None:
        """:meth:`authenticate` without awaiting when no JWKS is involved (the usual case: one
        coroutine less per handshake); None when it needs the JWKS (then await that)."""
        if self._jwks is not None and token:
            return None
        return verify_token(token, self.config.auth)

    async def readiness(self) -> tuple[bool, str]:
        """Local state only, no network call (probes must be cheap): ``node/readiness.py``."""
        return self._readiness.answer()

    async def _handle(self, ws: WsConnection) -> None:
        refusal = ws.refusal
        if refusal is not None:
            await ws.close(int(refusal[0]), refusal[1][:120])
            return
        identity, ws.identity = ws.identity, None
        # The handshake is over: do not keep its headers (and the token in its path) alive for
        # the life of the connection (docs/performance.md).
        ws.forget_request(WS_PATH)
        conn_id = f"{self.instance}.{next(self._ids)}"
        peer = Peer(identity, conn_id, self.limits, asyncio.get_running_loop().time())
        conn = Connection(ws, peer, self)
        self.connections[conn] = None
        self.by_conn_id[conn_id] = conn
        try:
            rooms = await conn.join_token_rooms() if identity.rooms else None
            conn.send_frame(p.welcome(node=self.config.node_id, conn=conn_id, user=identity.user,
                                      epoch=self.backplane.epoch, max_frame=self.config.max_frame,
                                      ping_interval=self.config.ping_interval,
                                      resume_token=conn.resume_token(),
                                      exp=identity.expires_at, rooms=rooms))
            if rooms is not None:
                conn.release_held()
            await conn.run()
        finally:
            del self.connections[conn]
            self.by_conn_id.pop(conn_id, None)


async def run_node(config: NodeConfig) -> int:
    """Serve until SIGTERM/SIGINT, then drain and return the exit code (0)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    node = Node(config)
    node.on_drain_request = stop.set
    await node.start()
    tune_gc()
    print(f"roomcast node {config.node_id} ready on ws://{config.host}:{node.port}{WS_PATH}",
          flush=True)
    await stop.wait()
    t0 = time.monotonic()
    await node.stop()
    log.info("drained", extra={"seconds": round(time.monotonic() - t0, 3)})
    return 0
