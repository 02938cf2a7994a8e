"""Cluster-wide presence as pure state: no I/O, no clocks (``docs/presence.md``).

Every node holds one :class:`PresenceState`: the connections of every node in every room. It
changes only through the methods below, each of which returns the user-level *transitions* it
caused: a user's first connection in a room is a ``join``, its last one leaving is a ``leave``
(several tabs or devices of one user are one member).

Changes from other nodes arrive as deltas stamped with the origin node's counter, which grows
by one per delta. A delta whose counter is not the next one expected from its origin reveals a
loss: :meth:`PresenceState.apply_delta` then answers ``need_sync`` and the caller asks that
origin for a snapshot of its connections, applied with :meth:`PresenceState.apply_snapshot`.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

_enc = msgspec.json.Encoder().encode

def _each(rooms: str | set[str]):
    """The rooms of a ``_by_node`` entry (one room is kept as the str itself)."""
    return (rooms,) if isinstance(rooms, str) else rooms


#: Member lists (``joined``, ``presence_state``) name at most this many connections per user.
LIST_CONNS_PER_USER = 8


class Op(enum.StrEnum):
    JOIN = "join"
    LEAVE = "leave"


#: The ``info`` of every entry without one (one dict, never mutated).
NO_INFO: dict = {}

#: An op from its wire value, without the enum's call machinery (~1 µs per remote delta).
OPS = {op.value: op for op in Op}

# The entries below are msgspec Structs, not dataclasses: every node makes several per join
# (a remote one for each join anywhere in the cluster), and a frozen dataclass costs ~1 µs to
# construct against ~0.1 µs. ``gc=False``: they hold only strings, ints and a JSON ``info``,
# so they cannot be part of a reference cycle, and the cyclic collector never walks the
# node's presence map (one entry per connection in the cluster).


class Conn(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One connection's presence in one room; also its form on the wire (an array, in this
    field order: ``docs/presence.md``)."""

    room: str
    conn: str
    user: str
    node: str
    joined_at: int  # ms since the epoch
    info: dict[str, Any] = {}

    def meta(self) -> dict[str, Any]:
        return {"conn": self.conn, "node": self.node, "joined_at": self.joined_at,
                "info": self.info}


class Transition(msgspec.Struct, frozen=True, gc=False):
    """A user-level change in a room: ``join`` (first connection) or ``leave`` (last)."""

    op: Op
    room: str
    user: str
    conn: Conn


class Delta(msgspec.Struct, frozen=True, gc=False):
    """One connection-level change, as sent between nodes."""

    origin: str
    counter: int
    op: Op
    conn: Conn


@dataclass(slots=True)
class _Origin:
    counter: int = 0  # last counter applied from this origin
    synced: bool = False  # a snapshot (or our own start) established its state


class PresenceState:
    def __init__(self, self_id: str) -> None:
        self.self_id = self_id
        # room -> user -> conn id -> Conn
        self._rooms: dict[str, dict[str, dict[str, Conn]]] = {}
        # origin node -> conn id -> set of rooms, for purges and snapshots
        # origin node -> conn id -> its room (a str: the common case of one room, no set
        # to keep: a set costs ~220 bytes per connection on every node) or set of rooms
        self._by_node: dict[str, dict[str, str | set[str]]] = {}
        self._origins: dict[str, _Origin] = {self_id: _Origin(0, True)}
        self._index: dict[tuple[str, str], Conn] = {}  # (room, conn id) -> entry
        # (room, user) -> that user's part of the room's member list, encoded; built when a
        # list first needs it, dropped when the user's connections in the room change
        self._user_json: dict[tuple[str, str], bytes] = {}
        self._conn_counts: dict[str, int] = {}  # room -> connections (kept, not summed)

    # -- local changes -----------------------------------------------------------------

    def track(self, conn: Conn) -> tuple[Delta, list[Transition]]:
        """A local connection joined a room: returns the delta to broadcast."""
        origin = self._origins[self.self_id]
        origin.counter += 1
        return Delta(self.self_id, origin.counter, Op.JOIN, conn), self._add(conn)

    def untrack(self, room: str, conn_id: str) -> tuple[Delta, list[Transition]] | None:
        """A local connection left a room (or closed)."""
        existing = self._find(room, conn_id)
        if existing is None:
            return None
        origin = self._origins[self.self_id]
        origin.counter += 1
        return Delta(self.self_id, origin.counter, Op.LEAVE, existing), self._remove(existing)

    @property
    def counter(self) -> int:
        return self._origins[self.self_id].counter

    # -- remote changes ----------------------------------------------------------------

    def apply_delta(self, d: Delta) -> tuple[list[Transition], bool]:
        """Apply a delta from another node; returns (transitions, need_sync)."""
        if d.origin == self.self_id:
            return [], False
        o = self._origins.setdefault(d.origin, _Origin())
        if d.counter <= o.counter:
            return [], False  # already applied (a snapshot covered it)
        if not o.synced or d.counter != o.counter + 1:
            return [], True
        o.counter = d.counter
        if d.op is Op.JOIN:
            return self._add(d.conn), False
        entry = self._find(d.conn.room, d.conn.conn)
        return (self._remove(entry) if entry is not None else []), False

    def apply_snapshot(self, origin: str, counter: int, conns: Iterable[Conn]) -> list[Transition]:
        """Replace everything known of ``origin`` with its snapshot taken at ``counter``."""
        if origin == self.self_id:
            return []
        o = self._origins.setdefault(origin, _Origin())
        if o.synced and counter < o.counter:
            return []  # older than what we have
        wanted = {(c.room, c.conn): c for c in conns}
        have = {(room, cid): self._find(room, cid)
                for cid, rooms in self._by_node.get(origin, {}).items()
                for room in _each(rooms)}
        out: list[Transition] = []
        for key, entry in have.items():
            if key not in wanted and entry is not None:
                out += self._remove(entry)
        for key, c in wanted.items():
            if key not in have:
                out += self._add(c)
        o.counter = counter
        o.synced = True
        return out

    def purge_node(self, origin: str) -> list[Transition]:
        """``origin`` is dead: remove all its connections."""
        out: list[Transition] = []
        for cid, rooms in list(self._by_node.get(origin, {}).items()):
            for room in list(_each(rooms)):
                entry = self._find(room, cid)
                if entry is not None:
                    out += self._remove(entry)
        self._by_node.pop(origin, None)
        self._origins.pop(origin, None)
        return out

    def forget_origin_sync(self, origin: str) -> None:
        """Mark ``origin`` as needing a snapshot before its deltas apply again."""
        if origin != self.self_id and origin in self._origins:
            self._origins[origin].synced = False

    # -- room-scoped presence (presence/scoped.py: it orders records itself) --------------

    def next_counter(self) -> int:
        """A new counter value of our own, for a record that is not a join or a leave."""
        origin = self._origins[self.self_id]
        origin.counter += 1
        return origin.counter

    def apply_join(self, c: Conn) -> list[Transition]:
        """Add another node's connection (room-scoped presence decides the order)."""
        return self._add(c)

    def apply_leave(self, room: str, conn_id: str) -> list[Transition]:
        entry = self._find(room, conn_id)
        return self._remove(entry) if entry is not None else []

    def drop_room(self, room: str) -> None:
        """Forget a room this node no longer follows: no transitions (no member here)."""
        for conns in list(self._rooms.get(room, {}).values()):
            for c in list(conns.values()):
                self._remove(c)

    # -- queries -----------------------------------------------------------------------

    def snapshot_of(self, origin: str) -> list[Conn]:
        return [c for cid, rooms in self._by_node.get(origin, {}).items() for room in _each(rooms)
                if (c := self._find(room, cid)) is not None]

    def members(self, room: str) -> dict[str, list[dict[str, Any]]]:
        """user -> list of that user's connections in ``room``."""
        return {user: [c.meta() for c in conns.values()]
                for user, conns in self._rooms.get(room, {}).items()}

    def members_json(self, room: str) -> bytes:
        """:meth:`members` as JSON (each user's first ``LIST_CONNS_PER_USER`` connections:
        a user with thousands of tabs must not ride on every join), assembled from each user's part, encoded once and kept
        (extended on a join, dropped on a leave) while that user is in the room: every join
        and resume carries the room's list, and a resume storm asks for it once per client."""
        cache = self._user_json
        parts = []
        for user, conns in self._rooms.get(room, {}).items():
            part = cache.get((room, user))
            if part is None:
                part = cache[(room, user)] = b"%s:[%s]" % (_enc(user), b",".join(
                    [_enc(c.meta()) for c in itertools.islice(conns.values(),
                                                              LIST_CONNS_PER_USER)]))
            parts.append(part)
        return b"{%s}" % b",".join(parts)

    def has_conn(self, room: str, conn_id: str) -> bool:
        return (room, conn_id) in self._index

    def first_conn(self, room: str, user: str) -> Conn | None:
        """One of ``user``'s connections in ``room`` (the oldest), None if they are not in it."""
        conns = self._rooms.get(room, {}).get(user)
        return next(iter(conns.values())) if conns else None

    def user_count(self, room: str) -> int:
        return len(self._rooms.get(room, ()))

    def conn_count(self, room: str) -> int:
        return self._conn_counts.get(room, 0)

    def rooms(self) -> dict[str, tuple[int, int]]:
        """room -> (users, connections)."""
        return {room: (len(users), sum(len(c) for c in users.values()))
                for room, users in self._rooms.items()}

    def user(self, user: str) -> list[Conn]:
        return [c for users in self._rooms.values() for c in users.get(user, {}).values()]

    def origin_of(self, conn_id: str) -> str | None:
        """The node holding connection ``conn_id``, if it is in any room."""
        for node, conns in self._by_node.items():
            if conn_id in conns:
                return node
        return None

    def size(self) -> tuple[int, int]:
        """(rooms, entries) held: the memory presence costs this node."""
        return len(self._rooms), len(self._index)

    def nodes(self) -> dict[str, int]:
        """origin -> connection count (distinct connections)."""
        return {node: len(conns) for node, conns in self._by_node.items()}

    # -- internals ---------------------------------------------------------------------

    def _find(self, room: str, conn_id: str) -> Conn | None:
        return self._index.get((room, conn_id))

    def _add(self, c: Conn) -> list[Transition]:
        users = self._rooms.setdefault(c.room, {})
        conns = users.setdefault(c.user, {})
        first = not conns
        if c.conn in conns:
            return []
        conns[c.conn] = c
        self._index[(c.room, c.conn)] = c
        key = (c.room, c.user)
        self._conn_counts[c.room] = self._conn_counts.get(c.room, 0) + 1
        part = self._user_json.get(key)
        if part is not None and len(conns) <= LIST_CONNS_PER_USER:
            # Extend the user's kept part (it lists the connections in insertion order, as
            # the dict does) instead of re-encoding all of them: a resume storm adds a
            # user's connections one by one and asks for the list after each. (A full part,
            # LIST_CONNS_PER_USER connections, stays as it is.)
            self._user_json[key] = b"%s,%s]" % (part[:-1], _enc(c.meta()))
        node_conns = self._by_node.setdefault(c.node, {})
        rooms = node_conns.get(c.conn)
        if rooms is None:
            node_conns[c.conn] = c.room
        elif isinstance(rooms, str):
            node_conns[c.conn] = {rooms, c.room}
        else:
            rooms.add(c.room)
        return [Transition(Op.JOIN, c.room, c.user, c)] if first else []

    def _remove(self, c: Conn) -> list[Transition]:
        users = self._rooms.get(c.room)
        if not users or c.user not in users or c.conn not in users[c.user]:
            return []
        conns = users[c.user]
        del conns[c.conn]
        self._conn_counts[c.room] -= 1
        self._index.pop((c.room, c.conn), None)
        self._user_json.pop((c.room, c.user), None)
        node_conns = self._by_node.get(c.node, {})
        rooms = node_conns.get(c.conn)
        if rooms == c.room:
            del node_conns[c.conn]
        elif isinstance(rooms, set):
            rooms.discard(c.room)
            if len(rooms) == 1:
                node_conns[c.conn] = next(iter(rooms))
        if conns:
            return []
        del users[c.user]
        if not users:
            del self._rooms[c.room]
            del self._conn_counts[c.room]
        return [Transition(Op.LEAVE, c.room, c.user, c)]
