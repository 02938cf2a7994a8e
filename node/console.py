"""The operator console's questions and actions (``POST /admin/<what>`` on the internal port,
behind the API key; the page is ``GET /console``, docs/admin.md).

``stats``: every node's counters, gathered over ``roomcast.ctl.stats`` (the page turns them into
deliveries/s, publishes/s and event-loop lag); ``drain``: ask one node to drain, as SIGTERM
would; ``rooms``, ``nodes``, ``presence/<room>``, ``user``: the admin answers of
``roomcast.admin.*`` (docs/admin.md), from this node's copy of the cluster's presence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from roomcast.backplane import subjects
from roomcast.node.control import ControlRequest
from roomcast.presence import admin

if TYPE_CHECKING:
    from roomcast.node.server import Node

JSON = "application/json"


def _error(status: int, code: str, message: str) -> tuple[int, str, bytes]:
    return status, JSON, msgspec.json.encode({"error": {"code": code, "message": message}})


class _Drain(msgspec.Struct):
    node: str


async def answer(node: Node, what: str, body: bytes) -> tuple[int, str, bytes]:
    control = node.control
    assert control is not None
    if what == "stats":
        nodes = await control.gather("stats", ControlRequest())
        return 200, JSON, msgspec.json.encode({"nodes": sorted(nodes, key=lambda n: n["node"])})
    if what == "drain":
        try:
            req = msgspec.json.decode(body or b"{}", type=_Drain)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return _error(400, "bad_request", str(exc)[:200])
        drained, _ = await control.scatter("drain", ControlRequest(node=req.node))
        if not drained:
            return _error(404, "not_found", f"no node {req.node[:80]!r} answered")
        return 200, JSON, msgspec.json.encode({"draining": req.node})
    if node.presence is None:
        return _error(503, "unavailable", "presence is off on this node")
    parts = what.split("/", 1)
    if parts[0] not in ("rooms", "nodes", "presence", "user"):
        return _error(404, "unknown_method", f"unknown admin request {what[:40]!r}")
    subject = subjects.ADMIN_PREFIX + parts[0] + (f".{parts[1]}" if len(parts) > 1 else "")
    if len(parts) > 1 and not subjects.valid_tokens(parts[1]):
        return _error(400, "bad_room", f"invalid name {parts[1][:80]!r}")
    reply = admin.answer(node.presence, subject, body)
    return (400 if "error" in reply else 200), JSON, msgspec.json.encode(reply)
