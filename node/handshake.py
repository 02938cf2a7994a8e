"""The public port's answer to each HTTP request before any upgrade: the browser client's
files, the WebSocket path's checks (duplicate headers, origin, draining, full, the token) and
how a refusal is told — an HTTP status to servers and CLIs, an upgrade closed at once with a
code and reason to browsers, which cannot read a refused upgrade's status
(docs/protocol.md §1)."""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from websockets.http11 import Request, Response

from roomcast.errors import AuthError
from roomcast.node import web
from roomcast.protocol import CloseCode

if TYPE_CHECKING:
    from roomcast.node.server import Node
    from roomcast.node.wsconn import WsConnection

#: The WebSocket path (the only one that upgrades).
WS_PATH = "/ws"


async def process_request(node: Node, conn: WsConnection,
                          request: Request) -> Response | None:
    """Answer a request on the public port: static files (CORS for the allowed origins), 404,
    400 for ambiguous headers, a refusal (HTTP for non-browsers, an upgrade then a close code
    for browsers), or None: upgrade, with ``conn.identity`` set."""
    url = urlsplit(request.path)
    path = url.path
    if path in web.STATIC:
        origins, hosts = request.headers.get_all("Origin"), request.headers.get_all("Host")
        allow = (origins[0] if len(origins) == 1 and len(hosts) <= 1
                 and web.origin_allowed(origins[0], hosts[0] if hosts else "",
                                        node.config.allowed_origins) else None)
        return web.static(path, allow_origin=allow)
    if path != WS_PATH:
        return web.text(HTTPStatus.NOT_FOUND, "not found\n")
    for name in ("Authorization", "Origin", "Host"):
        if len(request.headers.get_all(name)) > 1:
            node.metrics.auth_failures.inc()
            return web.text(HTTPStatus.BAD_REQUEST, f"more than one {name} header\n")
    origin = request.headers.get("Origin")
    refusal = await _refusal(node, request, url.query, origin, conn)
    if refusal is None:
        return None
    status, code, reason, extra = refusal
    if origin is None:
        return web.text(status, reason + "\n", extra)
    # A browser cannot read the status of a refused upgrade: it gets the upgrade, then a
    # close with a code and reason it can show (docs/protocol.md §1). No session exists.
    conn.identity = None
    conn.refusal = (code, reason)
    return None


async def _refusal(node: Node, request: Request, query: str, origin: str | None,
                   conn: WsConnection):
    """Why this upgrade is refused, as (HTTP status, close code, reason, headers); or None
    (then ``conn.identity`` holds who it is)."""
    if origin is not None and not web.origin_allowed(origin, request.headers.get("Host", ""),
                                                     node.config.allowed_origins):
        node.metrics.auth_failures.inc()
        return HTTPStatus.FORBIDDEN, CloseCode.ORIGIN_NOT_ALLOWED, "origin not allowed", None
    if node.draining:
        return (HTTPStatus.SERVICE_UNAVAILABLE, CloseCode.NODE_UNAVAILABLE, "node draining",
                None)
    limit = node.config.max_connections
    if limit and len(node.connections) >= limit:
        return HTTPStatus.SERVICE_UNAVAILABLE, CloseCode.NODE_UNAVAILABLE, "node full", None
    try:
        conn.identity = await node.authenticate(web.token_from(request, query))
    except AuthError as exc:
        node.metrics.auth_failures.inc()
        return (HTTPStatus.UNAUTHORIZED, CloseCode.UNAUTHORIZED, exc.reason,
                [("WWW-Authenticate", 'Bearer realm="roomcast"')])
    return None
