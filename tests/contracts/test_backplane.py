"""One contract, two engines: MemoryBackplane and NatsBackplane (on a real nats-server)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import pytest_asyncio

from roomcast.backplane.memory import MemoryBackplane
from roomcast.backplane.nats import NatsBackplane, NatsConfig
from roomcast.natsserver import NatsCluster


@pytest.fixture(scope="module")
def nats_single():
    with NatsCluster(1) as c:
        yield c


@pytest_asyncio.fixture(params=["memory", "nats"])
async def bp(request):
    if request.param == "memory":
        b = MemoryBackplane(history_per_room=5)
    else:
        cluster = request.getfixturevalue("nats_single")
        b = NatsBackplane(NatsConfig(urls=tuple(cluster.urls), replicas=1, history_per_room=5,
                                     stream=f"C{uuid.uuid4().hex[:8]}".upper()))
    await b.start()
    yield b
    if isinstance(b, NatsBackplane):  # streams may not overlap: remove ours
        await b._nc.jetstream().delete_stream(b.config.stream)
    await b.close()


def room() -> str:
    return "c" + uuid.uuid4().hex[:10]


async def test_publish_sequences_and_prev_chain(bp):
    """seq increases; live prev links each message to the room's previous one."""
    r, other = room(), room()
    got = []
    await bp.subscribe(r, got.append)
    s1 = await bp.publish(r, b'{"n":1}', uuid.uuid4().hex)
    await bp.publish(other, b'{"n":0}', uuid.uuid4().hex)
    s2 = await bp.publish(r, b'{"n":2}', uuid.uuid4().hex)
    assert s2.seq > s1.seq and not s1.duplicate
    for _ in range(100):
        if len(got) == 2:
            break
        await asyncio.sleep(0.01)
    assert [(m.seq, m.prev, m.body) for m in got] == [(s1.seq, 0, b'{"n":1}'),
                                                      (s2.seq, s1.seq, b'{"n":2}')]


async def test_same_msg_id_is_stored_once(bp):
    """A second publish with the same msg_id returns the first seq, flagged duplicate."""
    r = room()
    a = await bp.publish(r, b"1", "dup-id-" + r)
    b = await bp.publish(r, b"1", "dup-id-" + r)
    assert (b.seq, b.duplicate) == (a.seq, True)
    assert [m.seq for m in await bp.history(r, 1, 10)] == [a.seq]


async def test_history_pages_and_retention(bp):
    """history returns retained messages from start_seq in order; old ones are trimmed."""
    r = room()
    seqs = [(await bp.publish(r, b"%d" % i, uuid.uuid4().hex)).seq for i in range(8)]
    kept = await bp.history(r, 1, 100)
    assert [m.seq for m in kept] == seqs[-5:]
    assert [m.body for m in await bp.history(r, seqs[5], 2)] == [b"5", b"6"]
    assert await bp.history(r, seqs[-1] + 1, 10) == []
    assert await bp.last_seq(r) == seqs[-1]
    assert await bp.last_seq(room()) == 0


async def test_unsubscribe_stops_delivery(bp):
    """After unsubscribe no more live messages arrive."""
    r = room()
    got = []
    await bp.subscribe(r, got.append)
    await bp.unsubscribe(r)
    await bp.publish(r, b"x", uuid.uuid4().hex)
    await asyncio.sleep(0.05)
    assert got == []


async def test_epoch_is_stable_and_nonempty(bp):
    """The epoch names the stream incarnation."""
    assert isinstance(bp.epoch, str) and bp.epoch


async def test_many_publishes_in_flight_each_get_their_own_ack(bp):
    """publish_begin keeps many publishes in flight; each future resolves with its own seq."""
    r = room()
    futs = [await bp.publish_begin(r, b"%d" % i, uuid.uuid4().hex) for i in range(300)]
    results = await asyncio.gather(*futs)
    seqs = [res.seq for res in results]
    assert len(set(seqs)) == 300 and not any(res.duplicate for res in results)
    stored = {m.seq: m.body for m in await bp.history(r, 1, 1000)}
    # history keeps the last 5: each of them is the body its publisher's ack named
    assert stored and all(stored[s] == b"%d" % i for i, s in enumerate(seqs) if s in stored)
