"""The production backplane: NATS core for live delivery, JetStream for storage and order.

One stream (``ROOMS``) captures ``room.>``; its RePublish sends every stored message to
``live.room.<room>`` with ``Nats-Sequence`` (the message's ``seq``) and ``Nats-Last-Sequence``
(the room's previous ``seq``: ``prev``). History is read with batch direct gets filtered on the
room's subject. See :mod:`roomcast.backplane.base` for the guarantees.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

from roomcast.backoff import backoff_delays
from roomcast.backplane import streams, subjects
from roomcast.backplane.acks import AckTable
from roomcast.backplane.base import MessageHandler, PublishResult, RoomMessage, StoredMessage
from roomcast.backplane.natsclient import AckError, FastHeadersClient, sequence_headers
from roomcast.backplane.natsconfig import NatsConfig
from roomcast.errors import BackplaneError, PublishError
from roomcast.logs import redact

log = logging.getLogger("roomcast.backplane")

#: Longest pause between retries of a JetStream request answered "no responders" (0.1, 0.2,
#: 0.4, 0.8 s: ~1.5 s in all).
NO_RESPONDERS_RETRY_MAX = 0.8

__all__ = ["NatsBackplane", "NatsConfig"]  # NatsConfig lives in natsconfig.py


class NatsBackplane:
    """:class:`roomcast.backplane.base.Backplane` on NATS JetStream."""

    def __init__(self, config: NatsConfig) -> None:
        self.config = config
        self._nc: nats.NATS | None = None
        self._js = None
        self._subs: dict[str, object] = {}
        #: Where each room is stored; the rooms' streams are the first ``len(layout.streams)``
        #: of the wanted ones, and each has its own epoch.
        self.layout = config.layout()
        self._epochs = [""] * len(self.layout.streams)
        self._hist_prefix = ""
        self._hist_waiters: dict[str, asyncio.Queue[Msg]] = {}
        self._hist_counter = 0
        #: JetStream acks of the publishes in flight (:mod:`roomcast.backplane.acks`).
        self.acks = AckTable(config.publish_attempt_timeout)
        self.on_state_change = None  # callable(connected: bool) for metrics/readiness
        #: callable(epoch: str, stream: str): a rooms stream was recreated (``epoch``: the
        #: new epoch of them all)
        self.on_epoch_change = None
        #: Why the streams are not what this node needs (None: they are); readiness fails.
        self.stream_problem: str | None = None
        self._checks: set[asyncio.Task] = set()
        self._wanted = streams.wanted_streams(
            replicas=config.replicas, history_per_room=config.history_per_room,
            history_max_age=config.history_max_age, duplicate_window=config.duplicate_window,
            rooms_stream=config.stream, layout=self.layout)[:len(self.layout.streams)]
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------

    @property
    def epoch(self) -> str:
        """The rooms streams' incarnations: the one stream's epoch, or with several streams
        ``<layout fingerprint>:<epoch 0>,<epoch 1>,…`` (docs/protocol.md §2.2)."""
        if len(self._epochs) == 1:
            return self._epochs[0]
        return f"{self.layout.fingerprint}:{','.join(self._epochs)}"

    def epoch_matches(self, room: str, epoch: str) -> bool:
        """Whether positions in ``room`` taken under ``epoch`` still mean the same messages:
        same layout, and the room's stream not recreated since."""
        if len(self._epochs) == 1:
            return epoch == self._epochs[0]
        fingerprint, _, parts = epoch.partition(":")
        if fingerprint != self.layout.fingerprint:
            return False
        i = self.layout.place(room).index
        if i < 0:
            return True  # an ephemeral room has no positions to judge
        theirs = parts.split(",")
        return i < len(theirs) and theirs[i] == self._epochs[i]

    @property
    def nc(self):
        """The NATS connection (shared with presence)."""
        return self._nc

    @property
    def js(self):
        return self._js

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def start(self) -> None:
        cfg = self.config

        last_error: list = ["", 0.0]  # message, monotonic time it was logged

        async def on_error(exc: Exception) -> None:
            # nats-py reports every failed attempt (4 a second while NATS is away): the same
            # error is logged once per 30 s, and not at all during the first connect, whose
            # failure is one error line of its own.
            text, now = str(exc) or repr(exc), time.monotonic()
            if self._nc is None and not self._closing:
                if not last_error[0]:
                    log.warning("NATS at %s not reachable yet (%s); retrying for up to %g s",
                                ", ".join(cfg.display_urls), redact(text), cfg.connect_timeout)
                    last_error[:] = [text, now]
                return
            if text != last_error[0] or now - last_error[1] > 30.0:
                log.warning("nats error: %s", redact(text))
                last_error[:] = [text, now]

        async def on_disconnected() -> None:
            if not self._closing:
                log.warning("nats disconnected")
            if self.on_state_change:
                self.on_state_change(False)

        async def on_reconnected() -> None:
            url = self._nc.connected_url if self._nc else None
            log.info("nats reconnected to %s", f"{url.hostname}:{url.port}" if url else "?")
            # The streams may have changed (or been recreated) while we were away.
            task = asyncio.get_running_loop().create_task(self.check_streams())
            self._checks.add(task)  # a reference, so the task is not collected mid-way
            task.add_done_callback(self._checks.discard)
            if self.on_state_change:
                self.on_state_change(True)

        opts = dict(
            servers=list(cfg.urls),
            name=cfg.name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
            connect_timeout=2,
            allow_reconnect=True,
            ping_interval=5,
            max_outstanding_pings=3,
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
        )
        opts.update(cfg.connect_options())
        opts.update(cfg.options)
        deadline = time.monotonic() + cfg.connect_timeout
        try:
            # nats.connect retries the initial connect itself; bound it by our deadline.
            nc = FastHeadersClient()
            await asyncio.wait_for(nc.connect(**opts), cfg.connect_timeout)
            self._nc = nc
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            why = (f"not reachable within {cfg.connect_timeout:g} s"
                   if isinstance(exc, TimeoutError) else redact(str(exc) or repr(exc)))
            raise BackplaneError(f"cannot connect to NATS at {', '.join(cfg.display_urls)}: "
                                 f"{why}") from None
        self._js = self._nc.jetstream(timeout=cfg.publish_attempt_timeout)
        await self._verify_streams(deadline, may_create=cfg.streams_mode == "create-missing")
        self._hist_prefix = self._nc.new_inbox() + "."
        await self._nc.subscribe(self._hist_prefix + "*", cb=self._on_history_reply)
        await self.acks.start(self._nc)
        if self.on_state_change:
            self.on_state_change(True)

    def require_streams(self, wanted: list[StreamConfig]) -> None:
        """The streams this backplane verifies (the first holds the rooms); by default only
        the rooms stream. Call before :meth:`start`."""
        self._wanted = list(wanted)

    async def _verify_streams(self, deadline: float, *, may_create: bool) -> None:
        """Compare the streams with the wanted ones; create a missing one only when
        ``may_create``; never change an existing one (``roomcast streams apply`` does). Sets
        :attr:`stream_problem` (None when they match) and the epoch."""
        cfg = self.config
        problems = []
        created = False
        for state, sc in zip(await streams.inspect(self._nc, self._wanted, deadline),
                             self._wanted, strict=True):
            info = state.info
            if state.missing and may_create:
                info = await streams.create(self._nc, sc, deadline)
                created = True
                log.info("created stream %s (replicas %d)", sc.name, sc.num_replicas)
            elif state.missing:
                problems.append(f"stream {sc.name} does not exist")
            elif state.differences:
                problems.append(f"stream {sc.name} differs from this node's settings: "
                                + "; ".join(map(str, state.differences)))
            index = self._rooms_stream_index(sc.name)
            if index is not None and info is not None:
                self._set_epoch(index, streams.epoch_of(info))
        if created:
            for group in self.layout.partition_groups():
                leaders = await streams.spread_leaders(self._nc, group, deadline)
                log.info("partition leaders: %s", ", ".join(f"{n} on {s}"
                                                             for n, s in leaders.items()))
        problem = ("; ".join(problems) + "; " + streams.fix_hint(cfg.stream_flags())
                   if problems else None)
        if problem and problem != self.stream_problem:
            log.error("not ready: %s", problem)
        elif not problem and self.stream_problem:
            log.info("streams match this node's settings again")
        self.stream_problem = problem

    def _rooms_stream_index(self, name: str) -> int | None:
        for i, s in enumerate(self.layout.streams):
            if s.name == name:
                return i
        return None

    def _set_epoch(self, index: int, epoch: str) -> None:
        old, self._epochs[index] = self._epochs[index], epoch
        if old and epoch != old:
            log.warning("stream %s was recreated (epoch %s -> %s)",
                        self.layout.streams[index].name, old, epoch)
            if self.on_epoch_change is not None:
                self.on_epoch_change(self.epoch, self.layout.streams[index].name)

    async def check_streams(self) -> bool:
        """Re-verify the streams now (background check, after a reconnect): True when they
        answered. Detects a recreated stream (new epoch) without a reconnect."""
        if not self.connected:
            return False
        try:
            await self._verify_streams(time.monotonic() + 1.0, may_create=False)
        except (BackplaneError, nats.errors.Error) as exc:
            log.debug("stream check failed: %s", exc)
            return False
        return True

    async def close(self, within: float = 5.0) -> None:
        """Drain the NATS connection (pending publishes go out), for at most ``within``
        seconds (nats-py's own drain would wait up to 30), then close it."""
        self._closing = True
        self.acks.close()
        if self._nc is not None and not self._nc.is_closed:
            try:
                await asyncio.wait_for(self._nc.drain(), within)
            except Exception:  # noqa: BLE001 - best effort on shutdown (timeout included)
                try:
                    await asyncio.wait_for(self._nc.close(), 1.0)
                except Exception:  # noqa: BLE001
                    pass
        self._subs.clear()

    # -- publish ---------------------------------------------------------------------

    async def publish(self, room: str, body: bytes, msg_id: str) -> PublishResult:
        cfg = self.config
        deadline = time.monotonic() + cfg.publish_budget
        delays = backoff_delays(0.05, 1.0)
        attempts = 0
        last: BaseException | None = None
        while True:
            attempts += 1
            try:
                return await (await self.publish_begin(room, body, msg_id))
            except PublishError:
                raise
            except (TimeoutError, AckError, nats.errors.Error, OSError) as exc:
                last = exc
            if time.monotonic() >= deadline:
                raise PublishError(room, attempts, last)
            await asyncio.sleep(min(next(delays), max(0.0, deadline - time.monotonic())))

    async def publish_begin(self, room: str, body: bytes, msg_id: str
                            ) -> asyncio.Future[PublishResult]:
        """Send one publish attempt; the returned future resolves with its ack.

        Many acks are in flight at once: each reply goes to one wildcard inbox and resolves
        this publish's future (no task, no ``wait_for`` per message). The future fails with a
        transient error (timeout, no responders, API error, connection) when this attempt did
        not store the message; :meth:`publish` retries such failures with the same ``msg_id``.
        """
        place = self.layout.place(room)
        if place.ephemeral:
            return await self._publish_ephemeral(place.subject, body)
        return await self.store_begin(place.subject, body, msg_id)

    async def _publish_ephemeral(self, subject: str, body: bytes
                                 ) -> asyncio.Future[PublishResult]:
        """Core NATS, nothing stored: "acked" (seq 0) once handed to the connection."""
        fut: asyncio.Future[PublishResult] = asyncio.get_running_loop().create_future()
        try:
            await self._nc.publish(subject, body)
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            fut.set_exception(exc)
        else:
            fut.set_result(PublishResult(0, False))
        return fut

    async def store_begin(self, subject: str, body: bytes, msg_id: str
                          ) -> asyncio.Future[PublishResult]:
        """:meth:`publish_begin` for any subject a stream captures (presence events too)."""
        return await self.acks.send(self._nc, subject, body, msg_id)

    # -- live ------------------------------------------------------------------------

    async def subscribe(self, room: str, handler: MessageHandler) -> None:
        if room in self._subs:
            return

        place = self.layout.place(room)

        def on_ephemeral(subject: bytes, headers: bytes | None, data: bytes) -> None:
            handler(RoomMessage(room, 0, None, data))

        def on_live(subject: bytes, headers: bytes | None, data: bytes) -> None:
            seqs = sequence_headers(headers)
            if seqs is None:
                log.warning("dropping live message without sequence headers on %s",
                            subject.decode(errors="replace"))
                return
            handler(RoomMessage(room, seqs[0], seqs[1], data))

        # Live messages skip nats-py's per-message machinery (Msg, header dict, pending queue,
        # a task wakeup): the parser hands them to on_live, which only queues frames.
        try:
            sub = await self._nc.subscribe(place.live)
        except nats.errors.BadSubjectError as exc:
            raise BackplaneError(f"cannot subscribe to room {room[:80]!r}: {exc}") from None
        self._nc.direct(sub, on_ephemeral if place.ephemeral else on_live)
        self._subs[room] = sub
        await self._nc.flush(timeout=5)

    async def unsubscribe(self, room: str) -> None:
        sub = self._subs.pop(room, None)
        if sub is not None:
            self._nc.undirect(sub)
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                pass

    # -- history ---------------------------------------------------------------------

    async def _on_history_reply(self, msg: Msg) -> None:
        q = self._hist_waiters.get(msg.subject[len(self._hist_prefix):])
        if q is not None:
            q.put_nowait(msg)

    async def history(self, room: str, start_seq: int, limit: int) -> list[StoredMessage]:
        if not subjects.valid_tokens(room):  # it goes into a JSON filter, not past the seam
            raise BackplaneError(f"history read of {room[:80]!r} refused: not a room name")
        place = self.layout.place(room)
        if place.ephemeral:
            return []  # nothing is stored
        return await self.read_stored(place.stream, place.subject, start_seq, limit,
                                      what=f"history read of {room!r}")

    async def read_stored(self, stream: str, subject: str, start_seq: int, limit: int, *,
                          what: str = "stream read") -> list[StoredMessage]:
        """Up to ``limit`` messages of ``stream`` on ``subject`` (wildcards allowed) from
        ``start_seq`` on, in order: one batch direct get, answered by any replica."""
        self._hist_counter += 1
        token = str(self._hist_counter)
        q: asyncio.Queue[Msg] = asyncio.Queue()
        self._hist_waiters[token] = q
        req = {"seq": max(1, start_seq), "next_by_subj": subject, "batch": limit}
        out: list[StoredMessage] = []
        try:
            await self._nc.publish(subjects.direct_get(stream),
                                   json.dumps(req).encode(), reply=self._hist_prefix + token)
            while True:
                try:
                    msg = q.get_nowait()  # replies come in bursts: no timer for most of them
                except asyncio.QueueEmpty:
                    msg = await asyncio.wait_for(q.get(), 5.0)
                h = msg.headers or {}
                status = h.get("Status")
                if status:
                    if status in ("204", "404", "408"):
                        return out
                    raise BackplaneError(f"{what} failed: {status} {h.get('Description')}")
                out.append(StoredMessage(int(h["Nats-Sequence"]), msg.data))
                if len(out) >= limit:
                    return out
        except TimeoutError as exc:
            raise BackplaneError(f"{what} timed out") from exc
        except (nats.errors.BadSubjectError, nats.errors.ConnectionClosedError,
                nats.errors.ConnectionReconnectingError) as exc:
            raise BackplaneError(f"{what} refused: {exc}") from None
        finally:
            del self._hist_waiters[token]

    async def _request(self, subject: str, payload: bytes, what: str):
        """A JetStream API request; every failure is a :class:`BackplaneError` naming
        ``what``. "No responders" is retried for up to ~1.5 s: it is what a direct get or a
        message get answers while a stream's servers are not serving it yet (just created,
        or between leaders)."""
        pause = 0.1
        while True:
            try:
                return await self._nc.request(subject, payload, timeout=5.0)
            except nats.errors.NoRespondersError:
                if pause > NO_RESPONDERS_RETRY_MAX:
                    raise BackplaneError(f"{what}: no JetStream server answers") from None
                await asyncio.sleep(pause)
                pause *= 2
            except nats.errors.TimeoutError as exc:
                raise BackplaneError(f"{what} timed out") from exc
            except (nats.errors.BadSubjectError, nats.errors.ConnectionClosedError,
                    nats.errors.ConnectionReconnectingError) as exc:
                raise BackplaneError(f"{what} refused: {exc}") from None

    async def last_seq(self, room: str, *, leader: bool = False) -> int:
        if self.layout.place(room).ephemeral:
            return 0
        if leader:
            return await self._leader_last_seq(room)
        place = self.layout.place(room)
        subject = f"{subjects.direct_get(place.stream)}.{place.subject}"
        msg = await self._request(subject, b"", f"last_seq of {room[:80]!r}")
        h = msg.headers or {}
        if h.get("Status"):
            return 0
        return int(h["Nats-Sequence"])


    async def _leader_last_seq(self, room: str) -> int:
        """``STREAM.MSG.GET`` (answered by the stream leader, unlike a direct get)."""
        if not subjects.valid_tokens(room):
            raise BackplaneError(f"last_seq of {room[:80]!r} refused: not a room name")
        place = self.layout.place(room)
        return await self.leader_last(place.stream, place.subject, what=f"last_seq of {room!r}")

    async def leader_last(self, stream: str, subject: str, *, what: str = "last_seq") -> int:
        """The sequence of ``stream``'s newest message on ``subject`` (wildcards allowed), 0
        when there is none, from the stream's leader: what a replica's read must reach."""
        req = msgspec.json.encode({"last_by_subj": subject})
        msg = await self._request(subjects.msg_get(stream), req, what)
        reply = json.loads(msg.data)
        err = reply.get("error")
        if err is not None:
            if err.get("err_code") == 10037:  # no message found
                return 0
            raise BackplaneError(f"{what} failed: {err.get('description')}")
        return int(reply["message"]["seq"])
