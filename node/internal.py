"""The node's internal port: ``/healthz``, ``/readyz``, ``/metrics`` and the server API over
HTTP (``POST /api/<method>``, ``docs/api.md``). No Ingress routes here (``docs/deploy.md``).

HTTP/1.1 is parsed by h11 (keep-alive, bounded request size); the API needs an ``X-API-Key``
from ``--api-key-file`` (one key per line, re-read when the file changes, so keys rotate
without a restart), compared in constant time against every key.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import h11

from roomcast.node import console, web

if TYPE_CHECKING:
    from roomcast.node.server import Node

log = logging.getLogger("roomcast.node.internal")

#: Seconds an idle keep-alive connection is kept, and a request may take to arrive.
IDLE_TIMEOUT = 30.0
#: Seconds between checks whether the API key file changed.
KEY_FILE_CHECK = 5.0
MIN_KEY_LEN = 16

Reply = tuple[int, str, bytes]  # status, content type, body
Handler = Callable[[str, bytes], Awaitable[Reply]]
JSON = "application/json"


class ApiKeys:
    """The keys of ``--api-key-file``; an empty set refuses every request."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._digests: list[bytes] = []
        self._mtime: float | None = None
        self._checked = 0.0
        if path is not None:
            self._load()
            if not self._digests:
                from roomcast.errors import ConfigError

                raise ConfigError("api_key_file", f"{path}: no key of at least "
                                  f"{MIN_KEY_LEN} characters")

    def _load(self) -> None:
        assert self.path is not None
        mtime = os.stat(self.path).st_mtime
        if mtime == self._mtime:
            return
        with open(self.path, encoding="utf-8") as f:
            keys = [line.strip() for line in f]
        keys = [k for k in keys if k and not k.startswith("#")]
        short = [k for k in keys if len(k) < MIN_KEY_LEN]
        if short:
            log.warning("api keys shorter than %d characters ignored: %d", MIN_KEY_LEN,
                        len(short))
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys
                         if len(k) >= MIN_KEY_LEN]
        self._mtime = mtime

    def allows(self, given: bytes | None) -> bool:
        """Constant time in the key given: it is hashed, and compared with every key."""
        now = time.monotonic()
        if self.path is not None and now - self._checked > KEY_FILE_CHECK:
            self._checked = now
            try:
                self._load()
            except OSError as exc:
                log.warning("api key file not re-read (%s); keeping the keys loaded", exc)
        digest = hashlib.sha256(given or b"").digest()
        ok = False
        for key in self._digests:
            ok |= hmac.compare_digest(digest, key)
        return ok and given is not None


class InternalServer:
    """``get(path)`` answers GETs; ``api(path, body)`` answers authorised POSTs of
    ``/api/…`` and ``/admin/…`` (``path`` without the leading slash)."""

    def __init__(self, get: Callable[[str], Awaitable[Reply]], api: Handler | None,
                 keys: ApiKeys, max_body: int) -> None:
        self._get = get
        self._api = api
        self._keys = keys
        self._max_body = max_body
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task] = set()

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._client, host, port)
        return self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._clients):
            task.cancel()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
        try:
            while True:
                request, body = await self._read_request(conn, reader)
                if request is None:
                    return
                status, ctype, payload = await self._route(request, body)
                headers = [("Content-Type", ctype), ("Content-Length", str(len(payload))),
                           ("Server", "roomcast")]
                if status == 401:
                    headers.append(("WWW-Authenticate", 'ApiKey realm="roomcast"'))
                writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
                writer.write(conn.send(h11.Data(data=payload)))
                writer.write(conn.send(h11.EndOfMessage()))
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (h11.ProtocolError, ConnectionError, TimeoutError):
            return
        except asyncio.CancelledError:
            return
        finally:
            if task is not None:
                self._clients.discard(task)
            writer.close()

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader):
        request, chunks, size = None, [], 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await asyncio.wait_for(reader.read(65536), IDLE_TIMEOUT)
                conn.receive_data(data)  # b"" means the peer closed
                continue
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None, b""
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > self._max_body:
                    return request, None  # answered 413 by _route, then closed
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return request, b"".join(chunks)

    async def _route(self, request: h11.Request, body: bytes | None) -> Reply:
        path = urlsplit(request.target.decode("latin-1")).path
        method = request.method.decode()
        if not path.startswith(("/api/", "/admin/")):
            if method != "GET":
                return 405, "text/plain", b"method not allowed\n"
            return await self._get(path)
        if method != "POST":
            return 405, JSON, b'{"error":{"code":"bad_request","message":"use POST"}}'
        keys = [v for k, v in request.headers if k == b"x-api-key"]
        if len(keys) != 1 or not self._keys.allows(keys[0]):
            return 401, JSON, (b'{"error":{"code":"unauthorized","message":'
                               b'"a valid X-API-Key header is required"}}')
        if body is None:
            return 413, JSON, b'{"error":{"code":"bad_request","message":"request too large"}}'
        if self._api is None:
            return 503, JSON, b'{"error":{"code":"unavailable","message":"no server API here"}}'
        return await self._api(path[1:], body)


# -- what a node answers here ------------------------------------------------------------


async def answer_get(node: Node, path: str) -> Reply:
    """GETs of the internal port: health, readiness, metrics."""
    if path == "/healthz":
        return 200, "text/plain; charset=utf-8", b"ok\n"
    if path == "/readyz":
        ready, why = await node.readiness()
        return (200 if ready else 503), "text/plain; charset=utf-8", why.encode() + b"\n"
    if path == "/metrics":
        return 200, "text/plain; version=0.0.4", node.metrics.render()
    if path in web.CONSOLE:
        # The page holds no data: everything it shows comes from /admin/* and /api/*,
        # which need the API key (typed into the page, kept in the tab's sessionStorage).
        name, ctype = web.CONSOLE[path]
        return 200, ctype, web.static_body(name)
    return 404, "text/plain; charset=utf-8", b"not found\n"

async def answer_post(node: Node, path: str, body: bytes) -> Reply:
    """``api/<method>`` (the server API) and ``admin/<what>`` (the operator console's
    questions and actions, ``node/console.py``), behind the API key."""
    if node._api is None or node.control is None:
        return 503, "application/json", b'{"error":{"code":"unavailable","message":"starting"}}'
    if path.startswith("admin/"):
        return await console.answer(node, path[len("admin/"):], body)
    status, reply = await node._api.answer(path[len("api/"):], body)
    return status, "application/json", reply
