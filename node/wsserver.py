"""The node's WebSocket listener: accepts TCP connections, serves each as a
:class:`~roomcast.node.wsconn.WsConnection`, and shuts down in order (upgrades in progress get
503, open connections a close frame, then every handler is awaited)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from websockets.extensions.permessage_deflate import enable_server_permessage_deflate
from websockets.frames import CloseCode as WsCloseCode
from websockets.http11 import Request, Response
from websockets.protocol import State

from roomcast.node.wsconn import WsConnection

Handler = Callable[[WsConnection], Awaitable[None]]
ProcessRequest = Callable[[WsConnection, Request], Awaitable[Response | None]]

_OPEN = State.OPEN


class WsServer:
    """Listens and serves :class:`WsConnection`s: ``await start(...)``, ``close()``,
    ``await wait_closed()``."""

    def __init__(self, handler: Handler, process_request: ProcessRequest, *,
                 max_size: int, compression: bool = False, open_timeout: float | None = 10.0,
                 close_timeout: float = 3.0, server_header: str = "roomcast") -> None:
        self.handler = handler
        self.process_request = process_request
        self.max_size = max_size
        self.extensions = enable_server_permessage_deflate(None) if compression else None
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self.server_header = server_header
        self.loop = asyncio.get_running_loop()
        self.connections: set[WsConnection] = set()
        self.tasks: set[asyncio.Task] = set()
        self.serving = False
        #: Upgrades taken on the fast path (node/upgrade.py), for tests and debugging.
        self.fast_upgrades = 0
        self._server: asyncio.Server | None = None
        self._closing: list[asyncio.Task] = []

    async def start(self, host: str, port: int, *, backlog: int = 100) -> None:
        self._server = await self.loop.create_server(lambda: WsConnection(self), host, port,
                                                     backlog=backlog)
        self.serving = True

    @property
    def sockets(self):
        return self._server.sockets if self._server is not None else ()

    def close(self, code: int = WsCloseCode.GOING_AWAY, reason: str = "") -> None:
        """Stop accepting; upgrades in progress get 503, open connections a close frame."""
        if not self.serving:
            return
        self.serving = False
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if conn.protocol is not None and conn.protocol.state is _OPEN:
                self._closing.append(self.loop.create_task(conn.close(code, reason)))

    async def wait_closed(self) -> None:
        """Return once every connection's handler has returned and the listener is closed."""
        while self.tasks or self._closing:
            await asyncio.wait([*self.tasks, *self._closing])
            self._closing = [t for t in self._closing if not t.done()]
        if self._server is not None:
            await self._server.wait_closed()
