"""Cluster-wide actions of the server API (``disconnect``, ``unsubscribe``; ``docs/api.md``)
and the ban list.

The API node that took a request publishes it on ``roomcast.ctl.<method>``, which **every**
node subscribes to (no queue group); each acts on its own connections and answers with a
count; the API node gathers the answers until every node it knows of (from presence
heartbeats) has answered, or for ``SCATTER_WINDOW`` when it knows of none.

Bans (``disconnect`` with ``ban``) revoke the user's resume tokens issued until then. They are
kept in the JetStream key-value bucket ``ROOMCAST_BANS`` (key: a hash of the user, value: the
ban time), written before the broadcast; every node also takes the ban from the broadcast
itself, before it answers, so a client closed by the ban and resuming elsewhere at once is
refused there. A node reads the whole bucket at start and after every NATS reconnect (it may
have missed broadcasts meanwhile).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from typing import TYPE_CHECKING

import msgspec
import nats.errors
import nats.js.errors

from roomcast.backplane import scatter, subjects
from roomcast.backplane.natsclient import unsubscribe_quietly
from roomcast.protocol import CloseCode

if TYPE_CHECKING:
    from roomcast.node.server import Node

log = logging.getLogger("roomcast.node.control")

#: Seconds the API node waits for answers when it cannot know how many nodes there are (no
#: presence), and at most otherwise.
SCATTER_WINDOW = 0.5
SCATTER_MAX = 3.0


def ban_key(user: str) -> str:
    """A key-value key for ``user`` (keys allow only a few characters; users allow any)."""
    digest = hashlib.blake2b(user.encode(), digest_size=18).digest()
    return base64.urlsafe_b64encode(digest).decode().replace("-", "_").replace("=", "")


class ControlRequest(msgspec.Struct, omit_defaults=True):
    user: str = ""
    node: str | None = None  # ``drain``: the node id or instance to drain
    conn: str | None = None
    room: str | None = None
    code: int | None = None
    reason: str | None = None
    ban_at: float | None = None


class Control:
    """One node's part of the cluster-wide actions and its copy of the ban list."""

    def __init__(self, nc, node: Node) -> None:
        self.nc = nc
        self.node = node
        self._sub = None
        self._bans: dict[str, float] = {}  # ban_key(user) -> ban time (Unix seconds)
        self._kv = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(subjects.CTL_PREFIX + "*", cb=self._on_request)
        await self.load_bans()

    async def close(self) -> None:
        await unsubscribe_quietly(self._sub)

    # -- bans --------------------------------------------------------------------------

    async def _bucket(self):
        if self._kv is None:
            self._kv = await self.nc.jetstream().key_value(subjects.BANS_BUCKET)
        return self._kv

    async def load_bans(self) -> None:
        """Read every ban in the bucket (at start, after a reconnect)."""
        try:
            kv = await self._bucket()
            try:
                keys = await kv.keys()
            except nats.js.errors.NoKeysError:
                return
            for key in keys:
                entry = await kv.get(key)
                self._note_ban(key, float(entry.value.decode()))
        except (nats.errors.Error, ValueError) as exc:
            log.warning("bans not read (%s); they are taken from broadcasts meanwhile", exc)

    def _note_ban(self, key: str, at: float) -> None:
        if at > self._bans.get(key, 0.0):
            self._bans[key] = at

    def revoked(self, user: str, issued_at: float) -> bool:
        """Whether a resume token of ``user`` issued at ``issued_at`` was revoked by a ban."""
        at = self._bans.get(ban_key(user))
        return at is not None and issued_at <= at

    async def ban(self, user: str) -> float:
        """Record a ban of ``user`` now, in the bucket (before the broadcast carries it)."""
        at = time.time()
        kv = await self._bucket()
        await kv.put(ban_key(user), f"{at:.3f}".encode())
        self._note_ban(ban_key(user), at)
        return at

    # -- scatter / gather --------------------------------------------------------------

    async def scatter(self, method: str, req: ControlRequest) -> tuple[int, int]:
        """Ask every node to act; returns (connections acted on, nodes that answered)."""
        answers = await self.gather(method, req)
        return sum(int(a.get("count", 0)) for a in answers), len(answers)

    async def gather(self, method: str, req: ControlRequest) -> list[dict]:
        """Ask every node; returns their answers (JSON objects)."""
        expected = None
        if self.node.presence is not None:
            expected = len(self.node.presence.live_nodes())
        return await scatter.gather(
            self.nc, subjects.CTL_PREFIX + method, msgspec.json.encode(req), expected=expected,
            wait=SCATTER_MAX if expected is not None else SCATTER_WINDOW)

    # -- this node's part -------------------------------------------------------------

    def _users_connections(self, user: str) -> list:
        return [c for c in self.node.connections if c.peer.identity.user == user]

    def disconnect_here(self, user: str, conn_id: str | None, code: int, reason: str) -> int:
        """Close ``user``'s connections on this node (only ``conn_id`` when given); how many."""
        conns = [c for c in self._users_connections(user)
                 if conn_id is None or c.peer.conn_id == conn_id]
        for conn in conns:
            conn.leave_presence()  # now, not after a closing handshake that may never come
            conn.close(CloseCode(code), reason)
        return len(conns)

    async def unsubscribe_here(self, user: str, room: str) -> int:
        """Take ``user``'s connections on this node out of ``room`` (a ``left`` frame each)."""
        conns = [c for c in self._users_connections(user) if room in c.peer.rooms]
        for conn in conns:
            await conn.remove_from(room, "unsubscribed")
        return len(conns)

    async def _on_request(self, msg) -> None:
        if msg.reply:
            self.node.spawn(self._serve(msg))

    async def _serve(self, msg) -> None:
        method = msg.subject[len(subjects.CTL_PREFIX):]
        try:
            req = msgspec.json.decode(msg.data, type=ControlRequest)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        if req.ban_at is not None:
            self._note_ban(ban_key(req.user), req.ban_at)
        answer: dict = {"node": self.node.instance}
        if method == "disconnect" and req.code is not None:
            answer["count"] = self.disconnect_here(req.user, req.conn, req.code, req.reason or "")
        elif method == "unsubscribe" and req.room is not None:
            answer["count"] = await self.unsubscribe_here(req.user, req.room)
        elif method == "stats":
            answer.update(self.node.stats())
        elif method == "drain":
            me = req.node in (self.node.instance, self.node.config.node_id)
            answer["count"] = int(me)
            if me:
                self.node.request_drain()
        else:
            return
        try:
            await msg.respond(msgspec.json.encode(answer))
        except nats.errors.Error as exc:
            log.info("control answer not sent: %s", exc)
