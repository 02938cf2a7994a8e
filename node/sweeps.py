"""The node's periodic sweeps over its connections: keepalive pings and token expiry. One
task each per node instead of a timer per connection (``docs/performance.md``, idle memory)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from roomcast.node.server import Node

KEEPALIVE_SLICE = 100  # connections pinged in one go; slices are spread over the interval
EXPIRY_SWEEP = 1.0  # seconds between checks for expiring tokens


async def keepalive(node: Node, interval: float, silence: float, *,
                    clock: Callable[[], float] | None = None,
                    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """Ping every connection each ``interval``; close those silent for ``silence``.

    A ping costs ~40 µs of loop time (frame, write): one sweep of 10,000 connections would
    stall deliveries for 0.4 s. The sweep goes in slices of ``KEEPALIVE_SLICE`` spread
    evenly over the interval instead, so the loop is never held for more than one slice.
    ``clock``/``sleep``: the loop's by default (tests inject a virtual clock)."""
    now = clock or asyncio.get_running_loop().time
    start = now()
    while not node.draining:
        conns = list(node.connections)
        slices = max(1, -(-len(conns) // KEEPALIVE_SLICE))
        for k in range(slices):
            await sleep(max(0.0, start + interval * (k + 1) / slices - now()))
            for conn in conns[k * KEEPALIVE_SLICE:(k + 1) * KEEPALIVE_SLICE]:
                conn.keepalive(now(), silence)
        start += interval
        if start < now():  # fell behind (a stalled loop): don't catch up in a burst
            start = now()


async def expire_tokens(node: Node) -> None:
    """Ask for a fresh token ahead of expiry (``refresh_needed``) and close connections
    whose JWT has expired (4500), checked every second: one sweep instead of a timer per
    connection (``docs/performance.md``, idle memory)."""
    while not node.draining:
        await asyncio.sleep(EXPIRY_SWEEP)
        now = time.time()
        for i, conn in enumerate(list(node.connections)):
            conn.check_token(now)
            if i % 1000 == 999:
                await asyncio.sleep(0)
