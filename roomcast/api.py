"""A Python client of the server API (``docs/api.md``) for application backends.

Async::

    from roomcast.api import ServerApi

    async with ServerApi(["nats://nats-1:4222"], user="backend", password=...) as api:
        seq = await api.publish("orders.42", {"status": "shipped"}, id="ship-42")
        page = await api.history("orders.42", limit=50)

Sync (Django, Flask): ``SyncServerApi`` runs the same calls on a private event loop thread.
Errors come back as :class:`ApiRequestError` with the documented ``code``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from roomcast.errors import ClientError


class ApiRequestError(ClientError):
    """The server API refused a request (``docs/api.md``, "Errors")."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


class ServerApi:
    """``roomcast.api.*`` over NATS. ``options``: credentials/TLS for ``nats.connect``."""

    def __init__(self, urls: list[str] | str, *, timeout: float = 30.0, **options: Any) -> None:
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.timeout = timeout
        self.options = options
        self._nc = None

    async def connect(self) -> ServerApi:
        import nats

        from roomcast.logs import redact

        try:
            self._nc = await nats.connect(self.urls, **self.options)
        except Exception as exc:  # noqa: BLE001 - one clear error for the caller
            raise ApiRequestError("unavailable", "cannot connect to NATS at "
                                  + ", ".join(redact(u) for u in self.urls)
                                  + f": {redact(repr(exc))}") from None
        return self

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()

    async def __aenter__(self) -> ServerApi:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def call(self, method: str, body: dict) -> dict:
        msg = await self._nc.request(f"roomcast.api.{method}", json.dumps(body).encode(),
                                     timeout=self.timeout)
        reply = json.loads(msg.data)
        if "error" in reply:
            raise ApiRequestError(reply["error"]["code"], reply["error"]["message"])
        return reply

    async def publish(self, room: str, data: Any, *, id: str | None = None,  # noqa: A002
                      sender: str | None = None) -> int:
        """Store ``data`` in ``room``; returns its ``seq`` once stored (a retry with the same
        ``id`` returns the first one's)."""
        body: dict = {"room": room, "data": data}
        if id is not None:
            body["id"] = id
        if sender is not None:
            body["from"] = sender
        return (await self.call("publish", body))["seq"]

    async def broadcast(self, rooms: list[str], data: Any, *, id: str | None = None  # noqa: A002
                        ) -> dict[str, dict]:
        body: dict = {"rooms": rooms, "data": data}
        if id is not None:
            body["id"] = id
        return (await self.call("broadcast", body))["results"]

    async def history(self, room: str, *, before: int | None = None, after: int | None = None,
                      limit: int = 100) -> dict:
        """``{"messages": [...], "more": bool}``: newest first, or oldest first with ``after``."""
        body: dict = {"room": room, "limit": limit}
        if before is not None:
            body["before"] = before
        if after is not None:
            body["after"] = after
        return await self.call("history", body)

    async def disconnect(self, user: str, *, conn: str | None = None, ban: bool = False,
                         reason: str | None = None) -> dict:
        """Close ``user``'s connections on every node (4003), or ban: close with 4502 and
        revoke the resume tokens issued so far. ``{"closed", "nodes", "banned"}``."""
        body: dict = {"user": user, "ban": ban}
        if conn is not None:
            body["conn"] = conn
        if reason is not None:
            body["reason"] = reason
        return await self.call("disconnect", body)

    async def unsubscribe(self, user: str, room: str) -> dict:
        """Take ``user``'s connections out of ``room`` on every node. ``{"removed", "nodes"}``."""
        return await self.call("unsubscribe", {"user": user, "room": room})


class SyncServerApi:
    """:class:`ServerApi` for synchronous code: one event loop on a daemon thread."""

    def __init__(self, urls: list[str] | str, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._api = ServerApi(urls, **kwargs)
        self._run(self._api.connect())

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def publish(self, room: str, data: Any, **kw: Any) -> int:
        return self._run(self._api.publish(room, data, **kw))

    def broadcast(self, rooms: list[str], data: Any, **kw: Any) -> dict[str, dict]:
        return self._run(self._api.broadcast(rooms, data, **kw))

    def history(self, room: str, **kw: Any) -> dict:
        return self._run(self._api.history(room, **kw))

    def disconnect(self, user: str, **kw: Any) -> dict:
        return self._run(self._api.disconnect(user, **kw))

    def unsubscribe(self, user: str, room: str) -> dict:
        return self._run(self._api.unsubscribe(user, room))

    def close(self) -> None:
        self._run(self._api.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> SyncServerApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
