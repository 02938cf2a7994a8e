"""Fault injection: a TCP proxy on 127.0.0.1 that can go silent like a lost network."""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target port until :meth:`blackhole` is called.

    A blackholed proxy keeps both sockets open but forwards nothing, in either direction: to
    the server the client simply goes quiet, as after a network loss with no FIN or RST.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.silent = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def _accept(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        tr, tw = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [w, tw]
        for a, b in ((r, tw), (tr, w)):
            t = asyncio.create_task(self._pipe(a, b))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await r.read(65536):
                if self.silent:
                    continue  # swallow: the peer sees nothing, not even a close
                w.write(data)
                await w.drain()
            if not self.silent:
                w.close()

    def blackhole(self) -> None:
        self.silent = True

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for w in self._writers:
            w.close()
        if self._server is not None:
            self._server.close()
