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

# -- presence (docs/presence.md, docs/admin.md) -------------------------------------------

PRESENCE_DELTA = "roomcast.presence.delta"  # core: connection-level changes, every node
PRESENCE_HEARTBEAT = "roomcast.presence.hb"  # core: liveness + counter, every node
PRESENCE_HELLO = "roomcast.presence.hello"  # request, answered by every node (start-up sync)
PRESENCE_EVENTS_STREAM = "PRESENCE"
PRESENCE_EVENTS_PREFIX = "presence.events."  # stored; one subject per room
PRESENCE_EVENTS_LIVE = "roomcast.events.presence."  # re-published with Nats-Sequence/-Last-Sequence
ADMIN_PREFIX = "roomcast.admin."
ADMIN_QUEUE = "roomcast-admin"


def presence_sync(instance: str) -> str:
    """Request subject answered by one node with a snapshot of its connections."""
    return f"roomcast.presence.sync.{instance}"


def presence_evict(instance: str) -> str:
    """Subject telling one node to close a connection that resumed elsewhere."""
    return f"roomcast.presence.evict.{instance}"


def presence_events(room: str) -> str:
    return PRESENCE_EVENTS_PREFIX + room
