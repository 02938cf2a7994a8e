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
    path, query = split_target(request.path)
    headers = request.headers
    origins, hosts = headers.get_all("Origin"), headers.get_all("Host")
    if path in web.STATIC:
        allow = (origins[0] if len(origins) == 1 and len(hosts) <= 1
                 and web.origin_allowed(origins[0], hosts[0] if hosts else "",
                                        node.config.allowed_origins) else None)
        return web.static(path, allow_origin=allow)
    if path != WS_PATH:
        return web.text(HTTPStatus.NOT_FOUND, "not found\n")
    # get_all, not get: websockets' Headers.get raises and catches KeyError for a missing
    # header, and most upgrades have no Authorization (browsers cannot send one).
    auths = headers.get_all("Authorization")
    for name, values in (("Authorization", auths), ("Origin", origins), ("Host", hosts)):
        if len(values) > 1:
            node.metrics.auth_failures.inc()
            return web.text(HTTPStatus.BAD_REQUEST, f"more than one {name} header\n")
    origin = origins[0] if origins else None
    refusal = await _refusal(node, web.token_from(auths[0] if auths else None, query), origin,
                             hosts[0] if hosts else "", conn)
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


def split_target(target: str) -> tuple[str, str]:
    """A request target's path and query: what ``urlsplit`` answers (property-tested), without
    its work (and its cache of 128 targets, which distinct tokens only churn) for a plain
    ``/path?query``."""
    if (target[:1] == "/" and target[1:2] != "/" and target.isprintable()
            and " " not in target and "#" not in target):
        path, _, query = target.partition("?")
        return path, query
    url = urlsplit(target)
    return url.path, url.query


async def _refusal(node: Node, token: str | None, origin: str | None, host: str,
                   conn: WsConnection):
    """Why this upgrade is refused, as (HTTP status, close code, reason, headers); or None
    (then ``conn.identity`` holds who it is)."""
    if origin is not None and not web.origin_allowed(origin, host, node.config.allowed_origins):
        node.metrics.auth_failures.inc()
        return HTTPStatus.FORBIDDEN, CloseCode.ORIGIN_NOT_ALLOWED, "origin not allowed", None
    if node.draining:
        return (HTTPStatus.SERVICE_UNAVAILABLE, CloseCode.NODE_UNAVAILABLE, "node draining",
                None)
    limit = node.config.max_connections
    if limit and len(node.connections) >= limit:
        return HTTPStatus.SERVICE_UNAVAILABLE, CloseCode.NODE_UNAVAILABLE, "node full", None
    try:
        # Without awaiting unless the key comes from the JWKS (a coroutine less per upgrade).
        conn.identity = node.authenticate_now(token) or await node.authenticate(token)
    except AuthError as exc:
        node.metrics.auth_failures.inc()
        return (HTTPStatus.UNAUTHORIZED, CloseCode.UNAUTHORIZED, exc.reason,
                [("WWW-Authenticate", 'Bearer realm="roomcast"')])
    return None
