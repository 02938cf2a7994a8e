"""Writes a node's room-scoped presence records to the ``PRESENCE_STATE`` stream until
JetStream has acknowledged each (:mod:`roomcast.presence.scoped`).

The one owner of the records not yet acknowledged. Only an entry's newest record matters: a
newer one supersedes the older in the table, so a resend never brings back an old state. A
record JetStream has not acknowledged within ``RESEND_AFTER`` seconds is sent again, under the
same counter (followers keep the newest counter they heard, so a duplicate changes nothing).
"""

from __future__ import annotations

import asyncio
import logging
import time

import nats.errors

from roomcast.backplane import subjects
from roomcast.backplane.natsclient import decode_ack
from roomcast.presence.state import Conn
from roomcast.presence.wire import Record, enc

log = logging.getLogger("roomcast.presence")

#: Seconds after which a record JetStream has not acknowledged is sent again.
RESEND_AFTER = 3.0
#: Seconds a leave record stays in the stream (``Nats-TTL``): long enough to order records
#: that arrive late, short enough that leaves do not pile up.
TOMBSTONE_TTL = 60.0

#: (subject, payload, headers, reply): one publish
Send = tuple[str, bytes, dict[str, str] | None, str]


class RecordWriter:
    def __init__(self, nc, instance: str) -> None:
        self.nc = nc
        self.instance = instance
        # counter -> [(room, conn), subject, payload, headers, sent at]
        self._unacked: dict[int, list] = {}
        self._latest: dict[tuple[str, str], int] = {}  # (room, conn) -> newest counter sent
        self._prefix = ""
        self._all_acked = asyncio.Event()

    async def start(self) -> object:
        """Subscribe to the acknowledgements; returns the subscription (the caller owns it)."""
        self._prefix = self.nc.new_inbox() + "."
        sub = await self.nc.subscribe(self._prefix + "*")
        self.nc.direct(sub, self._on_ack)
        return sub

    @property
    def pending(self) -> int:
        """Records not acknowledged yet."""
        return len(self._unacked)

    def record(self, counter: int, alive: bool, c: Conn) -> Send:
        """The publish of one record (sent by :meth:`send`), now awaiting its ack."""
        subject = subjects.presence_entry(self.instance, c.conn, c.room)
        payload = enc.encode(Record(counter, alive, c))
        headers = None if alive else {"Nats-TTL": f"{int(TOMBSTONE_TTL)}s"}
        key = (c.room, c.conn)
        old = self._latest.get(key)
        if old is not None:
            self._unacked.pop(old, None)  # superseded: only the newest record matters
        self._latest[key] = counter
        self._unacked[counter] = [key, subject, payload, headers, time.monotonic()]
        return subject, payload, headers, self._prefix + str(counter)

    async def send(self, sends: list[Send]) -> None:
        """Publish in order (records and evictions: ``reply`` empty for those)."""
        try:
            for subject, payload, headers, reply in sends:
                await self.nc.publish(subject, payload, reply=reply, headers=headers)
        except nats.errors.Error as exc:  # records are resent once NATS is back
            log.debug("presence record not sent: %s", exc)

    def late(self, now: float) -> list[Send]:
        """The records to send again now (not acknowledged within ``RESEND_AFTER``)."""
        out: list[Send] = []
        for counter, p in self._unacked.items():
            if now - p[4] > RESEND_AFTER:
                p[4] = now
                out.append((p[1], p[2], p[3], self._prefix + str(counter)))
        return out

    def _on_ack(self, subject: bytes, headers: bytes | None, data: bytes) -> None:
        if not data:
            return  # a status (no responders): resent later
        counter = int(subject[len(self._prefix):])
        ack = decode_ack(data)
        if ack.error is not None:
            log.warning("presence record refused by JetStream: %s", ack.error.description)
            return
        pending = self._unacked.pop(counter, None)
        if pending is not None and self._latest.get(pending[0]) == counter:
            del self._latest[pending[0]]
        if not self._unacked:
            self._all_acked.set()

    async def wait_acked(self, seconds: float) -> bool:
        """Wait until every record is acknowledged (a drained node's leaves), at most
        ``seconds``; whether they all were."""
        if not self._unacked:
            return True
        self._all_acked.clear()
        try:
            await asyncio.wait_for(self._all_acked.wait(), seconds)
        except TimeoutError:
            return False
        return True
