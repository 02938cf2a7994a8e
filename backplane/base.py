"""The backplane interface (see ``docs/architecture.md``).

A backplane stores every room message and hands it to the nodes that subscribed to the room.

Guarantees every implementation gives:

* **Total order per room.** Each stored message gets a ``seq`` from one sequence shared by all
  rooms (the stream sequence), strictly increasing within a room.
* **``prev``** is the ``seq`` of the previous stored message *of the same room* (0 for a room's
  first message). A subscriber that sees ``prev`` differ from the last ``seq`` it got for the
  room has missed messages and can fetch them with :meth:`Backplane.history`.
* **Acknowledged means stored.** :meth:`Backplane.publish` returns only after storage
  (replicated, where the stream is). Publishing again with the same ``msg_id`` within the
  duplicate window stores nothing new and returns the original ``seq``.
* **Epoch.** Sequences are only comparable within one ``epoch``; a recreated stream gets a new
  one, so a client's old position is never taken for a position in the new stream.
* Live delivery is at most once; history fills any gap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class RoomMessage:
    """A stored message as delivered live: its room, position and stored body."""

    room: str
    seq: int
    prev: int
    body: bytes


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A stored message as read from history."""

    seq: int
    body: bytes


@dataclass(frozen=True, slots=True)
class PublishResult:
    seq: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """A position in the room history: comparable only within the same ``epoch``."""

    seq: int
    epoch: str


#: Called for every live message of a subscribed room, on the event loop, in arrival order.
MessageHandler = Callable[[RoomMessage], None]


class Backplane(Protocol):
    """What an edge node needs from the backplane."""

    @property
    def epoch(self) -> str: ...

    def epoch_matches(self, room: str, epoch: str) -> bool:
        """Whether positions in ``room`` taken under ``epoch`` (a client's) are valid here."""
        ...

    @property
    def connected(self) -> bool: ...

    async def start(self) -> None: ...

    async def close(self, within: float = 5.0) -> None:
        """Release the backplane, within ``within`` seconds."""
        ...

    async def publish(self, room: str, body: bytes, msg_id: str) -> PublishResult:
        """Store ``body`` in ``room``; return once stored.

        Raises:
            roomcast.errors.PublishError: not stored within the retry budget.
        """
        ...

    async def publish_begin(self, room: str, body: bytes, msg_id: str
                            ) -> asyncio.Future[PublishResult]:
        """Send one attempt of :meth:`publish` and return the future of its ack, so that a
        caller can keep many publishes in flight without a task each.

        The future fails with :class:`roomcast.errors.PublishError` when the message is known
        not to be stored, and with another exception when this attempt failed transiently:
        then call :meth:`publish` with the same ``msg_id`` (it retries within its budget).
        """
        ...

    async def subscribe(self, room: str, handler: MessageHandler) -> None:
        """Start live delivery of ``room``'s new messages to ``handler``.

        When this returns, every message stored afterwards is delivered (barring a
        backplane disconnect, which ``prev`` reveals).
        """
        ...

    async def unsubscribe(self, room: str) -> None: ...

    async def history(self, room: str, start_seq: int, limit: int) -> list[StoredMessage]:
        """Up to ``limit`` retained messages of ``room`` with ``seq >= start_seq``, in order."""
        ...

    async def last_seq(self, room: str, *, leader: bool = False) -> int:
        """The ``seq`` of the room's newest retained message, 0 if none. Any replica may
        answer (it may lag a little); ``leader=True`` asks the one that assigns ``seq``s,
        whose answer no acknowledged message is newer than (used to refuse positions the
        store never issued, docs/protocol.md §3.1)."""
        ...
