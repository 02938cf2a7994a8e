"""Every NATS subject and stream name roomcast uses, in one place.

===========================  ==========================================================
``room.<room>``              a room's messages, captured by the JetStream stream
``live.room.<room>``         the same messages re-published by the stream after storage,
                             with ``Nats-Sequence`` / ``Nats-Last-Sequence`` headers
``$JS.API.DIRECT.GET.<S>``   history pages (batch direct get), any replica
``$JS.API.STREAM.MSG.GET.<S>`` a room's newest message, from the stream leader
===========================  ==========================================================
"""

from __future__ import annotations

import hashlib
import re

#: One token of a name that becomes part of a NATS subject: letters, digits, ``_``, ``-``.
#: Nothing NATS treats specially (``.``, ``*``, ``>``, whitespace, control bytes) can pass.
_TOKENS = re.compile(r"[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*")


def valid_tokens(name: object, max_len: int = 200) -> bool:
    """True when ``name`` is one or more dot-separated tokens of ``A-Z a-z 0-9 _ -`` and at
    most ``max_len`` characters: safe to put into a NATS subject as it is.

    The one validator for every user- or operator-supplied part of a subject (rooms, node
    ids, admin arguments). A full-string match: ``$`` would also match before a trailing
    newline, which NATS reads as the end of the protocol line.
    """
    return (isinstance(name, str) and 0 < len(name) <= max_len
            and _TOKENS.fullmatch(name) is not None)


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


def msg_get(stream: str) -> str:
    """Get one stored message, answered by the stream's leader."""
    return f"$JS.API.STREAM.MSG.GET.{stream}"

# -- presence (docs/presence.md, docs/admin.md) -------------------------------------------

PRESENCE_DELTA = "roomcast.presence.delta"  # core: connection-level changes, every node
PRESENCE_HEARTBEAT = "roomcast.presence.hb"  # core: liveness + counter, every node
PRESENCE_HELLO = "roomcast.presence.hello"  # request, answered by every node (start-up sync)
PRESENCE_EVENTS_STREAM = "PRESENCE"
PRESENCE_EVENTS_PREFIX = "presence.events."  # stored; one subject per room
PRESENCE_EVENTS_LIVE = "roomcast.events.presence."  # re-published with Nats-Sequence/-Last-Sequence
#: Every node subscribes (no queue group): the server API's cluster-wide actions (node/control.py).
CTL_PREFIX = "roomcast.ctl."
#: The key-value bucket of bans (server API ``disconnect`` with ``ban``), and how long a ban
#: is kept: longer than any resume token lives (``--resume-ttl`` is at most a day).
BANS_BUCKET = "ROOMCAST_BANS"
BANS_MAX_AGE = 86400.0
ADMIN_PREFIX = "roomcast.admin."
ADMIN_QUEUE = "roomcast-admin"


def presence_sync(instance: str) -> str:
    """Request subject answered by one node with a snapshot of its connections."""
    return f"roomcast.presence.sync.{instance}"


def presence_evict(instance: str) -> str:
    """Subject telling one node to close a connection that resumed elsewhere."""
    return f"roomcast.presence.evict.{instance}"


#: Room-scoped presence (``--presence-scope rooms``, docs/presence.md): every connection's
#: entry in each room it is in, one subject per (node, connection, room), the last message of
#: each kept. A node subscribes to the rooms it has local members in.
PRESENCE_STATE_STREAM = "PRESENCE_STATE"
PRESENCE_STATE_PREFIX = "roomcast.pstate."
PRESENCE_ASK_PREFIX = "roomcast.presence.ask."  # admin scatter-gather, every node answers


def _token(name: str) -> str:
    """One subject token standing for ``name`` (instance and connection ids may hold dots)."""
    return hashlib.blake2b(name.encode(), digest_size=8).hexdigest()


def presence_entry(instance: str, conn: str, room: str) -> str:
    """The subject of one connection's entry in one room (room last: a room filter is
    ``roomcast.pstate.*.*.<room>``, and two single tokens before it cannot be confused)."""
    return f"{PRESENCE_STATE_PREFIX}{_token(instance)}.{_token(conn)}.{room}"


def presence_room_filter(room: str) -> str:
    return f"{PRESENCE_STATE_PREFIX}*.*.{room}"


def presence_node_filter(instance: str) -> str:
    return f"{PRESENCE_STATE_PREFIX}{_token(instance)}.>"


def presence_events(room: str) -> str:
    return PRESENCE_EVENTS_PREFIX + room
