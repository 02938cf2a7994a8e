"""How the client gets a WebSocket: which URL next, with which token, and how long to wait
between attempts. The session logic (:mod:`roomcast.client.client`) only asks for the next
connection; everything about reaching a node is here."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

import websockets
from websockets.exceptions import InvalidStatus

from roomcast.backoff import backoff_delays
from roomcast.errors import AuthenticationFailed

log = logging.getLogger("roomcast.client")

TokenSource = str | Callable[[], str] | Callable[[], Awaitable[str]]

#: Seconds ``close()`` waits for the node to answer the closing handshake (websockets' default,
#: 10 s, kept a Ctrl-C'd `roomcast chat` waiting on a node that was slow to answer).
CLOSE_TIMEOUT = 2.0


class Dialer:
    """Rotates over ``urls`` (starting at a random one when ``shuffle``, so that many clients
    spread over the nodes) with exponential backoff and full jitter between failed attempts."""

    def __init__(self, urls: list[str], token: TokenSource, *, backoff: tuple[float, float],
                 connect_timeout: float, rng: random.Random, shuffle: bool) -> None:
        self.urls = urls
        self._token_source = token
        self._backoff = backoff
        self._connect_timeout = connect_timeout
        self._rng = rng
        self._index = rng.randrange(len(urls)) if shuffle else 0
        self._delays = backoff_delays(*backoff, rng=rng)

    def next_url(self) -> str:
        url = self.urls[self._index % len(self.urls)]
        self._index += 1
        return url

    async def connect(self, url: str) -> websockets.ClientConnection | None:
        """One attempt; None when it failed in a way worth retrying (logged).

        Raises:
            AuthenticationFailed: the node refused the token (HTTP 401).
        """
        try:
            return await websockets.connect(
                url, additional_headers={"Authorization": f"Bearer {await self.token()}"},
                open_timeout=self._connect_timeout, max_size=None, compression=None,
                close_timeout=CLOSE_TIMEOUT)
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status == 401:
                reason = bytes(exc.response.body or b"").decode(errors="replace").strip()
                raise AuthenticationFailed(reason or "unauthorized") from None
            log.info("connect to %s refused with HTTP %d", url, status)
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            log.info("connect to %s failed: %s", url, exc)
        return None

    def reset_backoff(self) -> None:
        """A session was established: the next failure starts the backoff over."""
        self._delays = backoff_delays(*self._backoff, rng=self._rng)

    def delay(self, retry_after: float | None) -> float:
        """Seconds to wait before the next attempt: the server's ``retry_after`` when it sent
        one (a draining node spreads its clients out), else the next backoff step."""
        return retry_after if retry_after is not None else next(self._delays)

    @property
    def refreshable(self) -> bool:
        """Whether :meth:`token` can return a newer token (a function, not a fixed string)."""
        return not isinstance(self._token_source, str)

    async def token(self) -> str:
        src = self._token_source
        if isinstance(src, str):
            return src
        value = src()
        if asyncio.iscoroutine(value) or isinstance(value, Awaitable):
            value = await value
        return value
