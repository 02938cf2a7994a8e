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
            assert await wait_status(node.internal_port, 200, 5 * UNIT) == "ready"
            single.servers[0].kill()
            reason = await wait_status(node.internal_port, 503, 15 * UNIT)
            assert reason in ("nats disconnected", "stream unreachable")
            assert "roomcast_nats_connected 0.0" in (await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{node.internal_port}/metrics").read()
            )).decode()
            single.servers[0].start()
            single.servers[0].wait_ready()
            assert await wait_status(node.internal_port, 200, 20 * UNIT) == "ready"
        finally:
            await node.stop()


async def test_a_stream_leader_election_does_not_make_the_node_unready(nats3):
    """Kill -9 of the ROOMS stream leader (an election of seconds): readiness stays true on a
    node whose own NATS connection is unaffected, while a publish made during the election is
    acknowledged once a new leader is elected (docs/deploy.md, "What readiness means")."""
    import nats

    from tests.helpers import WsClient, room_name

    first = await start_node(nats3.urls)  # creates the stream if this module has none yet
    await first.stop()
    nc = await nats.connect(nats3.urls)
    try:
        leader = (await nc.jetstream().stream_info("ROOMS")).cluster.leader
    finally:
        await nc.close()
    victim = next(s for s in nats3.servers if s.name == leader)
    others = [s.url for s in nats3.servers if s is not victim]
    node = await start_node(others)
    try:
        assert await node.readiness() == (True, "ready")
        room = room_name()
        c = await WsClient.connect(node.port)
        victim.kill()
        publish = asyncio.create_task(c.publish(room, "during the election"))
        samples = []
        while not publish.done():  # noqa: ASYNC110 - sampling readiness until the ack
            samples.append(await node.readiness())
            await asyncio.sleep(0.1)
        ack = publish.result()
        assert ack["type"] == "ack", ack
        assert samples and all(s == (True, "ready") for s in samples), set(samples)
        assert await asyncio.to_thread(readyz, node.internal_port) == (200, "ready")
        await c.close()
    finally:
        victim.start()
        victim.wait_ready()
        await node.stop()
