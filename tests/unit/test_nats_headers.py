"""FastHeadersClient parses header blocks exactly as nats-py does, only faster."""

from __future__ import annotations

import asyncio

import nats.aio.client
from hypothesis import given
from hypothesis import strategies as st
from roomcast.backplane.natsclient import FastHeadersClient

REAL = [
    b"NATS/1.0\r\nNats-Stream: ROOMS\r\nNats-Subject: room.a\r\nNats-Sequence: 42\r\n"
    b"Nats-Time-Stamp: 2026-11-21T16:00:00.123456789Z\r\nNats-Last-Sequence: 40\r\n\r\n",
    b"NATS/1.0 503\r\n\r\n",
    b"NATS/1.0 404 No Messages\r\n\r\n",
    b"NATS/1.0 100\r\nIdle Heartbeat\r\nNats-Last-Consumer: 1016\r\n\r\n",
    b"NATS/1.0\r\n\r\n",
    b"NATS/1.0\r\nA:b\r\nC:\tD \r\nbad key: x\r\nnocolon\r\n\xff\xfe: y\r\nE: \xc3\xa9\xff\r\n\r\n",
]

line_bytes = st.binary(max_size=20).filter(lambda b: b"\r\n" not in b and not b.endswith(b"\r"))


def both(block: bytes):
    async def run():
        return (await nats.aio.client.Client()._process_headers(block),
                await FastHeadersClient()._process_headers(block))
    return asyncio.run(run())


def test_real_header_blocks_parse_the_same():
    for block in REAL:
        slow, fast = both(block)
        assert slow == fast, block


@given(st.lists(st.tuples(line_bytes, line_bytes), max_size=6))
def test_random_header_blocks_parse_the_same(pairs):
    block = b"NATS/1.0\r\n" + b"".join(k + b":" + v + b"\r\n" for k, v in pairs) + b"\r\n"
    slow, fast = both(block)
    assert slow == fast
