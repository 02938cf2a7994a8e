"""The load generator's WebSocket frame parser (bench/wsclient.py) hands over every frame the
server sends, whole and in order, however the bytes are split: the benchmarks' loss and order
checks rely on it."""

from __future__ import annotations

import asyncio
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.wsclient import WsClientProtocol


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        pass


def frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


sizes = st.one_of(st.integers(0, 300), st.sampled_from([125, 126, 127, 65535, 65536, 70000]))
frames = st.lists(st.tuples(st.sampled_from([1, 1, 1, 2, 9]), sizes), max_size=12)


@settings(max_examples=300, deadline=None)
@given(frames, st.lists(st.integers(1, 70000), max_size=30), st.lists(st.booleans()))
def test_every_frame_arrives_whole_and_in_order_however_split(spec, cuts, at_boundaries):
    async def scenario() -> None:
        got: list[bytes] = []
        proto = WsClientProtocol("/ws", "h", got.append)
        proto.connection_made(Transport())
        payloads = [bytes([i % 251]) * size for i, (_, size) in enumerate(spec)]
        encoded = [frame(op, pl) for (op, _), pl in zip(spec, payloads, strict=True)]
        stream = b"HTTP/1.1 101 Switching Protocols\r\n\r\n" + b"".join(encoded)
        # Cut at frame boundaries (where the parser's fast path starts) as well as anywhere.
        boundaries, pos = [], len(stream) - sum(map(len, encoded))
        for f, cut_here in zip(encoded, at_boundaries, strict=False):
            if cut_here:
                boundaries.append(pos)
            pos += len(f)
        points = sorted({c % (len(stream) + 1) for c in cuts} | set(boundaries)
                        | {0, len(stream)})
        for a, b in zip(points, points[1:], strict=False):
            proto.data_received(stream[a:b])
        assert proto.handshaken.done()
        assert got == [pl for (op, _), pl in zip(spec, payloads, strict=True) if op in (1, 2)]
        pongs = [w for w in proto.transport.written[1:] if w[0] == 0x8A]
        assert len(pongs) == sum(op == 9 for op, _ in spec)

    asyncio.run(scenario())
