"""Origin check at the upgrade: only the node's own origin and configured origins (localhost
when none are configured) may open a WebSocket from a browser."""

from __future__ import annotations

import pytest
import websockets

from roomcast.node.web import origin_allowed
from tests.helpers import start_node, token


@pytest.mark.parametrize("origin,host,allowed,ok", [
    ("http://127.0.0.1:8765", "127.0.0.1:8765", (), True),  # same origin
    ("http://localhost:3000", "node:8765", (), True),  # dev default: localhost
    ("http://[::1]:3000", "node:8765", (), True),
    ("https://evil.example", "node:8765", (), False),
    ("https://app.example.com", "node:8765", ("https://app.example.com",), True),
    ("http://localhost:3000", "node:8765", ("https://app.example.com",), False),
    ("https://evil.example", "node:8765", ("*",), True),
    ("null", "node:8765", (), False),
])
def test_origin_policy(origin, host, allowed, ok):
    assert origin_allowed(origin, host, allowed) is ok


async def closed_before_welcome(url: str, origin: str) -> tuple[int, str]:
    """A browser-like upgrade (with Origin) that the node refuses: upgraded, then closed with a
    code and reason and no frame before it."""
    ws = await websockets.connect(url, origin=origin)
    with pytest.raises(websockets.ConnectionClosed):
        frame = await ws.recv()
        raise AssertionError(f"a frame before the close: {frame}")
    return ws.close_code, ws.close_reason


async def test_disallowed_origin_is_refused(nats3):
    """A browser page from another origin cannot open a session: the upgrade is closed at once
    with 4511 and the reason (a browser cannot read an HTTP 403); listed origins work; a bad
    token from a browser is 4510 with the reason, and from a non-browser client a 401."""
    node = await start_node(nats3.urls, allowed_origins=("https://app.example.com",))
    url = f"ws://127.0.0.1:{node.port}/ws?token={token('o')}"
    try:
        assert await closed_before_welcome(url, "https://evil.example") == (
            4511, "origin not allowed")
        bad = f"ws://127.0.0.1:{node.port}/ws?token=not-a-jwt"
        assert await closed_before_welcome(bad, "https://app.example.com") == (
            4510, "malformed token")
        with pytest.raises(websockets.InvalidStatus) as info:
            await websockets.connect(bad)
        assert info.value.response.status_code == 401
        ok = await websockets.connect(url, origin="https://app.example.com")
        await ok.close()
        same = await websockets.connect(url, origin=f"http://127.0.0.1:{node.port}")
        await same.close()
        plain = await websockets.connect(url)  # non-browser clients send no Origin
        await plain.close()
    finally:
        await node.stop()


async def test_node_serves_the_client_and_demo_page(nats3):
    """/, /roomcast.js and /demo.js are served with the right content types."""
    import asyncio
    import urllib.request

    def get(url: str) -> tuple[str, bytes]:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.headers["Content-Type"], r.read()

    node = await start_node(nats3.urls)
    try:
        def cors(origin: str) -> str | None:
            req = urllib.request.Request(f"http://127.0.0.1:{node.port}/roomcast.js",
                                         headers={"Origin": origin})
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.headers["Access-Control-Allow-Origin"]

        # The client may be imported from the allowed origins (here: the localhost default).
        assert await asyncio.to_thread(cors, "http://localhost:3000") == "http://localhost:3000"
        assert await asyncio.to_thread(cors, "https://evil.example") is None
        for path, ctype, needle in (("/", "text/html", b"roomcast demo"),
                                    ("/roomcast.js", "text/javascript", b"export class RoomcastClient"),
                                    ("/demo.js", "text/javascript", b"RoomcastClient")):
            got_type, body = await asyncio.to_thread(get, f"http://127.0.0.1:{node.port}{path}")
            assert got_type.startswith(ctype) and needle in body
    finally:
        await node.stop()


@pytest.mark.parametrize("headers,status,reason", [
    ([("Authorization", "Bearer {t}"), ("Authorization", "Bearer {t}")], 400,
     "more than one Authorization header"),
    ([("Origin", "http://localhost"), ("Origin", "http://localhost")], 400,
     "more than one Origin header"),
    ([("Authorization", "Bearer not-a-jwt")], 401, "malformed token"),
])
async def test_ambiguous_handshake_headers_get_a_4xx_not_a_500(nats3, caplog, headers, status,
                                                               reason):
    """Two Authorization or two Origin headers are a 400 with the reason, no error-level log;
    the node goes on accepting upgrades."""
    import asyncio
    import logging

    node = await start_node(nats3.urls)
    caplog.set_level(logging.WARNING)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        lines = ["GET /ws HTTP/1.1", f"Host: 127.0.0.1:{node.port}", "Upgrade: websocket",
                 "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                 "Sec-WebSocket-Version: 13",
                 *(f"{k}: {v.format(t=token('h'))}" for k, v in headers)]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
        length = int(next(h for h in head.decode().split("\r\n")
                          if h.lower().startswith("content-length")).split(":")[1])
        assert (await reader.readexactly(length)).decode().strip() == reason
        writer.close()
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        ok = await websockets.connect(f"ws://127.0.0.1:{node.port}/ws?token={token('h')}")
        await ok.close()
    finally:
        await node.stop()
