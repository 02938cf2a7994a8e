"""JetStream acks of the publishes in flight, many at once, on one wildcard inbox.

Each publish attempt gets a token; its ack comes back on ``<inbox>.<token>`` and resolves the
attempt's future straight from the protocol parser (the seam's direct handler: no task, no
``wait_for`` per message). One sweep every ``ACK_SWEEP`` fails the attempts whose ack is
overdue (insertion order is deadline order: one timeout for all). At most
``MAX_PENDING_ACKS`` wait at once; a publish beyond that waits for room, within its attempt
timeout.
"""

from __future__ import annotations

import asyncio

import msgspec
import nats.errors

from roomcast.backplane.base import PublishResult
from roomcast.backplane.natsclient import (
    ACK_SWEEP,
    MAX_PENDING_ACKS,
    AckError,
    ApiError,
    decode_ack,
    expire,
)
from roomcast.errors import PublishError


class AckTable:
    def __init__(self, attempt_timeout: float) -> None:
        self.attempt_timeout = attempt_timeout
        self.prefix = ""
        self.pending: dict[str, tuple[asyncio.Future, float]] = {}  # token -> (future, deadline)
        self._counter = 0
        self._room: asyncio.Event | None = None  # set when a pending slot frees up
        self._sweeper: asyncio.Task | None = None

    async def start(self, nc) -> None:
        self.prefix = nc.new_inbox() + "."
        sub = await nc.subscribe(self.prefix + "*")
        nc.direct(sub, self.on_ack)
        self._sweeper = asyncio.get_running_loop().create_task(self._expire())

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()

    async def send(self, nc, subject: str, body: bytes, msg_id: str
                   ) -> asyncio.Future[PublishResult]:
        """Publish ``body`` to ``subject`` with ``msg_id``; the future resolves with the ack,
        or fails with a transient error (timeout, no responders, API error, connection) or a
        :class:`PublishError` when the subject was refused before anything was sent."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[PublishResult] = loop.create_future()
        token = ""
        try:
            if len(self.pending) >= MAX_PENDING_ACKS:
                await self._wait_for_room(loop.time() + self.attempt_timeout)
            self._counter += 1
            token = str(self._counter)
            self.pending[token] = (fut, loop.time() + self.attempt_timeout)
            await nc.publish_msg_id(subject, self.prefix + token, msg_id, body)
        except nats.errors.BadSubjectError as exc:
            # Refused before anything was sent: no retry can succeed (and the connection is
            # untouched); fails this publish only.
            self._take(token)
            if not fut.done():
                fut.set_exception(PublishError(subject, 1, exc))
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            self._take(token)
            if not fut.done():
                fut.set_exception(exc)
        return fut

    def on_ack(self, subject: bytes, headers: bytes | None, data: bytes) -> None:
        fut = self._take(subject[len(self.prefix):].decode())
        if fut is None:
            return
        if headers and headers[8:9] == b" ":  # inline status, e.g. "NATS/1.0 503\r\n\r\n"
            status = headers[9:].split(b"\r\n", 1)[0].decode(errors="replace").strip()
            fut.set_exception(AckError(status))
            return
        _resolve(fut, data)

    def _take(self, token: str) -> asyncio.Future | None:
        """Remove a pending ack; the future if it still waits."""
        entry = self.pending.pop(token, None)
        if self._room is not None and len(self.pending) < MAX_PENDING_ACKS:
            self._room.set()
            self._room = None
        if entry is None or entry[0].done():
            return None  # timed out already; the retry (same msg id) gets the answer
        return entry[0]

    async def _expire(self) -> None:
        """Fail attempts whose ack is overdue (within ``ACK_SWEEP`` of their deadline)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(ACK_SWEEP)
            now = loop.time()
            overdue = []
            for token, (_, deadline) in self.pending.items():
                if deadline > now:
                    break
                overdue.append(token)
            for token in overdue:
                fut = self._take(token)
                if fut is not None:
                    expire(fut)

    async def _wait_for_room(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while len(self.pending) >= MAX_PENDING_ACKS:
            if self._room is None:
                self._room = asyncio.Event()
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError("too many publishes awaiting their ack")
            await asyncio.wait_for(self._room.wait(), left)


def _resolve(fut: asyncio.Future, data: bytes) -> None:
    try:
        ack = decode_ack(data)
    except msgspec.DecodeError as exc:
        fut.set_exception(AckError(f"unreadable ack: {exc}"))
        return
    if ack.error is not None or ack.seq <= 0:
        err = ack.error or ApiError(description="ack without a sequence")
        fut.set_exception(AckError(f"{err.code}/{err.err_code} {err.description}"))
        return
    fut.set_result(PublishResult(ack.seq, ack.duplicate))
