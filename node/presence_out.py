"""Sends the presence feed's frames (:mod:`roomcast.presence.feed`) to a room's local members
on the feed's schedule: one timer for the node, armed only while some room is touched."""

from __future__ import annotations

import asyncio
import time

from roomcast.node.rooms import RoomRegistry
from roomcast.presence.feed import PresenceFeed
from roomcast.presence.state import Transition


class PresenceOut:
    def __init__(self, feed: PresenceFeed, rooms: RoomRegistry) -> None:
        self.feed = feed
        self.rooms = rooms
        self._timer: asyncio.TimerHandle | None = None
        self._at: float | None = None  # when the armed timer fires (monotonic)
        rooms.on_room_gone = feed.forget

    def on_transitions(self, transitions: list[Transition]) -> None:
        if self.feed.add(transitions, time.monotonic(), self._local):
            self._arm()

    def _local(self, room: str) -> bool:
        return room in self.rooms.rooms

    def _arm(self) -> None:
        at = self.feed.next_due()
        if at is None or (self._at is not None and self._at <= at):
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._at = at
        self._timer = loop.call_at(loop.time() + max(0.0, at - time.monotonic()), self._fire)

    def _fire(self) -> None:
        self._timer = self._at = None
        for room, frame in self.feed.due(time.monotonic()):
            self.rooms.broadcast(room, frame)
        self._arm()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
