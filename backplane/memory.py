"""An in-process backplane for fast unit tests of the logic above it.

It keeps the same guarantees as :class:`roomcast.backplane.nats.NatsBackplane` (see
:mod:`roomcast.backplane.base`) for one process. It is never the proof that the cluster works.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque

from roomcast.backplane.base import MessageHandler, PublishResult, RoomMessage, StoredMessage


class MemoryBackplane:
    def __init__(self, *, history_per_room: int = 1000, epoch: str = "mem-1",
                 duplicate_window: int = 10_000) -> None:
        self._history_per_room = history_per_room
        self._epoch = epoch
        self._seq = 0
        self._rooms: dict[str, deque[StoredMessage]] = {}
        self._last: dict[str, int] = {}
        self._subs: dict[str, list[MessageHandler]] = {}
        self._dedupe: OrderedDict[str, int] = OrderedDict()
        self._dedupe_max = duplicate_window
        self.connected = True
        self.fail_publishes = 0  # test hook: the next N publishes raise

    @property
    def epoch(self) -> str:
        return self._epoch

    def epoch_matches(self, room: str, epoch: str) -> bool:
        return epoch == self._epoch

    async def start(self) -> None:
        return None

    async def close(self, within: float = 5.0) -> None:
        self._subs.clear()

    async def publish(self, room: str, body: bytes, msg_id: str) -> PublishResult:
        await asyncio.sleep(0)
        if self.fail_publishes:
            from roomcast.errors import PublishError

            self.fail_publishes -= 1
            raise PublishError(room, 1)
        if msg_id in self._dedupe:
            return PublishResult(self._dedupe[msg_id], True)
        self._seq += 1
        seq = self._seq
        self._dedupe[msg_id] = seq
        if len(self._dedupe) > self._dedupe_max:
            self._dedupe.popitem(last=False)
        prev = self._last.get(room, 0)
        self._last[room] = seq
        hist = self._rooms.setdefault(room, deque(maxlen=self._history_per_room))
        hist.append(StoredMessage(seq, body))
        msg = RoomMessage(room, seq, prev, body)
        for handler in list(self._subs.get(room, ())):
            handler(msg)
        return PublishResult(seq, False)

    async def publish_begin(self, room: str, body: bytes, msg_id: str
                            ) -> asyncio.Future[PublishResult]:
        from roomcast.errors import PublishError

        fut: asyncio.Future[PublishResult] = asyncio.get_running_loop().create_future()
        try:
            fut.set_result(await self.publish(room, body, msg_id))
        except PublishError as exc:
            fut.set_exception(exc)
        return fut

    async def subscribe(self, room: str, handler: MessageHandler) -> None:
        self._subs.setdefault(room, []).append(handler)

    async def unsubscribe(self, room: str) -> None:
        self._subs.pop(room, None)

    async def history(self, room: str, start_seq: int, limit: int) -> list[StoredMessage]:
        await asyncio.sleep(0)
        out = [m for m in self._rooms.get(room, ()) if m.seq >= start_seq]
        return out[:limit]

    async def last_seq(self, room: str, *, leader: bool = False) -> int:
        hist = self._rooms.get(room)
        return hist[-1].seq if hist else 0
