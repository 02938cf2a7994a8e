"""The publish path's failure handling on a real nats-server: transient failures of one
attempt are retried with the same id; a message that cannot be stored is reported."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from roomcast.backplane.memory import MemoryBackplane
from roomcast.backplane.nats import NatsBackplane, NatsConfig
from roomcast.backplane.natsclient import AckError
from roomcast.errors import PublishError
from roomcast.node.server import Node
from tests.helpers import WsClient, node_config, room_name


async def test_publish_without_a_stream_fails_fast_then_reports(nats1):
    """No stream captures the subject (deleted): the attempt's future fails with AckError
    (no responders, not a timeout) and publish() gives up with PublishError at its budget."""
    bp = NatsBackplane(NatsConfig(urls=tuple(nats1.urls), replicas=1,
                                  stream=f"P{uuid.uuid4().hex[:8]}".upper(),
                                  publish_attempt_timeout=2.0, publish_budget=0.6,
                                  duplicate_window=5.0))
    await bp.start()
    try:
        await bp.nc.jetstream().delete_stream(bp.config.stream)
        fut = await bp.publish_begin("r1", b"x", uuid.uuid4().hex)
        with pytest.raises(AckError):
            await asyncio.wait_for(fut, 1.5)  # answered by the server, well before the timeout
        with pytest.raises(PublishError):
            await bp.publish("r1", b"x", uuid.uuid4().hex)
        assert not bp.acks.pending  # nothing left waiting
    finally:
        await bp.close()


async def test_an_overdue_ack_fails_the_attempt_with_a_timeout(nats1):
    """Attempts whose ack does not come within publish_attempt_timeout fail with TimeoutError
    (one sweep for all pending acks, no timer each); a late ack is then ignored."""
    bp = NatsBackplane(NatsConfig(urls=tuple(nats1.urls), replicas=1,
                                  stream=f"T{uuid.uuid4().hex[:8]}".upper(),
                                  publish_attempt_timeout=0.3))
    await bp.start()
    try:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        bp.acks.pending["never"] = (fut, loop.time() + 0.3)  # as if the ack were lost
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(fut, 2.0)
        assert "never" not in bp.acks.pending
        bp.acks.on_ack((bp.acks.prefix + "never").encode(), None, b'{"seq":1}')  # late: ignored
        ok = await bp.publish_begin("r1", b"x", uuid.uuid4().hex)  # real ones still succeed
        assert (await asyncio.wait_for(ok, 2.0)).seq >= 1
    finally:
        await bp._nc.jetstream().delete_stream(bp.config.stream)
        await bp.close()


class FlakyFirstAttempt(MemoryBackplane):
    """Every first attempt fails transiently (as a timed-out ack would)."""

    async def publish_begin(self, room, body, msg_id):
        fut = asyncio.get_running_loop().create_future()
        fut.set_exception(TimeoutError("no JetStream ack in time"))
        return fut


async def test_node_retries_a_failed_first_attempt_and_acks_once():
    node = Node(node_config(["nats://127.0.0.1:1"]), backplane=FlakyFirstAttempt())
    await node.start()
    try:
        r = room_name()
        c = await WsClient.connect(node.port)
        await c.join(r)
        ack = await c.publish(r, {"n": 1}, msg_id="m1")
        assert ack["type"] == "ack" and ack["seq"] >= 1
        (msg,) = await c.wait_messages(r, 1)
        assert msg["seq"] == ack["seq"] and msg["data"] == {"n": 1}
        assert not node.inflight
        await c.close()
    finally:
        await node.stop()
