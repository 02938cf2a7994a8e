"""One client's protocol logic, free of I/O (``docs/protocol.md`` §3-§5).

:class:`Peer` turns each raw client frame into a list of actions — frames to send, backplane
work to do, or a close — and :mod:`roomcast.node.connection` carries them out. Validation,
permissions, room limits and flood control all live here, so they are unit-tested by feeding
bytes in and reading actions out.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from roomcast import protocol as p
from roomcast.auth import Identity
from roomcast.protocol import CloseCode, ErrorCode

# Actions are msgspec Structs, not frozen dataclasses: one or more is made per client frame,
# and a frozen dataclass costs ~1 µs to construct against ~0.1 µs.


class Send(msgspec.Struct, frozen=True):
    frame: bytes


class DoJoin(msgspec.Struct, frozen=True):
    room: str
    rid: p.Rid
    since: int | None
    epoch: str | None


class DoLeave(msgspec.Struct, frozen=True):
    room: str
    rid: p.Rid


class DoPublish(msgspec.Struct, frozen=True):
    room: str
    rid: p.Rid
    client_id: str | None
    dedupe_id: str
    body: bytes


class DoResume(msgspec.Struct, frozen=True):
    token: str
    positions: dict[str, int]
    rid: p.Rid


class DoHistory(msgspec.Struct, frozen=True):
    room: str
    rid: p.Rid
    before: int | None
    after: int | None
    limit: int


class DoRefresh(msgspec.Struct, frozen=True):
    token: str
    rid: p.Rid


class Close(msgspec.Struct, frozen=True):
    code: CloseCode
    reason: str


Action = Send | DoJoin | DoLeave | DoPublish | DoResume | DoHistory | DoRefresh | Close


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` banked."""

    __slots__ = ("rate", "burst", "tokens", "last")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.last = now

    def take(self, now: float) -> bool:
        elapsed = now - self.last
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(frozen=True, slots=True)
class PeerLimits:
    max_rooms: int = 100
    rate_limit: float = 200.0
    rate_burst: int = 400
    flood_close_after: int = 100
    #: Whether only the application's backend may publish to a room (namespace option
    #: ``publish = "backend"``, docs/namespaces.md); None: clients may everywhere.
    backend_only: Callable[[str], bool] | None = None


#: Rooms a connection remembers as checked for publishing (cleared when full).
MAY_PUBLISH_CACHE = 64


def user_dedupe_id(user: str, msg_id: str) -> str:
    """The ``Nats-Msg-Id`` of a client publish with its own ``id`` (docs/protocol.md §2.1).

    A hash of the JSON array ``[user, id]``: an unambiguous encoding of the pair (no
    separator either part could contain), never altered (no trimming), the same on every node
    so a retry through another node is still recognised. ``u1.`` keeps these apart from
    :func:`auto_dedupe_id`, which no user-chosen id can produce.
    """
    digest = hashlib.blake2b(msgspec.json.encode([user, msg_id]), digest_size=18).digest()
    return "u1." + base64.urlsafe_b64encode(digest).decode()


def auto_dedupe_id(conn_id: str, n: int) -> str:
    """The ``Nats-Msg-Id`` of the ``n``-th publish without ``id`` on connection ``conn_id``
    (server-generated, unique in the cluster; distinct from every :func:`user_dedupe_id`)."""
    return f"a.{conn_id}.{n}"


class Peer:
    """Protocol state of one authenticated connection."""

    __slots__ = ("identity", "conn_id", "limits", "user_json", "rooms", "_bucket",
                 "_rejected_in_a_row", "_auto_id", "_may_publish")

    def __init__(self, identity: Identity, conn_id: str, limits: PeerLimits, now: float) -> None:
        self.identity = identity
        self.conn_id = conn_id
        self.limits = limits
        self.user_json = msgspec.json.encode(identity.user)
        self.rooms: set[str] = set()
        self._bucket = TokenBucket(limits.rate_limit, limits.rate_burst, now)
        self._rejected_in_a_row = 0
        self._auto_id = 0
        self._may_publish: set[str] | None = None  # rooms that passed the publish checks

    def handle(self, raw: bytes | str, now: float) -> list[Action]:
        """Process one client frame received at ``now`` (monotonic seconds)."""
        try:
            frame = p.decode_client_frame(raw)
        except p.FrameError as exc:
            frame, rid, error = None, exc.rid, exc
        else:
            rid, error = frame.rid, None
        if not self._bucket.take(now):
            self._rejected_in_a_row += 1
            if self._rejected_in_a_row >= self.limits.flood_close_after:
                return [Close(CloseCode.FLOOD, "flood")]
            return [Send(p.error(ErrorCode.RATE_LIMITED, "too many frames; slow down", rid))]
        self._rejected_in_a_row = 0
        if error is not None:
            return [Send(p.error(error.code, error.message, error.rid))]
        if isinstance(frame, p.Publish):
            return self._publish(frame)
        if isinstance(frame, p.Join):
            return self._join(frame)
        if isinstance(frame, p.Leave):
            return self._leave(frame)
        if isinstance(frame, p.Resume):
            return self._resume(frame)
        if isinstance(frame, p.History):
            return self._history(frame)
        if isinstance(frame, p.Refresh):
            return [DoRefresh(frame.token, frame.rid)]
        return [Send(p.pong(frame.rid))]

    # -- handlers --------------------------------------------------------------------

    def _check_room(self, room: str, rid: p.Rid) -> list[Action] | None:
        if not p.valid_room(room):
            return [Send(p.error(ErrorCode.BAD_ROOM, "invalid room name", rid, room[:200]))]
        return None

    def _join(self, f: p.Join) -> list[Action]:
        if (bad := self._check_room(f.room, f.rid)) is not None:
            return bad
        if not self.identity.permissions.can_subscribe(f.room):
            return [Send(p.error(ErrorCode.FORBIDDEN, "not allowed to join this room",
                                 f.rid, f.room))]
        if f.since is not None and f.since < 0:
            return [Send(p.error(ErrorCode.BAD_FRAME, "since must be >= 0", f.rid, f.room))]
        if f.room in self.rooms:
            # Idempotent; with ``since`` it replays what was missed (the client saw a gap).
            return [DoJoin(f.room, f.rid, f.since, f.epoch)]
        if len(self.rooms) >= self.limits.max_rooms:
            return [Send(p.error(ErrorCode.TOO_MANY_ROOMS,
                                 f"at most {self.limits.max_rooms} rooms per connection",
                                 f.rid, f.room))]
        self.rooms.add(f.room)
        return [DoJoin(f.room, f.rid, f.since, f.epoch)]

    def _history(self, f: p.History) -> list[Action]:
        if (bad := self._check_room(f.room, f.rid)) is not None:
            return bad
        if not self.identity.permissions.can_subscribe(f.room):
            return [Send(p.error(ErrorCode.FORBIDDEN, "not allowed to read this room",
                                 f.rid, f.room))]
        return [DoHistory(f.room, f.rid, f.before, f.after, f.limit)]

    def replace_identity(self, identity: Identity) -> list[str]:
        """A ``refresh`` brought a newer token for the same user: use it from now on. Returns
        the joined rooms it no longer allows (the caller leaves them)."""
        self.identity = identity
        self._may_publish = None
        gone = sorted(r for r in self.rooms if not identity.permissions.can_subscribe(r))
        self.rooms.difference_update(gone)
        return gone

    def _resume(self, f: p.Resume) -> list[Action]:
        if len(f.rooms) > self.limits.max_rooms:
            return [Send(p.error(ErrorCode.TOO_MANY_ROOMS,
                                 f"at most {self.limits.max_rooms} rooms per connection", f.rid))]
        if any(not p.valid_room(r) or s < 0 for r, s in f.rooms.items()):
            return [Send(p.error(ErrorCode.BAD_FRAME, "rooms must map room names to seq >= 0",
                                 f.rid))]
        return [DoResume(f.token, f.rooms, f.rid)]

    def resume_rooms(self, rooms: tuple[str, ...]) -> list[str]:
        """Which of a resume token's rooms this connection may re-join now."""
        allowed = [r for r in rooms if p.valid_room(r)
                   and self.identity.permissions.can_subscribe(r)]
        room_budget = self.limits.max_rooms - len(self.rooms)
        joined = [r for r in allowed if r in self.rooms]  # e.g. the token's rooms (§1)
        allowed = [r for r in allowed if r not in self.rooms][:max(0, room_budget)]
        self.rooms.update(allowed)
        return joined + allowed

    def join_failed(self, room: str) -> None:
        """The connection could not carry out a :class:`DoJoin`."""
        self.rooms.discard(room)

    def _leave(self, f: p.Leave) -> list[Action]:
        if f.room not in self.rooms:
            return [Send(p.error(ErrorCode.NOT_JOINED, "not joined to this room", f.rid,
                                 f.room[:200]))]
        self.rooms.discard(f.room)
        return [DoLeave(f.room, f.rid)]

    def _publish(self, f: p.Publish) -> list[Action]:
        allowed = self._may_publish
        if allowed is None or f.room not in allowed:
            if (bad := self._check_room(f.room, f.rid)) is not None:
                return bad
            if not self.identity.permissions.can_publish(f.room):
                return [Send(p.error(ErrorCode.FORBIDDEN, "not allowed to publish to this room",
                                     f.rid, f.room))]
            if self.limits.backend_only is not None and self.limits.backend_only(f.room):
                return [Send(p.error(ErrorCode.FORBIDDEN, "only the application's backend "
                                     "publishes to this room", f.rid, f.room))]
            # Remember it: a publisher sends to the same few rooms over and over (the checks
            # are a regex and the permission patterns, per publish otherwise).
            if allowed is None or len(allowed) >= MAY_PUBLISH_CACHE:
                allowed = self._may_publish = set()
            allowed.add(f.room)
        if f.id is not None:
            if not f.id.isprintable():
                return [Send(p.error(ErrorCode.BAD_FRAME, "id must be printable", f.rid,
                                     f.room))]
            dedupe = user_dedupe_id(self.identity.user, f.id)
        else:
            self._auto_id += 1
            dedupe = auto_dedupe_id(self.conn_id, self._auto_id)
        return [DoPublish(f.room, f.rid, f.id, dedupe, bytes(f.data))]
