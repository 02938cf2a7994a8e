"""The client's pure parts: message and state types, and the rule that decides what to do
with each message (``docs/protocol.md`` §7). ``roomcast.js`` implements the same rule."""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from typing import Any

from roomcast.client.presence import RoomPresence


class State(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Message:
    """A room message (``docs/protocol.md`` §4.5)."""

    room: str
    seq: int
    prev: int | None
    sender: str
    ts: int
    id: str | None
    data: Any


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """A page of a room's retained messages (``docs/protocol.md`` §4.11)."""

    room: str
    messages: list[Message]  # newest first, or oldest first when asked with ``after``
    more: bool  # more retained messages beyond this page


def message_of(f: dict) -> Message:
    return Message(f["room"], f["seq"], f.get("prev"), f.get("from"), f.get("ts"), f.get("id"),
                   f.get("data"))


@dataclass
class _Room:
    position: int | None = None  # last seq received (or joined at); None: nothing yet
    waiters: list[asyncio.Future] = field(default_factory=list)
    repairing: bool = False
    presence: RoomPresence | None = None  # who is in the room (None: presence is off)


@dataclass
class _Publish:
    room: str
    data: str  # JSON text of the value
    id: str
    future: asyncio.Future
    sent_on: int = -1  # session number it was last sent on


class Outbox:
    """Publishes waiting for their ``ack``, by message id, at most ``limit`` of them.

    A publish stays here until the server acknowledges it (``settle``) or refuses it for good
    (``fail``); after a reconnect every entry not yet sent on the new session is sent again with
    the same id (``unsent``), so it is stored exactly once.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._entries: dict[str, _Publish] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, msg_id: str | None) -> _Publish | None:
        return self._entries.get(msg_id) if msg_id is not None else None

    def add(self, room: str, data: str, msg_id: str, future: asyncio.Future) -> _Publish:
        """Queue a publish; the caller checks :meth:`get` first for a retry of the same id.

        Raises:
            OverflowError: ``limit`` publishes are waiting already.
        """
        if len(self._entries) >= self.limit:
            raise OverflowError(f"{len(self._entries)} publishes await an ack")
        pub = self._entries[msg_id] = _Publish(room, data, msg_id, future)
        return pub

    def remove(self, msg_id: str) -> None:
        self._entries.pop(msg_id, None)

    def unsent(self, session: int) -> list[_Publish]:
        """Entries not yet sent on ``session``, oldest first."""
        return [p for p in self._entries.values() if p.sent_on != session]

    def settle(self, msg_id: str | None, seq: int) -> None:
        pub = self.get(msg_id)
        if pub is not None and not pub.future.done():
            pub.future.set_result(seq)

    def fail(self, msg_id: str, exc: BaseException) -> None:
        pub = self.get(msg_id)
        if pub is not None and not pub.future.done():
            pub.future.set_exception(exc)

    def fail_all(self, exc: BaseException) -> None:
        for msg_id in list(self._entries):
            self.fail(msg_id, exc)


class _Lost(Exception):
    """The connection went away while a request was outstanding (internal)."""


#: Error codes after which the same request may succeed later (docs/protocol.md §5).
TEMPORARY_CODES = frozenset({"rate_limited", "publish_failed", "unavailable", "internal"})


class Verdict(enum.Enum):
    DELIVER = "deliver"
    DUPLICATE = "duplicate"
    GAP = "gap"


def judge(position: int | None, seq: int, prev: int | None) -> Verdict:
    """What to do with a message given the room's position (last ``seq`` received).

    Duplicate: ``seq`` is not above the position. Gap: ``prev`` is known and is not the
    position (something was missed: drop it and replay from the position). Otherwise deliver;
    ``prev`` null means the server could not know it (after a lost history window).
    """
    if position is not None and seq <= position:
        return Verdict.DUPLICATE
    if position is not None and prev is not None and prev != position:
        return Verdict.GAP
    return Verdict.DELIVER


def retryable(close_code: int | None) -> bool:
    """Whether to reconnect after the server closed with ``close_code`` (§6)."""
    return close_code is None or close_code < 4500
