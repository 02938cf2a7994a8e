"""The Python client's handling of what the server sends (``docs/protocol.md`` §4): one frame
at a time, from the read loop of each session. A part of :class:`roomcast.client.Client`
(its base class), kept apart so each half of the client reads on its own; it uses the
client's state — ``_rooms``, ``_requests``, ``_outbox``, ``_inbox``, ``_resume_token``,
``_retry_after``, ``_session``, ``_rng``, ``token_expires``, the ``_on_left``/``_on_presence``
callbacks — and its methods ``_send_join``, ``_advance``, ``_fail_waiters``, ``_resend``,
``_rejoin_later`` and ``_start_refresh``, which live in ``client.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging

import websockets

from roomcast.client.model import Message, Verdict, _Lost, _Room, judge, message_of
from roomcast.client.presence import RoomPresence
from roomcast.errors import ClientClosed, PermissionDenied, RequestRejected

log = logging.getLogger("roomcast.client")


class Inbound:
    async def _read(self, ws: websockets.ClientConnection) -> None:
        try:
            await self._read_frames(ws)
        finally:
            requests, self._requests = self._requests, {}
            for _, (_, fut) in requests.values():
                if fut is not None and not fut.done():
                    fut.set_exception(_Lost())

    async def _read_frames(self, ws: websockets.ClientConnection) -> None:
        async for raw in ws:
            frame = json.loads(raw)
            kind = frame.get("type")
            if kind == "message":
                await self._on_message(frame)
            elif kind == "ack":
                self._requests.pop(frame.get("rid"), None)
                self._outbox.settle(frame.get("id"), frame["seq"])
            elif kind in ("joined", "left", "resumed", "pong", "history", "refreshed"):
                self._on_reply(frame)
            elif kind in ("presence_diff", "presence_count", "presence_state"):
                self._on_presence_frame(frame)
            elif kind == "refresh_needed":
                self._start_refresh()
            elif kind == "error":
                self._on_error(frame)
            elif kind == "reconnect":
                self._resume_token = frame.get("resume_token") or self._resume_token
                self._retry_after = frame.get("retry_after_ms", 0) / 1000.0

    async def _on_message(self, f: dict) -> None:
        room = f["room"]
        state = self._rooms.get(room)
        if state is None:
            return
        seq, prev = f["seq"], f["prev"]
        if not seq:  # an ephemeral room's message: not stored, no order to keep (§4.5)
            await self._inbox.put(message_of(f))
            return
        verdict = judge(state.position, seq, prev)
        if verdict is Verdict.DUPLICATE:
            return
        if verdict is Verdict.GAP:
            # Drop this one, ask for everything after our position (once at a time).
            if not state.repairing:
                state.repairing = True
                asyncio.get_running_loop().create_task(self._repair(room, state))
            return
        state.position = seq
        await self._inbox.put(Message(room, seq, prev, f.get("from"), f.get("ts"), f.get("id"),
                                      f.get("data")))

    async def _repair(self, room: str, state: _Room) -> None:
        try:
            await self._send_join(room, state)
        except (RequestRejected, ClientClosed, _Lost):
            pass
        finally:
            state.repairing = False

    def _on_reply(self, f: dict) -> None:
        if f.get("resume_token"):
            self._resume_token = f["resume_token"]
        entry = self._requests.pop(f.get("rid"), None)
        if f["type"] == "left" and f.get("reason") and self._rooms.pop(f["room"], None):
            log.info("removed from %s by the server (%s)", f["room"], f["reason"])
            if self._on_left is not None:
                self._on_left(f["room"], f["reason"])
        if f["type"] == "refreshed":
            self.token_expires = f.get("exp")
        if f["type"] == "joined":
            state = self._rooms.get(f["room"])
            if state is not None:
                self._advance(state, f["seq"], f.get("recovered"))
                self._set_presence(f["room"], state, f.get("presence"))
                waiters, state.waiters = state.waiters, []
                for w in waiters:
                    if not w.done():
                        w.set_result(f)
        if entry is not None:
            fut = entry[1][1]
            if fut is not None and not fut.done():
                fut.set_result(f)

    def _set_presence(self, room: str, state: _Room, summary: dict | None) -> None:
        """A fresh view from ``joined``/``resumed``/``welcome.rooms``: callers are told who
        appeared and who went while the view was not kept up (e.g. across a reconnect)."""
        if summary is None:
            return
        old, new = state.presence, RoomPresence.of(summary)
        state.presence = new
        if old is not None and old.members is not None and new.members is not None:
            self._report_presence(room, [u for u in new.members if u not in old.members],
                                  [u for u in old.members if u not in new.members])

    def _on_presence_frame(self, f: dict) -> None:
        state = self._rooms.get(f.get("room"))
        if state is not None and state.presence is not None:
            self._report_presence(f["room"], *state.presence.apply(f))

    def _report_presence(self, room: str, joined: list[str], left: list[str]) -> None:
        if (joined or left) and self._on_presence is not None:
            self._on_presence(room, joined, left)

    def _on_error(self, f: dict) -> None:
        cls = PermissionDenied if f.get("code") == "forbidden" else RequestRejected
        exc = cls(f.get("code", "?"), f.get("message", ""), temporary=bool(f.get("temporary")),
                  room=f.get("room"))
        entry = self._requests.pop(f.get("rid"), None)
        if entry is None:
            log.warning("server error: %s", exc)
            return
        kind, (key, fut) = entry
        if kind == "publish":
            pub = self._outbox.get(key)
            if pub is not None and exc.temporary:
                asyncio.get_running_loop().call_later(
                    0.2 + self._rng.random(), lambda: asyncio.ensure_future(self._resend(pub)))
            elif pub is not None:
                self._outbox.fail(key, exc)
            return
        if kind == "join":
            state = self._rooms.get(key)
            if state is not None and exc.temporary:
                # The room stays wanted: join again later (the caller keeps waiting).
                asyncio.get_running_loop().create_task(self._rejoin_later(key, self._session))
            elif state is not None:
                self._rooms.pop(key, None)
                self._fail_waiters(state, exc)
        if fut is not None and not fut.done():
            fut.set_exception(exc)
