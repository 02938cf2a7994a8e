"""The roomcast Python client (``docs/client.md``).

::

    async with connect(["ws://n1:8765/ws", "ws://n2:8765/ws"], token) as c:
        await c.join("chat.general")
        seq = await c.publish("chat.general", {"text": "hi"})
        async for msg in c:
            print(msg.room, msg.seq, msg.data)

The client reconnects by itself (exponential backoff with full jitter, rotating over the URLs),
resumes its session on whichever node it reaches (every message it missed, in order, once),
drops duplicates by ``seq``, repairs gaps it detects by ``prev``, and re-sends publishes that
were not acknowledged yet with the same message id, so each is stored exactly once.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import uuid
from collections.abc import Callable
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed

from roomcast.backoff import backoff_delays
from roomcast.client.dialer import Dialer, TokenSource
from roomcast.client.inbound import Inbound
from roomcast.client.model import (
    TEMPORARY_CODES,
    HistoryPage,
    Message,
    Outbox,
    State,
    _Lost,
    _Publish,
    _Room,
    message_of,
    retryable,
)
from roomcast.client.presence import RoomPresence
from roomcast.errors import (
    AuthenticationFailed,
    ClientClosed,
    PublishQueueFull,
    RequestRejected,
)

log = logging.getLogger("roomcast.client")


class Client(Inbound):
    """A roomcast connection that survives disconnects. Use :func:`connect`."""

    def __init__(self, urls: list[str] | str, token: TokenSource, *,
                 backoff_base: float = 0.25, backoff_cap: float = 30.0,
                 max_pending_publishes: int = 1000, max_buffered_messages: int = 10_000,
                 connect_timeout: float = 10.0, rng: random.Random | None = None,
                 shuffle_urls: bool = True,
                 on_state: Callable[[State, dict], None] | None = None,
                 on_left: Callable[[str, str], None] | None = None,
                 on_presence: Callable[[str, list[str], list[str]], None] | None = None,
                 ) -> None:
        urls = [urls] if isinstance(urls, str) else list(urls)
        if not urls:
            raise ValueError("at least one URL is required")
        if backoff_cap > 30.0:
            raise ValueError("backoff_cap is at most 30 s")
        self.urls = urls
        self._rng = rng or random.Random()
        self._dialer = Dialer(urls, token, backoff=(backoff_base, backoff_cap),
                              connect_timeout=connect_timeout, rng=self._rng,
                              shuffle=shuffle_urls)
        self._connect_timeout = connect_timeout
        self._on_state = on_state
        self._on_left = on_left
        self._on_presence = on_presence
        self._refresher: asyncio.Task | None = None
        #: ``exp`` of the token the current session runs on (refreshed in band, §3.7).
        self.token_expires: float | None = None
        self._rooms: dict[str, _Room] = {}
        self._outbox = Outbox(max_pending_publishes)
        self._inbox: asyncio.Queue[Message | BaseException] = asyncio.Queue(max_buffered_messages)
        self._requests: dict[int, tuple[str, Any]] = {}
        self._rids = itertools.count(1)
        self._ws: websockets.ClientConnection | None = None
        self._session = 0
        self._resume_token: str | None = None
        self._retry_after: float | None = None
        self._ready = asyncio.Event()
        self._first: asyncio.Future | None = None
        self._runner: asyncio.Task | None = None
        self._closed = False
        self._fatal: BaseException | None = None
        #: Information about the current connection: node, conn id, and after a resume the
        #: per-room outcome (``{"room": {"recovered": bool, "replayed": n, "seq": n}}``).
        self.node: str | None = None
        self.conn_id: str | None = None
        self.last_resume: dict[str, dict] | None = None
        self.sessions = 0

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (retrying as configured) and wait until the first session is up."""
        loop = asyncio.get_running_loop()
        self._first = loop.create_future()
        self._runner = loop.create_task(self._run())
        await asyncio.shield(self._first)

    async def close(self) -> None:
        self._closed = True
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            self._runner.cancel()
            try:
                await self._runner
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        self._fail_all(ClientClosed("client closed"))
        self._set_state(State.CLOSED)

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    # -- API -------------------------------------------------------------------------

    async def join(self, room: str) -> dict:
        """Join ``room`` (kept across reconnects); returns the ``joined`` frame."""
        self._check_open()
        state = self._rooms.setdefault(room, _Room())
        fut = asyncio.get_running_loop().create_future()
        state.waiters.append(fut)
        if self._ready.is_set():
            try:
                self._send_join(room, state)
            except _Lost:
                pass  # the next session re-joins every room
        return await fut

    def presence(self, room: str) -> RoomPresence | None:
        """Who is in ``room`` (a joined room, with presence on): ``members`` (None when the
        room is too big to list), ``users``, ``connections`` (docs/protocol.md §4.10)."""
        state = self._rooms.get(room)
        return state.presence if state is not None else None

    async def leave(self, room: str) -> None:
        self._check_open()
        state = self._rooms.pop(room, None)
        if state is None:
            return
        for w in state.waiters:
            if not w.done():
                w.set_exception(ClientClosed("left before joined"))
        if self._ready.is_set():
            try:
                await self._request({"type": "leave", "room": room}, ("leave", room))
            except _Lost:
                pass  # not re-joined by the next session either

    async def publish(self, room: str, data: Any, *, id: str | None = None) -> int:  # noqa: A002
        """Publish ``data``; returns its ``seq`` once the server has stored it.

        While disconnected the publish waits in a bounded queue and is sent after the
        reconnect, with the same message id, so it is stored exactly once.

        Raises:
            PublishQueueFull: too many publishes are waiting already.
            PermissionDenied: the token does not allow publishing to ``room``.
            RequestRejected: the server refused the frame for another reason.
        """
        self._check_open()
        msg_id = id or uuid.uuid4().hex
        same = self._outbox.get(msg_id)
        if same is not None:
            return await asyncio.shield(same.future)
        fut = asyncio.get_running_loop().create_future()
        try:
            pub = self._outbox.add(room, json.dumps(data, separators=(",", ":")), msg_id, fut)
        except OverflowError as exc:
            raise PublishQueueFull(str(exc)) from None
        if self._ready.is_set():
            try:
                await self._send_publish(pub)
            except _Lost:
                pass  # re-sent by the next session
        try:
            return await fut
        finally:
            self._outbox.remove(msg_id)

    async def history(self, room: str, *, before: int | None = None, after: int | None = None,
                      limit: int | None = None) -> HistoryPage:
        """A page of ``room``'s retained messages: newest first (below ``before``), or oldest
        first above ``after``; page on with the last ``seq`` while ``more``. Needs subscribe
        permission, not membership. Waits for a connection if there is none."""
        frame: dict = {"type": "history", "room": room}
        for key, value in (("before", before), ("after", after), ("limit", limit)):
            if value is not None:
                frame[key] = value
        while True:
            self._check_open()
            await self._ready.wait()
            try:
                reply = await self._request(frame, ("history", room))
            except _Lost:
                continue  # asked again on the next session
            return HistoryPage(room, [message_of(m) for m in reply["messages"]], reply["more"])

    def __aiter__(self) -> Client:
        return self

    async def __anext__(self) -> Message:
        if self._closed and self._inbox.empty():
            raise StopAsyncIteration
        item = await self._inbox.get()
        if isinstance(item, BaseException):
            if isinstance(item, ClientClosed):
                raise StopAsyncIteration
            raise item
        return item

    async def next_message(self, timeout: float | None = None) -> Message:  # noqa: ASYNC109
        return await asyncio.wait_for(self.__anext__(), timeout)

    # -- connection loop -------------------------------------------------------------

    async def _run(self) -> None:
        dialer = self._dialer
        try:
            while not self._closed:
                url = dialer.next_url()
                self._set_state(State.CONNECTING, url=url)
                ws = await dialer.connect(url)
                if ws is not None:
                    code = await self._serve(ws)
                    if code is not None and not retryable(code):
                        raise AuthenticationFailed(ws.close_reason or f"closed with {code}")
                    dialer.reset_backoff()
                if self._closed:
                    break
                delay, self._retry_after = dialer.delay(self._retry_after), None
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - surfaced to the API callers
            self._fatal = exc
            self._fail_all(exc)
            if self._first is not None and not self._first.done():
                self._first.set_exception(exc)
            if not self._inbox.full():
                self._inbox.put_nowait(exc)

    async def _serve(self, ws: websockets.ClientConnection) -> int | None:
        """Run one session; returns the close code."""
        self._ws = ws
        self._session += 1
        old_token = self._resume_token
        try:
            welcome = json.loads(await asyncio.wait_for(ws.recv(), self._connect_timeout))
            if welcome.get("type") != "welcome":
                await ws.close()
                return None
            self.node, self.conn_id = welcome["node"], welcome["conn"]
            self.token_expires = welcome.get("exp")
            given = self._token_rooms(welcome.get("rooms") or {})
            if old_token is None or not self._rooms:
                # Otherwise the previous session's token stays until `resumed` replaces it (a
                # welcome token names no rooms): a connection lost mid-resume resumes with it.
                self._resume_token = welcome.get("resume_token")
            reader = asyncio.get_running_loop().create_task(self._read(ws))
            try:
                await self._restore(old_token, given)
                self.sessions += 1
                self._ready.set()
                self._set_state(State.CONNECTED, node=self.node, resume=self.last_resume)
                if self._first is not None and not self._first.done():
                    self._first.set_result(None)
                for pub in self._outbox.unsent(self._session):
                    await self._send_publish(pub)
                await reader
            finally:
                reader.cancel()
        except (ConnectionClosed, OSError, TimeoutError, _Lost):
            pass
        finally:
            self._ready.clear()
            self._ws = None
            self._requests.clear()
            for state in self._rooms.values():
                state.repairing = False
            if not self._closed:
                self._set_state(State.DISCONNECTED, code=ws.close_code)
        return ws.close_code

    def _token_rooms(self, rooms: dict[str, dict]) -> dict[str, dict]:
        """The rooms the token joined this connection to (``welcome.rooms``): kept like
        joined ones; a position kept from a previous session is resumed from."""
        given = {}
        for room, outcome in rooms.items():
            if "seq" in outcome:
                state = self._rooms.setdefault(room, _Room())
                if state.position is None:
                    state.position = outcome["seq"]
                self._set_presence(room, state, outcome.get("presence"))
                given[room] = outcome
        return given

    async def _restore(self, old_token: str | None, given: dict[str, dict]) -> None:
        """Bring the new session back to the rooms and positions of the old one."""
        if not self._rooms:
            return
        resumed: dict[str, dict] = {} if old_token is not None else dict(given)
        if old_token is not None:
            positions = {r: s.position for r, s in self._rooms.items() if s.position is not None}
            try:
                reply = await self._request({"type": "resume", "token": old_token,
                                             "rooms": positions}, ("resume", None))
                resumed = reply["rooms"]
            except RequestRejected as exc:
                log.info("resume refused (%s); re-joining rooms one by one", exc.message)
        for room, outcome in list(resumed.items()):
            state = self._rooms.get(room)
            if state is None:
                continue
            if "error" in outcome:
                if outcome["error"] in TEMPORARY_CODES:
                    del resumed[room]  # re-joined below, and later again if need be
                    continue
                self._rooms.pop(room, None)
                self._fail_waiters(state, RequestRejected(outcome["error"], "resume refused",
                                                          room=room))
                continue
            self._advance(state, outcome["seq"], outcome.get("recovered"))
            self._set_presence(room, state, outcome.get("presence"))
        for room, state in list(self._rooms.items()):
            if room not in resumed:
                try:
                    reply = await self._send_join(room, state)
                except RequestRejected:
                    continue  # temporary refusals are retried by _on_error
                resumed[room] = {k: reply.get(k) for k in ("seq", "recovered", "replayed")}
        self.last_resume = resumed

    async def _rejoin_later(self, room: str, session: int) -> None:
        """Keep trying to (re-)join ``room`` after a temporary refusal, with backoff."""
        for delay in backoff_delays(0.5, 10.0, rng=self._rng):
            await asyncio.sleep(delay)
            state = self._rooms.get(room)
            if state is None or session != self._session or self._closed:
                return  # left, or a new session re-joins everything anyway
            try:
                await self._send_join(room, state)
                return
            except RequestRejected as exc:
                if not exc.temporary:
                    return
            except _Lost:
                return

    # -- frames ----------------------------------------------------------------------

    async def _send(self, text: str) -> None:
        ws = self._ws
        if ws is None:
            raise _Lost()
        try:
            await ws.send(text)
        except ConnectionClosed:
            raise _Lost() from None

    def _request(self, frame: dict, kind: tuple[str, Any]) -> asyncio.Future:
        """Send a request now; the returned future resolves with its reply."""
        if self._ws is None:
            raise _Lost()
        rid = next(self._rids)
        fut = asyncio.get_running_loop().create_future()
        self._requests[rid] = (kind[0], (kind[1], fut))
        asyncio.get_running_loop().create_task(
            self._send_quietly(json.dumps({**frame, "rid": rid}, separators=(",", ":"))))
        return fut

    async def _send_quietly(self, text: str) -> None:
        try:
            await self._send(text)
        except _Lost:
            pass  # the reader's end fails the request

    def _send_join(self, room: str, state: _Room) -> asyncio.Future:
        frame: dict = {"type": "join", "room": room}
        if state.position is not None:
            frame["since"] = state.position
        return self._request(frame, ("join", room))

    async def _send_publish(self, pub: _Publish) -> None:
        pub.sent_on = self._session
        rid = next(self._rids)
        self._requests[rid] = ("publish", (pub.id, None))
        await self._send(f'{{"type":"publish","room":{json.dumps(pub.room)},'
                         f'"id":{json.dumps(pub.id)},"rid":{rid},"data":{pub.data}}}')

    def _start_refresh(self) -> None:
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        """The server asked for a fresh token (§4.13): get one from the token function and
        send it in band, retrying every few seconds until it is taken or the session ends
        (at ``exp`` the server closes with 4500 and the reconnect uses a fresh token)."""
        if not self._dialer.refreshable:
            log.warning("token expires soon and is a fixed string: pass a function to refresh")
            return
        session = self._session
        while session == self._session and not self._closed:
            try:
                token = await self._dialer.token()
                await self._request({"type": "refresh", "token": token}, ("refresh", None))
                return
            except _Lost:
                return  # the next session connects with a fresh token anyway
            except Exception as exc:  # noqa: BLE001 - a failing token function is retried
                log.warning("token refresh failed: %s", exc)
            await asyncio.sleep(1.0 + self._rng.random() * 2)

    async def _resend(self, pub: _Publish) -> None:
        if self._ready.is_set() and self._outbox.get(pub.id) is pub:
            await self._send_publish(pub)

    # -- helpers ---------------------------------------------------------------------

    @staticmethod
    def _advance(state: _Room, seq: int | None, recovered: bool | None = None) -> None:
        """A position moves only forward, except after ``recovered: false``: the server's
        ``seq`` then replaces it (the old one was from another epoch or never issued; §7)."""
        if seq is None:
            return
        if recovered is False or state.position is None or seq > state.position:
            state.position = seq

    @staticmethod
    def _fail_waiters(state: _Room, exc: BaseException) -> None:
        for w in state.waiters:
            if not w.done():
                w.set_exception(exc)
        state.waiters.clear()

    def _fail_all(self, exc: BaseException) -> None:
        self._outbox.fail_all(exc)
        for state in self._rooms.values():
            self._fail_waiters(state, exc)
        for _, (_, fut) in self._requests.values():
            if fut is not None and not fut.done():
                fut.set_exception(exc)
        if self._closed and not self._inbox.full():
            self._inbox.put_nowait(ClientClosed("client closed"))

    def _check_open(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._closed:
            raise ClientClosed("client closed")

    def _set_state(self, state: State, **info: Any) -> None:
        if self._on_state is not None:
            try:
                self._on_state(state, info)
            except Exception:  # noqa: BLE001 - a callback must not break the client
                log.exception("on_state callback failed")


def connect(urls: list[str] | str, token: TokenSource, **kwargs: Any) -> Client:
    """Create a :class:`Client`; use it as ``async with connect(...) as client``."""
    return Client(urls, token, **kwargs)
