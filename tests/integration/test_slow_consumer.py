"""A member that stops reading is closed with 4001 once its send buffer passes the limit; the
room keeps flowing for everyone else; the slow member resumes later with nothing lost."""

from __future__ import annotations

import asyncio

from roomcast.client import connect
from roomcast.natsserver import NatsCluster
from tests.helpers import (
    UNIT,
    assert_message_chain,
    collect,
    room_name,
    start_node,
    token,
    wait_connected,
)


async def test_slow_consumer_is_cut_off_and_resumes_without_loss():
    single = NatsCluster(1).start()  # own stream: it keeps more history than the default
    node = await start_node(single.urls, replicas=1, send_buffer_limit=1024 * 1024,
                            rate_limit=10_000, rate_burst=10_000,
                            nats_kw={"history_per_room": 5000})
    url = f"ws://127.0.0.1:{node.port}/ws"
    room = room_name()
    closes: list[int | None] = []
    try:
        async with connect(url, token("slow"), backoff_base=0.05, on_state=lambda s, i:
                           closes.append(i.get("code")) if s.value == "disconnected" else None
                           ) as slow, \
                connect(url, token("fast")) as fast, connect(url, token("pub")) as pub:
            await slow.join(room)
            await fast.join(room)
            slow._ws.transport.pause_reading()  # the slow reader: the node's buffer fills up
            # ~24 MB: more than the kernel's socket buffers hold, so the node's own buffer for
            # the slow member passes its 1 MiB limit (bursts of 100 x 8 KB stay below it).
            blob = "x" * 8000
            acked: list[int] = []
            total = 3000
            for start in range(0, total, 100):
                acked += await asyncio.gather(*(pub.publish(room, {"i": i, "pad": blob}, id=f"m{i}")
                                                for i in range(start, start + 100)))
            acked.sort()
            got_fast = await collect(fast, total, timeout=60 * UNIT)
            assert [m.seq for m in got_fast] == acked  # the room kept flowing
            async with asyncio.timeout(10 * UNIT):  # the cut is the node's to make, soon
                while node.metrics.slow_consumers._value.get() < 1:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            assert node.metrics.slow_consumers._value.get() == 1
            slow._ws.transport.resume_reading()
            got_slow = await collect(slow, total, timeout=60 * UNIT)
            assert [m.seq for m in got_slow] == acked
            assert_message_chain(got_slow)
            assert 4001 in closes
            await wait_connected(slow)
            assert slow.sessions == 2  # one cut, then one resume whose replay was not cut
            assert node.metrics.slow_consumers._value.get() == 1
            assert slow.last_resume[room]["recovered"] is True
    finally:
        await node.stop()
        single.stop()
