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


async def test_disallowed_origin_is_refused_with_403(nats3):
    """A browser page from another origin cannot open a WebSocket; listed ones can."""
    node = await start_node(nats3.urls, allowed_origins=("https://app.example.com",))
    url = f"ws://127.0.0.1:{node.port}/ws?token={token('o')}"
    try:
        with pytest.raises(websockets.InvalidStatus) as info:
            await websockets.connect(url, origin="https://evil.example")
        assert info.value.response.status_code == 403
        assert bytes(info.value.response.body).decode().strip() == "origin not allowed"
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
