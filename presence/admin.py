"""The operators' NATS request/reply interface to presence (``docs/admin.md``).

Every node subscribes to ``roomcast.admin.>`` in one queue group; whichever node NATS picks
answers from its cluster-wide view, so any node can answer any question. Under room-scoped
presence (``--presence-scope rooms``) no node has that view: a room's members come from memory
or the ``PRESENCE_STATE`` stream, and ``rooms`` and ``user`` ask every live node.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING

import msgspec
from nats.aio.msg import Msg

from roomcast.backplane import scatter, subjects
from roomcast.backplane.natsclient import unsubscribe_quietly
from roomcast.errors import ConfigError
from roomcast.protocol import MAX_DEPTH, too_deep

if TYPE_CHECKING:
    from roomcast.presence.tracker import PresenceTracker

_enc = msgspec.json.Encoder()
log = logging.getLogger("roomcast.presence.admin")


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
        if rest.startswith("user."):
            user = rest[len("user."):]
        else:
            user, problem = _user_from(payload)
            if problem:
                return {**base, "error": problem}
        if not user:
            return {**base, "error": "name the user: roomcast.admin.user.<user> or {\"user\": …}"}
        conns = state.user(user)
        return {**base, "user": user, "connections": [
            {"room": c.room, **c.meta()} for c in sorted(conns, key=lambda c: (c.room, c.conn))]}
    return {**base, "error": f"unknown admin request {rest!r}; see docs/admin.md"}


async def answer_scoped(tracker, subject: str, payload: bytes) -> dict:
    """The reply under room-scoped presence (presence/scoped.py): a room's members come from
    memory or the stream, ``rooms`` and ``user`` from every live node (scatter-gather)."""
    rest = subject[len(subjects.ADMIN_PREFIX):]
    base = {"answered_by": tracker.instance, "ts": int(time.time() * 1000)}
    if rest.startswith("presence.") and subjects.valid_tokens(rest[len("presence."):]):
        room = rest[len("presence."):]
        members = await tracker.room_members(room)
        return {**base, "room": room, "users": len(members),
                "connections": sum(len(v) for v in members.values()), "members": members}
    if rest == "rooms":
        answers, missing = await gather(tracker, "rooms")
        rooms: dict[str, dict] = {}
        for a in answers:
            for room, (users, conns) in a.get("rooms", {}).items():
                seen = rooms.get(room)
                if seen is None or (users, conns) > (seen["users"], seen["connections"]):
                    rooms[room] = {"users": users, "connections": conns}
        out = {**base, "rooms": dict(sorted(rooms.items()))}
        if missing:
            out["nodes_not_answering"] = missing
        return out
    if rest == "user" or rest.startswith("user."):
        user, problem = ((rest[len("user."):], None) if rest.startswith("user.")
                         else _user_from(payload))
        if problem or not user:
            return answer(tracker, subject, payload)  # the same errors as the full map's
        answers, missing = await gather(tracker, "user", _enc.encode({"user": user}))
        conns = [c for a in answers for c in a.get("connections", [])]
        out = {**base, "user": user,
               "connections": sorted(conns, key=lambda c: (c["room"], c["conn"]))}
        if missing:
            out["nodes_not_answering"] = missing
        return out
    return answer(tracker, subject, payload)


#: Seconds a scatter-gather waits for every live node.
ASK_WAIT = 2.0


async def answer_ask(tracker, msg) -> None:
    """One node's part of a scatter-gather (room-scoped presence): the rooms it follows with
    their counts, or the connections of a user that it holds."""
    if not msg.reply:
        return
    what = msg.subject[len(subjects.PRESENCE_ASK_PREFIX):]
    state = tracker.state
    body: dict = {"origin": tracker.instance}
    if what == "rooms":
        body["rooms"] = {room: [state.user_count(room), state.conn_count(room)]
                         for room in tracker.followed()}
    elif what == "user":
        user, _ = _user_from(msg.data)
        body["connections"] = [{"room": c.room, **c.meta()} for c in state.user(user or "")
                               if c.node == tracker.instance]
    await msg.respond(_enc.encode(body))


async def gather(tracker, what: str, payload: bytes = b"") -> tuple[list[dict], int]:
    """Every live node's answer (ours too) to ``roomcast.presence.ask.<what>``: (answers, how
    many nodes did not answer within ``ASK_WAIT``)."""
    want = len(tracker.live_nodes())
    answers = await scatter.gather(tracker.nc, subjects.PRESENCE_ASK_PREFIX + what, payload,
                                   expected=want, wait=ASK_WAIT)
    return answers, max(0, want - len(answers))


class _UserRequest(msgspec.Struct):
    user: str | None = None


_dec_user = msgspec.json.Decoder(_UserRequest)


def _user_from(payload: bytes) -> tuple[str | None, str | None]:
    """(user, None) from a ``{"user": …}`` payload, or (None, why it is unreadable): not
    JSON, not an object, a non-string ``user``, or nested deeper than the protocol allows."""
    try:
        if too_deep(payload or b""):  # over-counts brackets of invalid JSON: still an error
            raise RecursionError
        value = _dec_user.decode(payload or b"{}")
    except RecursionError:
        return None, f"payload nested deeper than {MAX_DEPTH} levels"
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return None, f"unreadable payload: {str(exc)[:200]}"
    return value.user, None


class AdminService:
    def __init__(self, nc, tracker: PresenceTracker) -> None:
        self.nc = nc
        self.tracker = tracker
        self._sub = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(subjects.ADMIN_PREFIX + ">",
                                            queue=subjects.ADMIN_QUEUE, cb=self._handle)

    async def _handle(self, msg: Msg) -> None:
        if not msg.reply:
            return
        try:
            reply = (await answer_scoped(self.tracker, msg.subject, msg.data)
                     if self.tracker.scoped else answer(self.tracker, msg.subject, msg.data))
        except Exception:  # noqa: BLE001 - every request gets an answer, never silence
            log.exception("admin request %s failed", msg.subject[:120])
            reply = {"answered_by": self.tracker.instance, "ts": int(time.time() * 1000),
                     "error": "internal error"}
        await msg.respond(_enc.encode(reply))

    async def close(self) -> None:
        await unsubscribe_quietly(self._sub)


async def query(nats_urls: list[str], what: str, arg: str | None = None,
                wait: float = 5.0, options: dict | None = None) -> dict:
    """Ask the cluster (used by ``roomcast admin``); ``options``: credentials and TLS for
    ``nats.connect`` (``NatsConfig.connect_options``)."""
    import nats

    from roomcast.errors import BackplaneError
    from roomcast.logs import redact

    async def quiet(_exc: Exception) -> None:
        pass  # the failure is reported once, below

    try:
        nc = await nats.connect(nats_urls, max_reconnect_attempts=1, reconnect_time_wait=0.1,
                                connect_timeout=2, error_cb=quiet, **(options or {}))
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        raise BackplaneError("cannot connect to NATS at " + ", ".join(redact(u) for u in nats_urls)
                             + f": {redact(str(exc) or repr(exc))}") from None
    try:
        if arg and not subjects.valid_tokens(arg):
            # Not a valid subject token (a user id with spaces, say): only `user` takes its
            # argument in the payload; anything else cannot name it.
            if what != "user":
                raise ConfigError("room", f"{arg!r} is not a valid room name "
                                  "(docs/protocol.md §2.1)")
            subject, payload = subjects.ADMIN_PREFIX + what, json.dumps({"user": arg}).encode()
        else:
            subject, payload = subjects.ADMIN_PREFIX + what + (f".{arg}" if arg else ""), b""
        try:
            msg = await nc.request(subject, payload, timeout=wait)
        except nats.errors.NoRespondersError:
            raise BackplaneError("no roomcast node answered on NATS (are the nodes running "
                                 "and connected to this NATS?)") from None
        except nats.errors.TimeoutError:
            raise BackplaneError(f"no answer within {wait:g} s from a roomcast node") from None
        return json.loads(msg.data)
    finally:
        await nc.close()
