"""The node's plain HTTP answers: text responses, the browser client and demo page, the origin
policy and where the handshake's token is read from. No state; ``node/server.py`` routes."""

from __future__ import annotations

import functools
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Response


def text(status: HTTPStatus, text: str, extra: list[tuple[str, str]] | None = None) -> Response:
    body = text.encode()
    headers = Headers([("Content-Type", "text/plain; charset=utf-8"),
                       ("Content-Length", str(len(body))), *(extra or [])])
    return Response(status.value, status.phrase, headers, body)


STATIC_DIR = Path(__file__).parent / "static"
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/roomcast.js": ("roomcast.js", "text/javascript; charset=utf-8"),
    "/demo.js": ("demo.js", "text/javascript; charset=utf-8"),
}


#: The operator console, served on the internal port only.
CONSOLE = {
    "/console": ("console.html", "text/html; charset=utf-8"),
    "/console.js": ("console.js", "text/javascript; charset=utf-8"),
}


@functools.cache
def static_body(name: str) -> bytes:
    return (STATIC_DIR / name).read_bytes()


def static(path: str, allow_origin: str | None = None) -> Response:
    """A static file; ``allow_origin``: the requesting page's origin when it may import the
    client from another site (CORS, the same origins as the WebSocket check)."""
    name, ctype = STATIC[path]
    body = static_body(name)
    headers = Headers([("Content-Type", ctype), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-cache"), ("X-Content-Type-Options", "nosniff"),
                       ("Vary", "Origin")])
    if allow_origin is not None:
        headers["Access-Control-Allow-Origin"] = allow_origin
    return Response(200, "OK", headers, body)


LOCALHOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})


def origin_allowed(origin: str, host: str, allowed: tuple[str, ...]) -> bool:
    """Browsers send Origin; accept our own origin, the configured ones, and — when none are
    configured — any origin on localhost (development)."""
    parts = urlsplit(origin)
    if parts.netloc and parts.netloc == host:
        return True  # same origin: the page was served by this node
    if "*" in allowed or origin in allowed:
        return True
    return not allowed and parts.hostname is not None and (
        parts.hostname in LOCALHOSTS or f"[{parts.hostname}]" in LOCALHOSTS)


def token_from(authorization: str | None, query: str) -> str | None:
    """The handshake's token: ``Authorization: Bearer …``, else the first non-empty ``token``
    of the query string (``parse_qs``' answer, property-tested; read without it when the query
    has nothing to unquote)."""
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    if "%" not in query and "+" not in query:
        for part in query.split("&"):
            name, _, value = part.partition("=")
            if name == "token" and value:
                return value
        return None
    values = parse_qs(query).get("token")
    return values[0] if values else None
