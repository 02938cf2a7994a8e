"""The operators' NATS request/reply interface to presence (``docs/admin.md``).

Every node subscribes to ``roomcast.admin.>`` in one queue group; whichever node NATS picks
answers from its cluster-wide view, so any node can answer any question.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import msgspec
from nats.aio.msg import Msg
from roomcast.backplane import subjects

if TYPE_CHECKING:
    from roomcast.presence.tracker import PresenceTracker

_enc = msgspec.json.Encoder()


def answer(tracker: PresenceTracker, subject: str, payload: bytes) -> dict:
    """The reply to one admin request (pure apart from reading the tracker)."""
    rest = subject[len(subjects.ADMIN_PREFIX):]
    state = tracker.state
    base = {"answered_by": tracker.instance, "ts": int(time.time() * 1000)}
    if rest.startswith("presence."):
        room = rest[len("presence."):]
        members = state.members(room)
        return {**base, "room": room, "users": len(members),
                "connections": sum(len(v) for v in members.values()), "members": members}
    if rest == "rooms":
        return {**base, "rooms": {room: {"users": u, "connections": c}
                                  for room, (u, c) in sorted(state.rooms().items())}}
    if rest == "nodes":
        return {**base, "nodes": tracker.live_nodes()}
    if rest == "user" or rest.startswith("user."):
        user = rest[len("user."):] if rest.startswith("user.") else _user_from(payload)
        if not user:
            return {**base, "error": "name the user: roomcast.admin.user.<user> or {\"user\": …}"}
        conns = state.user(user)
        return {**base, "user": user, "connections": [
            {"room": c.room, **c.meta()} for c in sorted(conns, key=lambda c: (c.room, c.conn))]}
    return {**base, "error": f"unknown admin request {rest!r}; see docs/admin.md"}


def _user_from(payload: bytes) -> str | None:
    try:
        value = json.loads(payload or b"{}").get("user")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


class AdminService:
    def __init__(self, nc, tracker: PresenceTracker) -> None:
        self.nc = nc
        self.tracker = tracker
        self._sub = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(subjects.ADMIN_PREFIX + ">",
                                            queue=subjects.ADMIN_QUEUE, cb=self._handle)

    async def _handle(self, msg: Msg) -> None:
        if msg.reply:
            await msg.respond(_enc.encode(answer(self.tracker, msg.subject, msg.data)))

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()


async def query(nats_urls: list[str], what: str, arg: str | None = None,
                wait: float = 5.0) -> dict:
    """Ask the cluster (used by ``roomcast admin``)."""
    import nats

    nc = await nats.connect(nats_urls, max_reconnect_attempts=1, reconnect_time_wait=0.1,
                            connect_timeout=2)
    try:
        subject = subjects.ADMIN_PREFIX + what + (f".{arg}" if arg else "")
        msg = await nc.request(subject, b"", timeout=wait)
        return json.loads(msg.data)
    finally:
        await nc.close()
