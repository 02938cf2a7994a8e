"""/readyz follows NATS: unready while it is unreachable, ready again when it returns."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request

from roomcast.natsserver import NatsCluster
from tests.helpers import UNIT, start_node


def readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as r:
            return r.status, r.read().decode().strip()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode().strip()


async def wait_status(port: int, status: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        code, text = await asyncio.to_thread(readyz, port)
        if code == status:
            return text
        assert time.monotonic() < deadline, f"/readyz stayed {code} {text}"
        await asyncio.sleep(0.1)


async def test_readyz_tracks_nats():
    """Kill the only NATS server: 503; start it again: 200."""
    with NatsCluster(1) as single:
        node = await start_node(single.urls, replicas=1)
        try:
            assert await wait_status(node.port, 200, 5 * UNIT) == "ready"
            single.servers[0].kill()
            reason = await wait_status(node.port, 503, 15 * UNIT)
            assert reason in ("nats disconnected", "stream unreachable")
            assert "roomcast_nats_connected 0.0" in (await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{node.port}/metrics").read()
            )).decode()
            single.servers[0].start()
            single.servers[0].wait_ready()
            assert await wait_status(node.port, 200, 20 * UNIT) == "ready"
        finally:
            await node.stop()
