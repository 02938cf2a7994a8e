"""Whether a node should receive new clients (``/readyz``, docs/deploy.md "What readiness
means"): a read of local state only, so probes stay cheap, kept fresh by a background check
that the node's streams answer with the settings it needs."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from roomcast.node.server import Node

#: Seconds between the background checks that the streams answer (readiness reads the result).
STREAM_CHECK_INTERVAL = 2.0
#: Seconds the streams may fail to answer before the node reports unready: longer than a
#: JetStream leader election (4-9 s measured), so one election does not take every edge pod out
#: of its Service at once; a disconnected NATS connection is unready at once.
STREAM_STALE_AFTER = 15.0


class Readiness:
    """Owns when the streams last answered and the task that asks them."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._seen: float | None = None  # monotonic time the streams last answered
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start the background check (the node's start just created or read the streams)."""
        self._seen = time.monotonic()
        self._task = self.node.spawn(self._check())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _check(self) -> None:
        """Every ``STREAM_CHECK_INTERVAL``: do the streams answer, with the settings this node
        needs, and the same epoch? A recreated stream is noticed here (the backplane calls the
        node's ``_epoch_changed``)."""
        node = self.node
        while not node.draining:
            await asyncio.sleep(STREAM_CHECK_INTERVAL)
            if await node.backplane.check_streams():
                self._seen = time.monotonic()

    def answer(self) -> tuple[bool, str]:
        """Not draining, NATS connected, the streams answered within ``STREAM_STALE_AFTER``
        seconds with this node's settings, presence started (when on)."""
        node = self.node
        if node.draining:
            return False, "draining"
        if not node.backplane.connected:
            return False, "nats disconnected"
        seen = self._seen
        if seen is not None and time.monotonic() - seen > STREAM_STALE_AFTER:
            return False, "stream unreachable"
        if getattr(node.backplane, "stream_problem", None):
            return False, "streams differ from this node's settings (see the log)"
        if node.config.presence is not None and node.presence is None:
            return False, "presence not started"
        return True, "ready"
