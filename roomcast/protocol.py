"""The roomcast wire protocol: frames, error codes and close codes. No I/O here.

Every frame is a JSON object in a WebSocket text frame with a ``type`` field. The contract
for client authors is ``docs/protocol.md``; this module is its executable form. Section
references (``§n``) point into that document.
"""

from __future__ import annotations

import enum
import re
from typing import Annotated

import msgspec

from roomcast.backplane.subjects import valid_tokens

# --------------------------------------------------------------------------------------
# Limits and names (§2)
# --------------------------------------------------------------------------------------

MAX_ROOM_LEN = 200
MAX_ID_LEN = 128
MAX_RID_LEN = 64
#: Largest ``seq`` a client may send (``since``, ``resume`` positions) and largest integer
#: ``rid``: 2^53 - 1, the largest integer every JSON implementation represents exactly (§2.2).
MAX_SEQ = 2**53 - 1
#: Deepest nesting of objects and arrays in a client frame, the frame object included (§2).
MAX_DEPTH = 32


def valid_room(room: str) -> bool:
    """True when ``room`` is a well-formed room name (§2.1): dot-separated tokens of
    letters, digits, ``_`` and ``-``, at most ``MAX_ROOM_LEN`` characters."""
    return valid_tokens(room, MAX_ROOM_LEN)


# --------------------------------------------------------------------------------------
# Error codes (§5) and close codes (§6)
# --------------------------------------------------------------------------------------


class ErrorCode(enum.StrEnum):
    """The ``code`` of an ``error`` frame (§5)."""

    BAD_FRAME = "bad_frame"  # not JSON, not an object, or fields of the wrong type
    UNKNOWN_TYPE = "unknown_type"
    BAD_ROOM = "bad_room"
    FORBIDDEN = "forbidden"
    NOT_JOINED = "not_joined"
    TOO_MANY_ROOMS = "too_many_rooms"
    RATE_LIMITED = "rate_limited"
    PUBLISH_FAILED = "publish_failed"
    UNAVAILABLE = "unavailable"
    BAD_RESUME_TOKEN = "bad_resume_token"
    BAD_TOKEN = "bad_token"  # a ``refresh`` token that is invalid or names another user
    INTERNAL = "internal"

    @property
    def temporary(self) -> bool:
        """Whether retrying the same request later may succeed."""
        return self in _TEMPORARY


_TEMPORARY = frozenset({ErrorCode.RATE_LIMITED, ErrorCode.PUBLISH_FAILED,
                        ErrorCode.UNAVAILABLE, ErrorCode.INTERNAL})


class CloseCode(enum.IntEnum):
    """WebSocket close codes the server uses (§6).

    4000-4499: the client should reconnect (and resume). 4500-4999: it should not
    reconnect with the same credentials.
    """

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    INVALID_DATA = 1007  # sent by websockets itself: a text frame that is not UTF-8
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    SLOW_CONSUMER = 4001
    FLOOD = 4002
    DISCONNECTED = 4003  # by the server API; reconnecting (and resuming) is allowed
    NODE_UNAVAILABLE = 4012  # a browser's upgrade to a full or draining node: try another
    TOKEN_EXPIRED = 4500
    SESSION_RESUMED = 4501
    BANNED = 4502  # by the server API; the session's resume tokens are revoked
    UNAUTHORIZED = 4510  # a browser's upgrade with a refused token (HTTP 401 for others)
    ORIGIN_NOT_ALLOWED = 4511  # a browser page of an origin not allowed (HTTP 403 for others)

    @property
    def reconnect(self) -> bool:
        return self.value < 4500


# --------------------------------------------------------------------------------------
# Client -> server frames (§3)
# --------------------------------------------------------------------------------------

Rid = int | str | None
Seq = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]
_RidWire = (Annotated[int, msgspec.Meta(ge=-MAX_SEQ, le=MAX_SEQ)]
            | Annotated[str, msgspec.Meta(max_length=MAX_RID_LEN)] | None)


class Join(msgspec.Struct, tag="join", tag_field="type"):
    room: str
    rid: _RidWire = None
    since: Seq | None = None
    epoch: str | None = None


class Leave(msgspec.Struct, tag="leave", tag_field="type"):
    room: str
    rid: _RidWire = None


class Publish(msgspec.Struct, tag="publish", tag_field="type"):
    room: str
    data: msgspec.Raw
    id: str | None = None
    rid: _RidWire = None


class Ping(msgspec.Struct, tag="ping", tag_field="type"):
    rid: _RidWire = None


class Resume(msgspec.Struct, tag="resume", tag_field="type"):
    token: str
    rooms: dict[str, Seq] = {}
    rid: _RidWire = None


#: Most messages one client ``history`` request may ask for (§3.6).
HISTORY_LIMIT_MAX = 100
HISTORY_LIMIT_DEFAULT = 50


class History(msgspec.Struct, tag="history", tag_field="type"):
    room: str
    before: Seq | None = None
    after: Seq | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=HISTORY_LIMIT_MAX)] = HISTORY_LIMIT_DEFAULT
    rid: _RidWire = None


class Refresh(msgspec.Struct, tag="refresh", tag_field="type"):
    token: Annotated[str, msgspec.Meta(max_length=16 * 1024)]
    rid: _RidWire = None


ClientFrame = Join | Leave | Publish | Ping | Resume | History | Refresh
CLIENT_TYPES = ("join", "leave", "publish", "ping", "resume", "history", "refresh")

_client_decoder = msgspec.json.Decoder(ClientFrame)


class _Probe(msgspec.Struct):
    type: object = None
    rid: object = None


_probe_decoder = msgspec.json.Decoder(_Probe)


class FrameError(Exception):
    """A client frame could not be decoded; carries the error frame fields (§5)."""

    def __init__(self, code: ErrorCode, message: str, rid: Rid = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.rid = rid


def decode_client_frame(raw: bytes | str) -> ClientFrame:
    """Parse one client frame.

    Raises:
        FrameError: with ``bad_frame`` or ``unknown_type`` and the frame's ``rid`` when it
            could be read.
    """
    try:
        frame = _client_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise _classify(raw, exc) from None
    except RecursionError:
        raise _too_deep() from None
    rid = frame.rid
    if too_deep(raw):
        raise _too_deep(rid)
    if isinstance(frame, Publish) and frame.id is not None and not 0 < len(frame.id) <= MAX_ID_LEN:
        raise FrameError(ErrorCode.BAD_FRAME, f"id must be 1..{MAX_ID_LEN} characters", rid)
    return frame


def _too_deep(rid: Rid = None) -> FrameError:
    return FrameError(ErrorCode.BAD_FRAME, f"JSON nested deeper than {MAX_DEPTH} levels", rid)


_BRACKETS_ONLY = bytes(range(256)).translate(None, b"[]{}")  # every byte but brackets
_SQUARE = bytes.maketrans(b"{}", b"[]")


def too_deep(raw: bytes | str, limit: int = MAX_DEPTH) -> bool:
    """Whether ``raw`` (JSON that parsed) nests objects and arrays more than ``limit`` levels.

    Only a frame with more than ``limit`` opening brackets can be that deep, so almost every
    frame costs two ``count`` calls. Otherwise strings are cut out (brackets in text do not
    nest), the brackets kept, and innermost ``[]`` pairs peeled pass by pass: at most
    ``limit`` C-speed passes, whatever the frame's size. Worst case, a 64 KiB frame built
    for it: ~2 ms (docs/protocol.md §2).
    """
    if isinstance(raw, str):
        raw = raw.encode()
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    return _peel_exceeds(_outside_strings(raw).translate(_SQUARE, _BRACKETS_ONLY), limit)


def _outside_strings(raw: bytes) -> bytes:
    """The bytes of valid JSON ``raw`` that are not inside strings. Escaped backslashes, then
    escaped quotes, are dropped first (outside strings valid JSON has no backslash), so each
    remaining quote opens or closes a string: every second part of a split is inside one."""
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    return b"".join(raw.split(b'"')[::2])


_PAIR = re.compile(rb"\[\]")


def _peel_exceeds(brackets: bytes, limit: int) -> bool:
    for _ in range(limit):
        if not brackets:
            return False
        brackets = _PAIR.sub(b"", brackets)
    return bool(brackets)


def _classify(raw: bytes | str, exc: Exception) -> FrameError:
    """Explain why a frame failed to decode (slow path, only on errors)."""
    try:
        probe = _probe_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return FrameError(ErrorCode.BAD_FRAME, "frame is not a JSON object")
    except RecursionError:
        return _too_deep()
    rid = probe.rid if isinstance(probe.rid, (int, str)) and not isinstance(probe.rid, bool) else None
    if isinstance(rid, str) and len(rid) > MAX_RID_LEN:
        rid = None
    if isinstance(rid, int) and abs(rid) > MAX_SEQ:
        rid = None
    if not isinstance(probe.type, str):
        return FrameError(ErrorCode.BAD_FRAME, "missing string field 'type'", rid)
    if probe.type not in CLIENT_TYPES:
        return FrameError(ErrorCode.UNKNOWN_TYPE, f"unknown frame type {probe.type[:32]!r}", rid)
    return FrameError(ErrorCode.BAD_FRAME, str(exc)[:200], rid)


# --------------------------------------------------------------------------------------
# Server -> client frames (§4)
# --------------------------------------------------------------------------------------

_encode = msgspec.json.Encoder().encode


def encode(obj: dict) -> bytes:
    """Encode a server frame (a dict with ``type``) as JSON bytes."""
    return _encode(obj)


def _with_rid(frame: dict, rid: Rid) -> dict:
    if rid is not None:
        frame["rid"] = rid
    return frame


def welcome(*, node: str, conn: str, user: str, epoch: str, max_frame: int,
            ping_interval: float | None, resume_token: str | None = None, exp: float,
            rooms: dict[str, dict] | None = None) -> bytes:
    frame = {"type": "welcome", "node": node, "conn": conn, "user": user, "epoch": epoch,
             "max_frame": max_frame, "ping_interval": ping_interval, "exp": exp}
    if rooms:
        frame["rooms"] = rooms
    if resume_token is not None:
        frame["resume_token"] = resume_token
    return encode(frame)


def joined(room: str, rid: Rid, *, seq: int, recovered: bool | None = None,
           replayed: int = 0, resume_token: str | None = None,
           presence: dict | None = None) -> bytes:
    frame: dict = {"type": "joined", "room": room, "seq": seq}
    if presence is not None:
        frame["presence"] = presence
    if recovered is not None:
        frame["recovered"] = recovered
        frame["replayed"] = replayed
    if resume_token is not None:
        frame["resume_token"] = resume_token
    return encode(_with_rid(frame, rid))


def left(room: str, rid: Rid, resume_token: str | None = None,
         reason: str | None = None) -> bytes:
    frame: dict = {"type": "left", "room": room}
    if reason is not None:
        frame["reason"] = reason
    if resume_token is not None:
        frame["resume_token"] = resume_token
    return encode(_with_rid(frame, rid))


def resumed(rooms: dict[str, dict], rid: Rid, resume_token: str) -> bytes:
    return encode(_with_rid({"type": "resumed", "rooms": rooms, "resume_token": resume_token},
                            rid))


def reconnect(resume_token: str, retry_after_ms: int, reason: str) -> bytes:
    return encode({"type": "reconnect", "resume_token": resume_token,
                   "retry_after_ms": retry_after_ms, "reason": reason})


def ack(room: str, rid: Rid, msg_id: str | None, seq: int, duplicate: bool) -> bytes:
    frame = {"type": "ack", "room": room, "id": msg_id, "seq": seq, "duplicate": duplicate}
    return encode(_with_rid(frame, rid))


def history(room: str, rid: Rid, frames: list[bytes], more: bool) -> bytes:
    """A page of retained ``message`` frames (§4.11), already encoded."""
    return b'{"type":"history","room":%b,"more":%b,"messages":[%b]%b}' % (
        _encode(room), b"true" if more else b"false", b",".join(frames),
        b',"rid":' + _encode(rid) if rid is not None else b"")


def refreshed(rid: Rid, exp: float) -> bytes:
    return encode(_with_rid({"type": "refreshed", "exp": exp}, rid))


def refresh_needed(exp: float) -> bytes:
    return encode({"type": "refresh_needed", "exp": exp})


def pong(rid: Rid) -> bytes:
    return encode(_with_rid({"type": "pong"}, rid))


def error(code: ErrorCode, message: str, rid: Rid = None, room: str | None = None) -> bytes:
    frame: dict = {"type": "error", "code": code.value, "message": message,
                   "temporary": code.temporary}
    if room is not None:
        frame["room"] = room
    return encode(_with_rid(frame, rid))


# --- message frames: one encode per message per node (§4.5) --------------------------


def stored_body(sender: bytes, ts_ms: int, msg_id: str | None, data: bytes) -> bytes:
    """The bytes stored in JetStream for one published message.

    ``sender`` is the JSON-encoded user id (encoded once per connection). The body is a JSON
    object whose fields become the tail of every ``message`` frame built from it.
    """
    enc_id = _encode(msg_id) if msg_id is not None else b"null"
    return b'{"from":%b,"ts":%d,"id":%b,"data":%b}' % (sender, ts_ms, enc_id, data)


def message_frame(room_json: bytes, seq: int, prev: int | None, body: bytes) -> bytes:
    """Build the ``message`` frame for a stored message, once for every local member.

    ``room_json`` is the room name already JSON-encoded; ``body`` is what
    :func:`stored_body` produced. ``prev`` None (sent as ``null``) means "not known": the
    message follows a gap that history could no longer fill (§4.5).
    """
    if prev is None:
        return b'{"type":"message","room":%b,"seq":%d,"prev":null,%b' % (room_json, seq, body[1:])
    return b'{"type":"message","room":%b,"seq":%d,"prev":%d,%b' % (room_json, seq, prev, body[1:])
