"""node/wsconn.py: the node's WebSocket server (websockets' Sans-I/O protocol on one small asyncio
protocol per client), against real sockets on 127.0.0.1: websockets' own client where a
well-behaved client is wanted, raw bytes where the client misbehaves."""

from __future__ import annotations

import asyncio
import base64
import os
import struct

import pytest
import websockets
from websockets.asyncio.client import connect
from websockets.http11 import Response

from roomcast.node.wsconn import MAX_QUEUE, WsConnection
from roomcast.node.wsserver import WsServer
from tests.helpers import UNIT

pytestmark = pytest.mark.asyncio


#: Extra upgrade headers that send a client down each path: node/upgrade.py's fast path for the
#: plain request, websockets' parser when a header is repeated.
PATHS = {"fast": None, "websockets": [("X-Twice", "1"), ("X-Twice", "2")]}


@pytest.fixture(params=list(PATHS))
def upgrade_path(request):
    return request.param


def _client(url: str, path: str, **kw):
    return connect(url, compression=None, additional_headers=PATHS[path], **kw)


def _taken(server: WsServer, path: str, n: int = 1) -> bool:
    return server.fast_upgrades == (n if path == "fast" else 0)


async def _accept(conn, request):
    return None


async def _echo(ws: WsConnection) -> None:
    while True:
        message = await ws.recv()
        if isinstance(message, str):
            ws.protocol.send_text(message.encode())
        else:
            ws.protocol.send_binary(message)
        ws.send_data()


async def _server(handler=_echo, process_request=_accept, **kw) -> tuple[WsServer, str]:
    server = WsServer(handler, process_request, max_size=kw.pop("max_size", 4096), **kw)
    await server.start("127.0.0.1", 0)
    return server, f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws"


async def _until(condition, seconds: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail after ``seconds`` (scaled by UNIT)."""
    deadline = asyncio.get_running_loop().time() + seconds * UNIT
    while True:
        if condition():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def _stop(server: WsServer) -> None:
    server.close()
    await asyncio.wait_for(server.wait_closed(), 10 * UNIT)


def _masked(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A client frame (masked, as RFC 6455 requires), payload under 126 bytes."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)]) + mask + body


def _request(path: str = "/ws") -> bytes:
    """A plain upgrade request, with a fresh key."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n").encode()


async def _connect(server: WsServer):
    """A raw TCP connection to ``server``: (reader, writer)."""
    return await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])


async def _raw_upgrade(url: str):
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_request())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10 * UNIT)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return reader, writer


async def _read_frame(reader) -> tuple[int, bytes]:
    """One server frame (unmasked, under 64 KiB): its first byte and its payload."""
    b0, b1 = await asyncio.wait_for(reader.readexactly(2), 10 * UNIT)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    return b0, await reader.readexactly(n)


async def _read_close(reader) -> int:
    """Read server frames until a close frame; its code."""
    while True:
        b0, payload = await _read_frame(reader)
        if b0 & 0x0F == 0x8:
            return struct.unpack("!H", payload[:2])[0]


async def test_messages_echo_in_order_text_and_binary_and_the_server_header_is_set(upgrade_path):
    server, url = await _server()
    try:
        async with _client(url, upgrade_path) as ws:
            assert _taken(server, upgrade_path)
            assert ws.response.headers["Server"] == "roomcast"
            assert ws.response.headers["Upgrade"] == "websocket"
            for i in range(50):
                await ws.send(f"m{i}")
            assert [await ws.recv() for _ in range(50)] == [f"m{i}" for i in range(50)]
            await ws.send(b"\x00\x01")
            assert await ws.recv() == b"\x00\x01"
    finally:
        await _stop(server)


async def test_a_handler_that_only_waits_still_upgrades_the_client(upgrade_path):
    """The 101 is held for the handler's first frame; a handler that writes nothing and
    waits (for the client, or for anything else) must not leave the client waiting for it."""
    got = asyncio.get_running_loop().create_future()

    async def waits(ws: WsConnection) -> None:
        await asyncio.sleep(0.05)
        got.set_result(await ws.recv())

    server, url = await _server(waits)
    try:
        async with _client(url, upgrade_path, open_timeout=5 * UNIT) as ws:
            assert _taken(server, upgrade_path)
            await ws.send("hello")
            assert await asyncio.wait_for(got, 10 * UNIT) == "hello"
    finally:
        await _stop(server)


async def test_the_first_frame_goes_out_with_the_101_and_a_returning_handler_closes_1000():
    async def greets(ws: WsConnection) -> None:
        ws.protocol.send_text(b'{"type":"welcome"}')
        ws.send_data()

    server, url = await _server(greets)
    try:
        reader, writer = await _raw_upgrade(url)
        assert await _read_frame(reader) == (0x81, b'{"type":"welcome"}')
        assert await _read_close(reader) == 1000
        writer.close()
    finally:
        await _stop(server)


async def test_a_handler_that_fails_closes_1011_without_details():
    async def fails(ws: WsConnection) -> None:
        await ws.recv()
        raise RuntimeError("a bug with a secret in it")

    server, url = await _server(fails)
    try:
        async with connect(url, compression=None) as ws:
            await ws.send("x")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10 * UNIT)
            assert closed.value.rcvd.code == 1011 and "secret" not in closed.value.rcvd.reason
    finally:
        await _stop(server)


async def test_fragmented_messages_are_reassembled_and_bounded_by_max_size():
    server, url = await _server(max_size=100)
    try:
        reader, writer = await _raw_upgrade(url)
        writer.write(_masked(0x1, b"hel", fin=False) + _masked(0x0, b"lo ", fin=False)
                     + _masked(0x0, b"world"))
        assert (await _read_frame(reader))[1] == b"hello world"
        # 3 x 40 bytes: each fragment fits, the message does not
        writer.write(_masked(0x1, b"x" * 40, fin=False) + _masked(0x0, b"x" * 40, fin=False)
                     + _masked(0x0, b"x" * 40))
        assert await _read_close(reader) == 1009
        writer.close()
    finally:
        await _stop(server)


async def test_a_text_frame_that_is_not_utf8_is_closed_1007():
    server, url = await _server()
    try:
        reader, writer = await _raw_upgrade(url)
        writer.write(_masked(0x1, b"ok\xff\xfe"))
        assert await _read_close(reader) == 1007
        writer.close()
    finally:
        await _stop(server)


async def test_a_flood_the_handler_does_not_read_pauses_reading_and_loses_nothing():
    """Once MAX_QUEUE messages wait for the reader, the socket is not read any more (the
    kernel's buffers and TCP hold the rest): what waits is at most MAX_QUEUE plus what one read
    held. Once the reader catches up, every message arrives, in order."""
    n = 20_000
    release = asyncio.Event()
    seen: list[str] = []
    conns: list[WsConnection] = []

    async def slow(ws: WsConnection) -> None:
        conns.append(ws)
        await release.wait()
        while True:
            seen.append(await ws.recv())

    server, url = await _server(slow)
    try:
        async with connect(url, compression=None, max_queue=None) as ws:
            ws.transport.set_write_buffer_limits(high=2**25)  # the client just pushes
            sending = asyncio.ensure_future(asyncio.gather(
                *(ws.send(f"{i:05d}" + "x" * 100) for i in range(n))))
            await _until(lambda: conns and conns[0]._reading_paused)
            await asyncio.sleep(0.2)  # time to read more, had reading not stopped
            conn = conns[0]
            assert conn._reading_paused
            one_read = 256 * 1024 // 108 + 1  # uvloop reads at most 256 KiB at a time
            assert len(conn._messages) <= MAX_QUEUE + one_read < n
            release.set()
            await _until(lambda: len(seen) == n, 30.0)
            await sending
            assert [int(m[:5]) for m in seen] == list(range(n))
    finally:
        await _stop(server)


async def test_ping_is_answered_by_the_client_and_a_lost_connection_cancels_it():
    pongs: list[asyncio.Future] = []

    async def pings(ws: WsConnection) -> None:
        pongs.append(ws.ping())
        await asyncio.wait_for(asyncio.shield(pongs[0]), 10 * UNIT)
        pongs.append(ws.ping())
        await ws.recv()

    server, url = await _server(pings)
    try:
        ws = await connect(url, compression=None, ping_interval=None)
        await _until(lambda: len(pongs) == 2)
        assert pongs[0].done() and not pongs[0].cancelled()
        ws.transport.abort()  # gone without answering the second ping (maybe)
        await _until(lambda: not server.connections)
        assert not server.connections and pongs[1].done()
    finally:
        await _stop(server)


async def test_an_upgrade_never_completed_is_dropped_after_open_timeout():
    server, url = await _server(open_timeout=0.2)
    try:
        reader, writer = await _connect(server)
        writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        assert await asyncio.wait_for(reader.read(), 10 * UNIT) == b""
        writer.close()
        await _until(lambda: not server.connections)
    finally:
        await _stop(server)


async def test_a_client_that_never_answers_our_close_is_dropped_after_close_timeout():
    closed = asyncio.get_running_loop().create_future()

    async def closes(ws: WsConnection) -> None:
        await ws.close(4001, "slow consumer")
        closed.set_result(None)

    server, url = await _server(closes, close_timeout=0.2)
    try:
        reader, writer = await _raw_upgrade(url)
        assert await _read_close(reader) == 4001  # read, never answered
        await asyncio.wait_for(closed, 10 * UNIT)
        assert not server.connections
        writer.close()
    finally:
        await _stop(server)


async def test_http_answers_bad_upgrades_and_process_request_failures(upgrade_path):
    async def route(conn, request):
        if request.path == "/static":
            return Response(200, "OK", websockets.Headers([("Content-Length", "2")]), b"hi")
        if request.path == "/boom":
            raise RuntimeError("a bug")
        return None

    server, url = await _server(process_request=route)
    base = url.rsplit("/", 1)[0]
    try:
        for path, status in (("/static", 200), ("/boom", 500)):
            with pytest.raises(websockets.InvalidStatus) as info:
                await _client(base + path, upgrade_path)
            assert info.value.response.status_code == status
            assert info.value.response.headers["Server"] == "roomcast"
        assert server.fast_upgrades == 0  # refused: never opened on either path
        reader, writer = await _connect(server)
        writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")  # no upgrade headers
        head = await asyncio.wait_for(reader.read(), 10 * UNIT)
        assert head.startswith(b"HTTP/1.1 426 ")
        writer.close()
    finally:
        await _stop(server)


async def test_closing_the_server_closes_open_connections_1001_and_refuses_upgrades_503(
        upgrade_path):
    waiting = asyncio.Event()
    go = asyncio.Event()

    async def slow_accept(conn, request):
        if request.path == "/slow":
            waiting.set()
            await go.wait()
        return None

    server, url = await _server(process_request=slow_accept)
    base = url.rsplit("/", 1)[0]
    ws = await _client(url, upgrade_path)
    pending = asyncio.ensure_future(_client(base + "/slow", upgrade_path))
    await asyncio.wait_for(waiting.wait(), 10 * UNIT)
    server.close()
    go.set()
    with pytest.raises(websockets.InvalidStatus) as info:
        await pending
    assert info.value.response.status_code == 503
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 10 * UNIT)
    assert closed.value.rcvd.code == 1001
    await asyncio.wait_for(server.wait_closed(), 10 * UNIT)
    assert _taken(server, upgrade_path)  # the first connection; /slow was refused


@pytest.mark.parametrize("verdict", ["upgrade", "refused"])
async def test_frames_sent_before_a_fast_path_verdict_are_read_after_it_or_dropped(verdict):
    """A client may send frames right after its request, before the 101: on the fast path
    they wait (reading paused) for the handshake's verdict, then are read as websockets would
    read them — echoed after the 101 — or, when the upgrade is refused, dropped with it."""
    arrived = asyncio.Event()

    async def waits(conn, request):
        arrived.set()
        await _until(lambda: bool(conn._early))  # the frame came during the verdict
        if verdict == "refused":
            return Response(401, "Unauthorized", websockets.Headers([("Content-Length", "0")]))
        return None

    server, url = await _server(process_request=waits)
    try:
        reader, writer = await _connect(server)
        writer.write(_request())
        await asyncio.wait_for(arrived.wait(), 10 * UNIT)  # taken as one read: the fast path
        writer.write(_masked(0x1, b"early"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10 * UNIT)
        if verdict == "refused":
            assert head.startswith(b"HTTP/1.1 401 ") and b"Server: roomcast" in head
            assert await asyncio.wait_for(reader.read(), 10 * UNIT) == b""  # then closed
            assert server.fast_upgrades == 0
        else:
            assert head.startswith(b"HTTP/1.1 101 ") and server.fast_upgrades == 1
            assert await _read_frame(reader) == (0x81, b"early")
        writer.close()
    finally:
        await _stop(server)


async def test_a_request_split_over_two_reads_is_parsed_by_websockets():
    """Not one read: websockets parses the request (and upgrades it), not the fast path."""
    server, url = await _server()
    try:
        reader, writer = await _connect(server)
        request = _request()
        writer.write(request[:20])
        # the server read the first part on its own (websockets' parser holds it)
        await _until(lambda: any(c.protocol is not None for c in server.connections))
        writer.write(request[20:])
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10 * UNIT)
        assert head.startswith(b"HTTP/1.1 101 ") and server.fast_upgrades == 0
        writer.write(_masked(0x1, b"after"))
        assert await _read_frame(reader) == (0x81, b"after")
        writer.close()
    finally:
        await _stop(server)
