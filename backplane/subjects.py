"""Every NATS subject and stream name roomcast uses, in one place.

===========================  ==========================================================
``room.<room>``              a room's messages, captured by the JetStream stream
``live.room.<room>``         the same messages re-published by the stream after storage,
                             with ``Nats-Sequence`` / ``Nats-Last-Sequence`` headers
``$JS.API.DIRECT.GET.<S>``   history pages (batch direct get)
===========================  ==========================================================
"""

from __future__ import annotations

STREAM = "ROOMS"
ROOM_PREFIX = "room."
LIVE_PREFIX = "live.room."


def room_subject(room: str) -> str:
    """Subject a room's messages are published to (and stored under)."""
    return ROOM_PREFIX + room


def live_subject(room: str) -> str:
    """Subject a node subscribes to for a room's stored-and-sequenced messages."""
    return LIVE_PREFIX + room


def room_from_live(subject: str) -> str:
    return subject[len(LIVE_PREFIX):]


def direct_get(stream: str) -> str:
    return f"$JS.API.DIRECT.GET.{stream}"
