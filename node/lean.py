"""Keeping each connection small and the collector out of the hot path (docs/performance.md).

Two of these reach into websockets' per-connection objects. They only act when those objects
are what this version of websockets has (guarded by type), and
``tests/integration/test_cluster.py`` fails if an upgrade of websockets stops them working.
"""

from __future__ import annotations

import collections
import gc

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers

#: Replaces each served handshake request's headers (shared, never modified).
NO_HEADERS = Headers()

#: Young-generation threshold of the cyclic GC while serving (Python's default is 700).
GC_THRESHOLD = (20_000, 20, 50)


def tune_gc() -> None:
    """Move what startup allocated out of the collector's way (``gc.freeze``) and collect the
    young generation less often: the hot paths allocate many short-lived objects (futures,
    frames) that reference counting frees anyway, and at Python's default threshold the
    collector ran every ~35 publishes (``docs/performance.md``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


class SmallQueue(list):
    """The part of :class:`collections.deque` websockets uses on a connection's internal
    queues (``append``, ``popleft``, ``extendleft``, ``remove``, iteration). An empty deque
    takes 624 bytes, this 56: those queues are almost always empty or tiny."""

    __slots__ = ()

    def popleft(self):
        return self.pop(0)

    def extendleft(self, items) -> None:
        self[0:0] = list(items)[::-1]


def slim_queues(ws: ServerConnection) -> None:
    """Swap websockets' per-connection deques (frames waiting for ``recv``, writers waiting
    for ``drain``) for :class:`SmallQueue`, only where they are the empty deques expected
    (a websockets upgrade that changes them leaves them alone; tests/unit/test_small_queue.py
    and tests/integration/test_cluster.py check both)."""
    frames = getattr(getattr(ws, "recv_messages", None), "frames", None)
    queue = getattr(frames, "queue", None)
    if type(queue) is collections.deque and not queue:
        frames.queue = SmallQueue()
    waiters = getattr(ws, "drain_waiters", None)
    if type(waiters) is collections.deque and not waiters:
        ws.drain_waiters = SmallQueue()


def slim_connection(ws: ServerConnection, path: str) -> None:
    """After the handshake: drop the response, empty the request in place (websockets' parser
    generator keeps a reference to it; its headers and the path with the JWT need not stay),
    and slim the internal queues."""
    ws.response = None
    ws.request.path = path
    ws.request.headers = NO_HEADERS
    slim_queues(ws)
