"""An application page on another origin imports roomcast.js from a node (CORS), chats with a
page on another node, survives kill -9 of its node; a bad token shows its reason and stops
the retries; a page of an origin not allowed cannot import the client. Real headless
Chromium, real node processes, a real 3-server JetStream cluster."""

from __future__ import annotations

import asyncio
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from roomcast.dev import NodeProcess
from roomcast.natsserver import free_port
from tests.browser.test_demo import CHROMIUM, FLAGS, async_playwright, wait_js
from tests.helpers import KEY, UNIT, room_name, start_node, token

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (Debian package "
                                                "'chromium'; .ci/run installs it as root)"),
    pytest.mark.skipif(async_playwright is None, reason="playwright not installed"),
]

APP_PAGE = b"""<!doctype html><meta charset="utf-8"><title>an app</title>
<ul id="log"></ul>
<script type="module">
const q = new URLSearchParams(location.search);
window.states = []; window.got = []; window.failure = null;
try {
  const { RoomcastClient } = await import(q.get("node") + "/roomcast.js");
  const c = (window.client = new RoomcastClient(q.get("urls").split(","), q.get("token"),
                                                 { shuffleUrls: false, backoffCap: 1000 }));
  c.addEventListener("state", (e) => window.states.push(e.detail.state));
  c.addEventListener("message", (e) => window.got.push(e.detail.data));
  await c.connect();
  await c.join(q.get("room"));
  window.joined = true;
} catch (err) {
  window.failure = { code: err.code ?? "import", message: String(err.message || err) };
}
</script>"""


class AppServer:
    """The application's own web server: another origin than any node. ``routes``: path ->
    (content type, body); anything else gets the test app page."""

    def __init__(self, routes: dict[str, tuple[str, bytes]] | None = None) -> None:
        routes = routes or {}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                ctype, body = routes.get(self.path.split("?")[0],
                                         ("text/html; charset=utf-8", APP_PAGE))
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_an_app_on_another_origin_uses_the_shipped_client(nats3):
    app = AppServer()
    allowed = f"http://localhost:{app.port}"  # 127.0.0.1:<same port> is another origin
    port_a = free_port()
    node_a = NodeProcess("node-a", "127.0.0.1", port_a, nats3.urls, KEY, 3,
                         {"ROOMCAST_LOG_LEVEL": "warning", "ROOMCAST_ALLOWED_ORIGINS": allowed})
    node_b = await start_node(nats3.urls, node_id="node-b", allowed_origins=(allowed,))
    room = room_name("app")
    http_a, http_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{node_b.port}"
    ws_a, ws_b = f"ws://127.0.0.1:{port_a}/ws", f"ws://127.0.0.1:{node_b.port}/ws"

    def page_url(origin: str, node: str, urls: str, tok: str) -> str:
        return f"{origin}/app.html?node={node}&urls={urls}&token={tok}&room={room}"

    try:
        await asyncio.to_thread(node_a.wait_ready)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            try:
                p1, p2 = await browser.new_page(), await browser.new_page()
                await p1.goto(page_url(allowed, http_a, f"{ws_a},{ws_b}", token("ann")))
                await p2.goto(page_url(allowed, http_b, ws_b, token("ben")))
                for p in (p1, p2):
                    await wait_js(p, "window.joined === true || window.failure !== null")
                    assert await p.evaluate("window.failure") is None
                await p1.evaluate("window.client.publish(new URLSearchParams(location.search)"
                                  ".get('room'), 'hello from ann')")
                await wait_js(p2, "window.got.includes('hello from ann')")
                node_a.proc.send_signal(signal.SIGKILL)  # page 1's node dies
                for i in range(3):
                    await p2.evaluate(f"window.client.publish(new URLSearchParams("
                                      f"location.search).get('room'), 'away {i}')")
                await wait_js(p1, "window.got.length === 4", timeout=30 * UNIT)
                assert await p1.evaluate("window.got") == ["hello from ann", "away 0", "away 1",
                                                           "away 2"]
                assert await p1.evaluate("window.client.node") == "node-b"

                # A bad token: the reason reaches the page, connect() rejects, no retries.
                bad = await browser.new_page()
                await bad.goto(page_url(allowed, http_b, ws_b, "not-a-jwt"))
                await wait_js(bad, "window.failure !== null")
                assert await bad.evaluate("window.failure") == {
                    "code": "unauthorized", "message": "unauthorized: malformed token"}
                assert await bad.evaluate("window.states") == ["connecting", "failed"]
                assert await bad.evaluate("window.client.publish('r', 1).then(() => 'sent',"
                                          " (e) => 'rejected: ' + e.code)") == \
                    "rejected: unauthorized"

                # A page of an origin that is not allowed cannot even import the client.
                other = await browser.new_page()
                await other.goto(page_url(f"http://127.0.0.1:{app.port}", http_b, ws_b,
                                          token("eve")))
                await wait_js(other, "window.failure !== null")
                assert (await other.evaluate("window.failure"))["code"] == "import"
            finally:
                await browser.close()
    finally:
        node_a.stop()
        await node_b.stop()
        app.close()


async def test_the_browser_example_of_the_docs_runs(nats3):
    """docs/browser.md's page, as written but for its NODE line, on an application origin with
    the token endpoint it fetches from: it connects, joins, publishes and receives."""
    import re
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "browser.md").read_text()
    page = re.search(r"```html\n(.*?)```", doc, re.S).group(1)
    node = await start_node(nats3.urls, node_id="node-doc")
    node_line = 'const NODE = "https://rooms.example.com";'
    assert node_line in page
    page = page.replace(node_line, f'const NODE = "http://127.0.0.1:{node.port}";')
    app = AppServer({"/example.html": ("text/html; charset=utf-8", page.encode()),
                     "/api/roomcast-token": ("text/plain", token("docs").encode())})
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            try:
                p = await browser.new_page()
                logs: list[str] = []
                p.on("console", lambda m: logs.append(m.text))
                await p.goto(f"http://localhost:{app.port}/example.html")
                async with asyncio.timeout(20 * UNIT):
                    while not any(line.startswith("published ") for line in logs):  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                    seq = next(line for line in logs if line.startswith("published ")).split()[1]
                    while f'#{seq} docs: {{"text":"hi"}}' not in logs:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                assert "connected node-doc" in logs, logs
            finally:
                await browser.close()
    finally:
        await node.stop()
        app.close()
