"""Origin check at the upgrade: only the node's own origin and configured origins (localhost
when none are configured) may open a WebSocket from a browser."""

from __future__ import annotations

import pytest
import websockets
from roomcast.node.server import origin_allowed

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
