"""Presence of connections the node closed on purpose (a drain, a recreated stream), kept until
they resume elsewhere (docs/presence.md, "Draining nodes hand over").

A resumed session's new node evicts the old connection (:meth:`Handover.release`): its entry
goes then, with no member-level change. One that does not resume within the presence timeout
really left (:meth:`Handover.give_up`, :meth:`Handover.finish`): members get its leave.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from roomcast.presence.tracker import PresenceTracker

log = logging.getLogger("roomcast.node")


class Handover:
    """The one owner of the handed-over entries: conn id -> rooms."""

    def __init__(self) -> None:
        self.presence: PresenceTracker | None = None  # set when the node's presence starts
        self._rooms: dict[str, tuple[str, ...]] = {}
        self._empty: asyncio.Event | None = None

    def __len__(self) -> int:
        return len(self._rooms)

    def keep(self, conn_id: str, rooms: tuple[str, ...], *, expire: bool) -> bool:
        """Keep ``conn_id``'s presence in ``rooms``; False when there is nothing to keep (the
        caller untracks it now). ``expire``: give up after the presence timeout by itself
        (a drain gives up on all of them in :meth:`finish` instead)."""
        if self.presence is None or not rooms:
            return False
        self._rooms[conn_id] = rooms
        if expire:
            asyncio.get_running_loop().call_later(self.presence.config.timeout,
                                                  self.give_up, conn_id)
        return True

    def release(self, conn_id: str) -> bool:
        """The session resumed elsewhere: drop its entries (no member-level change: the new
        connection is tracked already). False if ``conn_id`` was not handed over."""
        if conn_id not in self._rooms:
            return False
        self.give_up(conn_id)
        if not self._rooms and self._empty is not None:
            self._empty.set()
        return True

    def give_up(self, conn_id: str) -> None:
        rooms = self._rooms.pop(conn_id, None)
        if rooms is not None and self.presence is not None:
            for room in rooms:
                self.presence.untrack(room, conn_id)

    async def finish(self, seconds: float) -> None:
        """Wait up to ``seconds`` (and at most the presence timeout) for every kept session
        to resume elsewhere, then give up on the rest."""
        if not self._rooms or self.presence is None:
            return
        self._empty = asyncio.Event()
        try:
            await asyncio.wait_for(self._empty.wait(), min(self.presence.config.timeout, seconds))
        except TimeoutError:
            pass
        rest = list(self._rooms)
        for conn_id in rest:
            self.give_up(conn_id)
        log.info("drain hand-over done", extra={"not_resumed": len(rest)})
