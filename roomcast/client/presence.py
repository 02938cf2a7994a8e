"""A client's view of who is in a room, kept from the server's presence frames: pure logic.

``docs/protocol.md`` §4.10: a ``joined`` (or ``resumed``/``welcome.rooms``) entry starts the
view; ``presence_diff`` brings each touched user to their final state (present: in ``joins``,
gone: in ``leaves``); ``presence_count`` means the room is too big to list (``members``
becomes None, counts stay exact); ``presence_state`` replaces the list. ``roomcast.js``
implements the same rule (``applyPresence``); both are property-tested against the server's
batching (tests/unit/test_presence_feed.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RoomPresence:
    """Who is in one room. ``members``: user -> connection entries, or None while the room
    has more users than the server lists (then only ``users``/``connections`` are known)."""

    members: dict[str, list[dict[str, Any]]] | None = field(default_factory=dict)
    users: int = 0
    connections: int = 0

    @classmethod
    def of(cls, summary: dict) -> RoomPresence:
        """From the ``presence`` of ``joined``/``resumed``/``welcome.rooms``."""
        members = summary.get("members")
        return cls(dict(members) if members is not None else None,
                   summary.get("users", 0), summary.get("connections", 0))

    def apply(self, frame: dict) -> tuple[list[str], list[str]]:
        """Apply a ``presence_*`` frame; returns the users it added to and removed from the
        list (empty while the room is counted, not listed, and when its list comes back)."""
        kind = frame.get("type")
        self.users = frame.get("users", self.users)
        self.connections = frame.get("connections", self.connections)
        if kind == "presence_count":
            self.members = None
            return [], []
        if kind == "presence_state":
            old, self.members = self.members, dict(frame.get("members") or {})
            if old is None:
                return [], []  # listed again after counts: nobody is news, the list is
            return ([u for u in self.members if u not in old],
                    [u for u in old if u not in self.members])
        if kind != "presence_diff" or self.members is None:
            return [], []
        members = self.members
        left = [u for u in frame.get("leaves") or {} if members.pop(u, None) is not None]
        joined = []
        for user, conn in (frame.get("joins") or {}).items():
            if user not in members:
                members[user] = [conn]
                joined.append(user)
        return joined, left
