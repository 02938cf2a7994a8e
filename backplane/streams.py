"""The JetStream streams roomcast needs, compared with what the cluster has (docs/deploy.md).

Streams are provisioned, not rewritten by whoever starts: ``roomcast streams apply`` creates or
updates them (a change that loses redundancy or history needs ``--yes``), ``roomcast streams
check`` compares. A node only *verifies* them — at start, on every NATS reconnect and in its
background check — and, when they differ, stays unready and logs which setting differs and how
to fix it. By default a node creates a stream that does not exist yet (so ``roomcast node``
against a fresh local NATS just works); ``--streams verify`` turns that off for production.

The pure part (:func:`wanted_streams`, :func:`differences`) has no I/O.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js.api import DiscardPolicy, RePublish, StorageType, StreamConfig

from roomcast.backplane import subjects
from roomcast.errors import BackplaneError

#: Settings compared between the wanted and the existing streams.
COMPARED = ("subjects", "num_replicas", "max_msgs_per_subject", "max_age", "duplicate_window",
            "allow_direct", "republish", "storage")

STREAMS_MODES = ("create-missing", "verify")


def wanted_streams(*, replicas: int, history_per_room: int, history_max_age: float,
                   duplicate_window: float = 120.0, events_max_age: float = 3600.0,
                   rooms_stream: str = subjects.STREAM, layout=None) -> list[StreamConfig]:
    """The rooms' streams (``ROOMS``, or those of ``layout``: one per namespace and partition,
    :mod:`roomcast.backplane.layout`), then ``PRESENCE``, ``KV_ROOMCAST_BANS`` (the key-value
    bucket of the server API's bans, ``docs/api.md``) and ``PRESENCE_STATE`` (room-scoped
    presence entries, used with ``--presence-scope rooms``)."""
    from roomcast.backplane.layout import Layout

    if layout is None:
        layout = Layout.default(history_per_room, history_max_age, rooms_stream=rooms_stream)
    return [
        *layout.stream_configs(replicas=replicas, duplicate_window=duplicate_window),
        StreamConfig(
            name=subjects.PRESENCE_EVENTS_STREAM, subjects=[subjects.PRESENCE_EVENTS_PREFIX + ">"],
            storage=StorageType.FILE, num_replicas=replicas, max_age=events_max_age,
            duplicate_window=120.0, discard=DiscardPolicy.OLD, allow_direct=True,
            republish=RePublish(src=subjects.PRESENCE_EVENTS_PREFIX + ">",
                                dest=subjects.PRESENCE_EVENTS_LIVE + ">")),
        StreamConfig(  # the stream of a JetStream key-value bucket, as nats-py creates one
            name="KV_" + subjects.BANS_BUCKET, subjects=[f"$KV.{subjects.BANS_BUCKET}.>"],
            storage=StorageType.FILE, num_replicas=replicas, max_msgs_per_subject=1,
            max_age=subjects.BANS_MAX_AGE, duplicate_window=120.0, discard=DiscardPolicy.NEW,
            allow_direct=True, allow_rollup_hdrs=True, deny_delete=True),
        StreamConfig(  # room-scoped presence entries (docs/presence.md), the last of each kept
            name=subjects.PRESENCE_STATE_STREAM, subjects=[subjects.PRESENCE_STATE_PREFIX + ">"],
            storage=StorageType.FILE, num_replicas=replicas, max_msgs_per_subject=1,
            duplicate_window=120.0, discard=DiscardPolicy.OLD, allow_direct=True,
            allow_msg_ttl=True),
    ]


@dataclass(frozen=True)
class Difference:
    stream: str
    setting: str
    current: object
    wanted: object
    lossy: bool  # applying it loses redundancy or history

    def __str__(self) -> str:
        loses = " (loses redundancy or history)" if self.lossy else ""
        return f"{self.stream}.{self.setting}: {_show(self.current)} -> {_show(self.wanted)}{loses}"


def _show(value: object) -> str:
    if isinstance(value, RePublish):
        return f"{value.src}->{value.dest}"
    if hasattr(value, "value"):
        return str(value.value)
    return repr(value)


def _norm(setting: str, value: object) -> object:
    if setting == "republish" and value is not None:
        return (value.src, value.dest, bool(value.headers_only))
    if setting in ("max_age", "duplicate_window"):
        return float(value or 0)
    if setting == "max_msgs_per_subject":
        return int(value if value is not None else -1)
    if setting == "storage" and value is not None:
        return getattr(value, "value", value)
    if setting == "allow_direct":
        return bool(value)
    return value


def _lossy(setting: str, current: object, wanted: object) -> bool:
    if setting == "num_replicas":
        return (wanted or 1) < (current or 1)
    if setting == "max_msgs_per_subject":  # -1 / 0: unlimited
        return (current or -1) <= 0 < (wanted or -1) or 0 < (wanted or -1) < (current or -1)
    if setting == "max_age":  # 0: unlimited
        return (not current and wanted) or bool(current and wanted and wanted < current)
    return setting in ("subjects", "storage")


def differences(current: StreamConfig, wanted: StreamConfig) -> list[Difference]:
    """What would change if ``current`` were brought to ``wanted``."""
    out = []
    for setting in COMPARED:
        have, want = getattr(current, setting), getattr(wanted, setting)
        if _norm(setting, have) != _norm(setting, want):
            out.append(Difference(wanted.name, setting, have, want,
                                  bool(_lossy(setting, _norm(setting, have),
                                              _norm(setting, want)))))
    return out


def epoch_of(info) -> str:
    """The incarnation of a stream: a new one after it was deleted and created again."""
    created = getattr(info, "created", None)
    return hashlib.sha256(str(created).encode()).hexdigest()[:12]


@dataclass
class StreamState:
    name: str
    missing: bool = False
    differences: tuple[Difference, ...] = ()
    info: object = None

    @property
    def ok(self) -> bool:
        return not self.missing and not self.differences


async def _retrying(call, deadline: float):
    """``call()``, retried while JetStream is not ready (no meta leader, an election)."""
    last: Exception | None = None
    while True:
        try:
            return await call()
        except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError,
                nats.errors.NoRespondersError) as exc:
            last = exc
        except nats.js.errors.APIError as exc:
            if isinstance(exc, nats.js.errors.NotFoundError):
                raise
            last = exc
        if time.monotonic() >= deadline:
            raise BackplaneError(f"JetStream not available: {last!r}")
        await asyncio.sleep(0.1)


async def inspect(nc, wanted: list[StreamConfig], deadline: float) -> list[StreamState]:
    """Compare each wanted stream with the cluster's."""
    jsm = nc.jetstream(timeout=2.0)
    out = []
    for sc in wanted:
        try:
            info = await _retrying(lambda sc=sc: jsm.stream_info(sc.name), deadline)
        except nats.js.errors.NotFoundError:
            out.append(StreamState(sc.name, missing=True))
            continue
        out.append(StreamState(sc.name, differences=tuple(differences(info.config, sc)),
                               info=info))
    return out


async def create(nc, sc: StreamConfig, deadline: float):
    jsm = nc.jetstream(timeout=2.0)
    try:
        return await _retrying(lambda: jsm.add_stream(sc), deadline)
    except nats.js.errors.BadRequestError:
        return await _retrying(lambda: jsm.stream_info(sc.name), deadline)  # created meanwhile


async def apply(nc, wanted: list[StreamConfig], *, allow_lossy: bool, deadline: float
                ) -> tuple[list[str], list[Difference]]:
    """Create missing streams and update differing ones. Returns (what was done, lossy
    differences refused because ``allow_lossy`` was not given)."""
    done: list[str] = []
    refused: list[Difference] = []
    jsm = nc.jetstream(timeout=5.0)
    for state, sc in zip(await inspect(nc, wanted, deadline), wanted, strict=True):
        if state.missing:
            await create(nc, sc, deadline)
            done.append(f"created {sc.name}")
        elif state.differences:
            lossy = [d for d in state.differences if d.lossy]
            if lossy and not allow_lossy:
                refused += lossy
                continue
            await _retrying(lambda sc=sc: jsm.update_stream(sc), deadline)
            done.append(f"updated {sc.name}: " + "; ".join(map(str, state.differences)))
    return done, refused


async def spread_leaders(nc, names: list[str], deadline: float) -> dict[str, str]:
    """Ask JetStream to move stream leaders until ``names`` (one namespace's partitions) lead
    on different servers, as far as their replicas allow: K streams then spread the writes of
    a namespace over K servers. Best effort within ``deadline``; returns stream -> leader.
    A leader step-down elects another replica at random, so this retries."""
    import json

    leaders: dict[str, str] = {}
    while True:
        servers: set[str] = set()
        for name in names:
            msg = await nc.request(f"$JS.API.STREAM.INFO.{name}", b"", timeout=5.0)
            cluster = json.loads(msg.data).get("cluster") or {}
            leaders[name] = cluster.get("leader") or ""
            servers.add(leaders[name])
            servers.update(r.get("name") for r in cluster.get("replicas") or [])
        seen: set[str] = set()
        shared = []
        for name in names:
            if leaders[name] in seen or not leaders[name]:
                shared.append(name)
            seen.add(leaders[name])
        if not shared or len(seen) >= min(len(names), len(servers)) \
                or time.monotonic() > deadline:
            return leaders
        try:
            await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{shared[0]}", b"", timeout=5.0)
        except nats.errors.Error:
            pass
        await asyncio.sleep(0.5)


def fix_hint(flags: str) -> str:
    return (f"run `roomcast streams apply {flags}` (add --yes for a change that loses "
            "redundancy or history), or start the node with the stream's settings")


async def apply_or_check(config, action: str, *, allow_lossy: bool, events_max_age: float,
                         wait: float) -> tuple[list[str], bool]:
    """What ``roomcast streams apply|check`` prints, and whether the streams are as wanted.
    ``config``: a :class:`roomcast.backplane.nats.NatsConfig` (URLs, credentials, settings)."""
    import nats

    from roomcast.logs import redact

    wanted = wanted_streams(replicas=config.replicas, history_per_room=config.history_per_room,
                            history_max_age=config.history_max_age,
                            duplicate_window=config.duplicate_window,
                            events_max_age=events_max_age, rooms_stream=config.stream,
                            layout=config.layout())
    try:
        nc = await nats.connect(list(config.urls), max_reconnect_attempts=2,
                                reconnect_time_wait=0.2, connect_timeout=3,
                                **config.connect_options())
    except Exception as exc:  # noqa: BLE001 - one line for the operator
        raise BackplaneError(f"cannot connect to NATS at {', '.join(config.display_urls)}: "
                             f"{redact(repr(exc))}") from None
    deadline = time.monotonic() + wait
    lines: list[str] = []
    try:
        if action == "apply":
            done, refused = await apply(nc, wanted, allow_lossy=allow_lossy, deadline=deadline)
            lines += done
            for group in config.layout().partition_groups():
                leaders = await spread_leaders(nc, group, deadline)
                lines.append("leaders: " + ", ".join(f"{n} on {s}" for n, s in leaders.items()))
            for d in refused:
                lines.append(f"refused: {d}; add --yes to apply it")
        states = await inspect(nc, wanted, deadline)
    finally:
        await nc.close()
    for state in states:
        if state.missing:
            lines.append(f"{state.name}: missing")
        elif state.differences:
            lines += [f"{state.name}: differs: {d}" for d in state.differences]
        else:
            lines.append(f"{state.name}: ok (replicas {state.info.config.num_replicas})")
    return lines, all(s.ok for s in states)
