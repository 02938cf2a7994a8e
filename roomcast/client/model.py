"""The client's pure parts: message and state types, and the rule that decides what to do
with each message (``docs/protocol.md`` §7). ``roomcast.js`` implements the same rule."""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from typing import Any


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


@dataclass
class _Room:
    position: int | None = None  # last seq received (or joined at); None: nothing yet
    waiters: list[asyncio.Future] = field(default_factory=list)
    repairing: bool = False


@dataclass
class _Publish:
    room: str
    data: str  # JSON text of the value
    id: str
    future: asyncio.Future
    sent_on: int = -1  # session number it was last sent on


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
