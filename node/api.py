"""The server API for application backends over NATS request/reply (``docs/api.md``).

Subjects ``roomcast.api.<method>``, JSON in and out, answered by any node (one queue group).
Backend publishes have the guarantees of client publishes: stored in JetStream before the
reply, ``seq``/``prev`` in the room's one order, idempotent ids (in a namespace of their own).
Request validation (:func:`parse_publish`, :func:`parse_history`) is pure; :class:`ServerApi`
does the I/O.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec
import nats.errors

from roomcast import protocol as p
from roomcast.backplane.natsclient import unsubscribe_quietly
from roomcast.errors import BackplaneError, PublishError
from roomcast.node import history
from roomcast.node.control import ControlRequest

if TYPE_CHECKING:
    from roomcast.node.server import Node

log = logging.getLogger("roomcast.node.api")

API_PREFIX = "roomcast.api."
API_QUEUE = "roomcast-api"
#: The ``from`` of a backend publish that names none.
BACKEND_SENDER = "backend"

Seq = Annotated[int, msgspec.Meta(ge=0, le=p.MAX_SEQ)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=p.MAX_ID_LEN)]


class PublishRequest(msgspec.Struct, forbid_unknown_fields=False):
    room: str
    data: msgspec.Raw
    id: Name | None = None
    sender: Name = msgspec.field(default=BACKEND_SENDER, name="from")


class BroadcastRequest(msgspec.Struct):
    rooms: Annotated[list[str], msgspec.Meta(min_length=1, max_length=1000)]
    data: msgspec.Raw
    id: Name | None = None
    sender: Name = msgspec.field(default=BACKEND_SENDER, name="from")


class HistoryRequest(msgspec.Struct):
    room: str
    before: Seq | None = None
    after: Seq | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=history.LIMIT_MAX)] = history.LIMIT_DEFAULT


class DisconnectRequest(msgspec.Struct):
    user: Name
    conn: Name | None = None
    code: Literal[4003, 4502] | None = None
    ban: bool = False
    reason: Annotated[str, msgspec.Meta(max_length=100)] | None = None


class UnsubscribeRequest(msgspec.Struct):
    user: Name
    room: str


#: The HTTP status of each error code (``bad_request``/``bad_room``: 400).
HTTP_STATUS = {"unknown_method": 404, "publish_failed": 503, "unavailable": 503,
               "internal": 500}


class ApiError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def error(code: str, message: str) -> bytes:
    return msgspec.json.encode({"error": {"code": code, "message": message}})


def decode(kind: type, payload: bytes, max_size: int):
    """Decode one request, or raise :class:`ApiError` (``bad_request``, ``bad_room``)."""
    if len(payload) > max_size:
        raise ApiError("bad_request", f"request larger than {max_size} bytes")
    try:
        if p.too_deep(payload):
            raise RecursionError
        req = msgspec.json.decode(payload or b"{}", type=kind)
    except RecursionError:
        raise ApiError("bad_request", f"JSON nested deeper than {p.MAX_DEPTH} levels") from None
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ApiError("bad_request", str(exc)[:200]) from None
    rooms = req.rooms if hasattr(req, "rooms") else [req.room] if hasattr(req, "room") else []
    for room in rooms:
        if not p.valid_room(room):
            raise ApiError("bad_room", f"invalid room name {room[:80]!r}")
    for value in (getattr(req, "id", None), getattr(req, "sender", None),
                  getattr(req, "user", None), getattr(req, "reason", None)):
        if value is not None and not value.isprintable():
            raise ApiError("bad_request", "id, from, user and reason must be printable")
    return req


def backend_dedupe_id(msg_id: str, room: str | None = None) -> str:
    """``b1.`` + a hash of the id (and the room, for a broadcast): a namespace no client
    publish (``u1.``/``a.``, node/peer.py) can reach."""
    key = [msg_id] if room is None else [msg_id, room]
    digest = hashlib.blake2b(msgspec.json.encode(key), digest_size=18).digest()
    return "b1." + base64.urlsafe_b64encode(digest).decode()


class ServerApi:
    """Answers ``roomcast.api.*`` on one node (all nodes share the queue group)."""

    def __init__(self, nc, node: Node) -> None:
        self.nc = nc
        self.node = node
        self._sub = None
        self._auto = 0

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(API_PREFIX + "*", queue=API_QUEUE, cb=self._on_request)

    async def close(self) -> None:
        await unsubscribe_quietly(self._sub)

    async def _on_request(self, msg) -> None:
        # nats-py runs a subscription's callbacks one after another: each request is served
        # in a task of its own so that many are in flight (a publish waits for its store).
        if msg.reply:
            self.node.spawn(self._serve(msg), inflight=True)

    async def answer(self, method: str, payload: bytes) -> tuple[int, bytes]:
        """Every request gets an answer: the reply, or an error; with the HTTP status that
        the HTTP form of the API answers with (``docs/api.md``)."""
        try:
            return 200, await self.call(method, payload)
        except ApiError as exc:
            return HTTP_STATUS.get(exc.code, 400), error(exc.code, exc.message)
        except Exception:  # noqa: BLE001 - every request gets an answer
            log.exception("api %s failed", method)
            return 500, error("internal", "unexpected server error")

    async def _serve(self, msg) -> None:
        method = msg.subject[len(API_PREFIX):]
        _, reply = await self.answer(method, msg.data)
        try:
            await msg.respond(reply)
        except nats.errors.Error as exc:
            log.info("api reply not sent: %s", exc)

    async def call(self, method: str, payload: bytes) -> bytes:
        """One request; the JSON reply, or :class:`ApiError`."""
        max_size = self.node.config.max_frame
        if method == "publish":
            req = decode(PublishRequest, payload, max_size)
            seq, dup = await self._publish(req.room, req.data, req.id, req.sender, None)
            return msgspec.json.encode({"seq": seq, "duplicate": dup})
        if method == "broadcast":
            req = decode(BroadcastRequest, payload, max_size)
            results: dict[str, dict] = {}
            for room in dict.fromkeys(req.rooms):
                try:
                    seq, dup = await self._publish(room, req.data, req.id, req.sender, room)
                    results[room] = {"seq": seq, "duplicate": dup}
                except ApiError as exc:
                    results[room] = {"error": {"code": exc.code, "message": exc.message}}
            return msgspec.json.encode({"results": results})
        if method == "history":
            return await self._history(decode(HistoryRequest, payload, max_size))
        if method == "disconnect":
            return await self._disconnect(decode(DisconnectRequest, payload, max_size))
        if method == "unsubscribe":
            req = decode(UnsubscribeRequest, payload, max_size)
            removed, nodes = await self.node.control.scatter(
                "unsubscribe", ControlRequest(user=req.user, room=req.room))
            return msgspec.json.encode({"removed": removed, "nodes": nodes})
        raise ApiError("unknown_method", f"unknown method {method[:40]!r}; see docs/api.md")

    async def _disconnect(self, req: DisconnectRequest) -> bytes:
        """Close the user's connections (or one of them) on every node: 4003 (may reconnect
        and resume), or with ``ban`` / ``code`` 4502 the ban close, after revoking the user's
        resume tokens (``node/control.py``)."""
        ban = req.ban or req.code == 4502
        ban_at = None
        if ban:
            try:
                ban_at = await self.node.control.ban(req.user)
            except nats.errors.Error:
                raise ApiError("unavailable", "ban not stored; retry") from None
        code = 4502 if ban else 4003
        closed, nodes = await self.node.control.scatter("disconnect", ControlRequest(
            user=req.user, conn=req.conn, code=code,
            reason=req.reason or ("banned" if ban else "disconnected by the server"),
            ban_at=ban_at))
        return msgspec.json.encode({"closed": closed, "nodes": nodes, "banned": ban})

    async def _publish(self, room: str, data: msgspec.Raw, msg_id: str | None, sender: str,
                       scope: str | None) -> tuple[int, bool]:
        if msg_id is not None:
            dedupe = backend_dedupe_id(msg_id, scope)
        else:
            self._auto += 1
            dedupe = f"a.{self.node.instance}.api.{self._auto}"
        body = p.stored_body(msgspec.json.encode(sender), int(time.time() * 1000), msg_id,
                             bytes(data))
        try:
            res = await self.node.backplane.publish(room, body, dedupe)
        except PublishError:
            raise ApiError("publish_failed",
                           "message not stored; retry with the same id") from None
        return res.seq, res.duplicate

    async def _history(self, req: HistoryRequest) -> bytes:
        """A page of the room's retained messages (``node/history.py``), within what one NATS
        message can carry."""
        max_bytes = max(64 * 1024, (getattr(self.nc, "max_payload", 0) or 1024 * 1024) - 4096)
        try:
            page = await history.read_page(self.node.backplane, req.room, before=req.before,
                                           after=req.after, limit=req.limit,
                                           batch=self.node.config.history_page,
                                           max_bytes=max_bytes)
        except BackplaneError:
            raise ApiError("unavailable", "history not readable right now; retry") from None
        return msgspec.json.encode({"messages": [msgspec.Raw(f) for f in page.frames],
                                    "more": page.more})
