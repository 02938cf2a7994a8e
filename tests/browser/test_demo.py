"""The demo page and roomcast.js in a real headless Chromium (Debian's package, driven by
Playwright with executable_path: no browser is downloaded)."""

from __future__ import annotations

import asyncio
import shutil
import signal
from pathlib import Path

import pytest

from roomcast.dev import NodeProcess
from roomcast.natsserver import free_port
from tests.helpers import KEY, UNIT, room_name, start_node, token

CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium",
                             shutil.which("chromium-browser")) if p and Path(p).exists()), None)
ARTIFACTS = Path(__file__).parents[1] / "artifacts"
try:
    from playwright.async_api import async_playwright
except ImportError:  # pragma: no cover - a dev dependency
    async_playwright = None

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (Debian package "
                                                "'chromium'; .ci/run installs it as root)"),
    pytest.mark.skipif(async_playwright is None, reason="playwright not installed"),
]

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]


async def texts(page, selector: str, attr: str | None = None) -> list[str]:
    if attr:
        return await page.eval_on_selector_all(selector, f"els => els.map(e => e.dataset.{attr})")
    return await page.eval_on_selector_all(selector, "els => els.map(e => e.textContent)")


async def wait_js(page, expr: str, timeout: float = 20 * UNIT) -> None:
    await page.wait_for_function(expr, timeout=timeout * 1000)


async def test_two_pages_chat_see_each_other_and_resume_after_kill_9(nats3):
    """Pages on two nodes chat and see each other; page 1's node is killed; everything page 2
    sent meanwhile appears on page 1 after it resumes, in order, once."""
    port_a = free_port()
    node_a = NodeProcess("node-a", "127.0.0.1", port_a, nats3.urls, KEY, 3,
                         {"ROOMCAST_LOG_LEVEL": "warning"})
    node_b = await start_node(nats3.urls, node_id="node-b")
    room = room_name("demo")
    ws_a, ws_b = f"ws://127.0.0.1:{port_a}/ws", f"ws://127.0.0.1:{node_b.port}/ws"
    try:
        await asyncio.to_thread(node_a.wait_ready)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            try:
                page1 = await browser.new_page(viewport={"width": 1000, "height": 640})
                page2 = await browser.new_page(viewport={"width": 1000, "height": 640})
                await page1.goto(f"http://127.0.0.1:{port_a}/?token={token('alice')}"
                                 f"&room={room}&nodes={ws_a},{ws_b}")
                await page2.goto(f"http://127.0.0.1:{node_b.port}/?token={token('bob')}"
                                 f"&room={room}&nodes={ws_b}")
                for page, node in ((page1, "node-a"), (page2, "node-b")):
                    await wait_js(page, "document.getElementById('state').textContent"
                                        " === 'connected'")
                    assert await page.text_content("#node") == node
                for page in (page1, page2):
                    await wait_js(page, "document.querySelectorAll('#members li').length === 2")
                    assert await texts(page, "#members li", "user") == ["alice", "bob"]

                async def say(page, text: str) -> None:
                    await page.fill("#text", text)
                    await page.click("#send")

                await say(page2, "hello from bob")
                await say(page1, "hi bob, alice here")
                for page in (page1, page2):
                    await wait_js(page, "document.querySelectorAll('#messages li.msg').length === 2")
                notices = await texts(page1, "#messages li.notice")
                assert any(n.endswith("bob joined") for n in notices), notices
                ARTIFACTS.mkdir(exist_ok=True)
                await page1.screenshot(path=str(ARTIFACTS / "demo-page.png"))

                node_a.proc.send_signal(signal.SIGKILL)  # page 1's node dies
                for i in range(5):
                    await say(page2, f"while you were away {i}")
                await wait_js(page2, "document.querySelectorAll('#messages li.msg').length === 7")
                await wait_js(page1, "document.getElementById('node').textContent === 'node-b'"
                                     " && document.getElementById('state').textContent"
                                     " === 'connected'", timeout=30 * UNIT)
                await wait_js(page1, "document.querySelectorAll('#messages li.msg').length >= 7")
                # A sentinel: anything page 1 would get twice comes before it, in order.
                await say(page2, "sentinel")
                for page in (page1, page2):
                    await wait_js(page, "[...document.querySelectorAll('#messages li.msg .text')]"
                                        ".some((e) => e.textContent === 'sentinel')")
                seqs1 = [int(s) for s in await texts(page1, "#messages li.msg", "seq")]
                seqs2 = [int(s) for s in await texts(page2, "#messages li.msg", "seq")]
                assert seqs1 == seqs2, (seqs1, seqs2)
                assert seqs1 == sorted(set(seqs1))
                body1 = await texts(page1, "#messages li.msg .text")
                assert body1[2:] == [f"while you were away {i}" for i in range(5)] + ["sentinel"]
                assert await page1.get_attribute("#resume", "data-recovered") == "true"
                await page1.screenshot(path=str(ARTIFACTS / "demo-page-resumed.png"))
                assert (ARTIFACTS / "demo-page.png").stat().st_size > 10_000
            finally:
                await browser.close()
    finally:
        node_a.stop()
        await node_b.stop()


async def test_the_demo_page_shows_history_and_loads_older(nats3):
    """The page opens with the room's last 30 messages (history), oldest first; "Load older"
    adds the rest above them, in order, and disappears when nothing older is retained; live
    messages go below."""
    node = await start_node(nats3.urls, node_id="node-h")
    room = room_name("hist")
    from tests.helpers import WsClient

    pub = await WsClient.connect(node.port, token("carol"))
    seqs = [(await pub.publish(room, {"text": f"old {i}"}))["seq"] for i in range(45)]
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            try:
                page = await browser.new_page(viewport={"width": 1000, "height": 640})
                await page.goto(f"http://127.0.0.1:{node.port}/?token={token('dan')}"
                                f"&room={room}")
                await wait_js(page, "document.querySelectorAll('#messages li.msg').length === 30")
                assert [int(s) for s in await texts(page, "#messages li.msg", "seq")] == seqs[15:]
                assert await page.is_visible("#older")
                await page.click("#older")
                await wait_js(page, "document.querySelectorAll('#messages li.msg').length === 45")
                assert [int(s) for s in await texts(page, "#messages li.msg", "seq")] == seqs
                await wait_js(page, "document.getElementById('older').hidden")
                live = (await pub.publish(room, {"text": "live"}))["seq"]
                await wait_js(page, "document.querySelectorAll('#messages li.msg').length === 46")
                assert [int(s) for s in await texts(page, "#messages li.msg", "seq")] == seqs + [live]
                ARTIFACTS.mkdir(exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "demo-page-history.png"))
            finally:
                await browser.close()
    finally:
        await pub.close()
        await node.stop()


async def test_the_demo_page_on_a_phone_and_with_a_bad_token(nats3):
    """At 390 px nothing runs off the screen (no horizontal scroll); a bad token shows its
    reason in the state line, and the page stops trying."""
    node = await start_node(nats3.urls, node_id="node-m")
    room = room_name("phone")
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            try:
                phone = await browser.new_page(viewport={"width": 390, "height": 844})
                long_name = token("a-user-with-a-rather-long-name-that-could-overflow")
                await phone.goto(f"http://127.0.0.1:{node.port}/?token={long_name}&room={room}")
                await wait_js(phone, "document.getElementById('state').textContent"
                                     " === 'connected'")
                await phone.fill("#text", "hello from a phone")
                await phone.click("#send")
                await wait_js(phone, "document.querySelectorAll('#messages li.msg').length === 1")
                width = await phone.evaluate("document.documentElement.scrollWidth")
                assert width <= 390, width
                ts = await texts(phone, "#messages li.msg .ts")
                assert ts[0] and ":" in ts[0]  # a timestamp on every message
                ARTIFACTS.mkdir(exist_ok=True)
                await phone.screenshot(path=str(ARTIFACTS / "demo-page-390px.png"))

                bad = await browser.new_page(viewport={"width": 390, "height": 844})
                await bad.goto(f"http://127.0.0.1:{node.port}/?token=not-a-jwt&room={room}")
                await wait_js(bad, "document.getElementById('state').textContent === 'failed'")
                assert "malformed token" in await bad.text_content("#why")
                await bad.screenshot(path=str(ARTIFACTS / "demo-page-bad-token.png"))
            finally:
                await browser.close()
    finally:
        await node.stop()


async def test_the_demo_page_counts_a_room_too_big_to_list_then_lists_it_again(nats3):
    """roomcast.js in Chromium with a real node whose rooms list at most 2 users: members
    listed from presence_diff, then only counted (presence_count: the list empties, the count
    goes on), then listed again (presence_state) when the room shrinks."""
    from roomcast.presence.tracker import PresenceConfig
    from tests.helpers import WsClient

    node = await start_node(nats3.urls, node_id="counted",
                            presence=PresenceConfig(heartbeat_interval=0.25, timeout=1.5,
                                                    list_max=2, diff_interval=0.02,
                                                    count_interval=0.1))
    room = room_name("big")
    others: list[WsClient] = []
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            try:
                page = await browser.new_page(viewport={"width": 1000, "height": 640})
                await page.goto(f"http://127.0.0.1:{node.port}/?token={token('pia')}"
                                f"&room={room}&nodes=ws://127.0.0.1:{node.port}/ws")
                await wait_js(page, "document.getElementById('state').textContent"
                                    " === 'connected'")
                others.append(await WsClient.connect(node.port, token("quin")))
                await others[-1].join(room)
                await wait_js(page, "document.querySelectorAll('#members li').length === 2")
                assert await texts(page, "#members li", "user") == ["pia", "quin"]
                for user in ("rex", "sol"):
                    others.append(await WsClient.connect(node.port, token(user)))
                    await others[-1].join(room)
                await wait_js(page, "document.getElementById('count').textContent === '4'"
                                    " && document.querySelectorAll('#members li').length === 0")
                for c in others:
                    await c.close()
                others.clear()
                await wait_js(page, "document.getElementById('count').textContent === '1'"
                                    " && document.querySelectorAll('#members li').length === 1")
                assert await texts(page, "#members li", "user") == ["pia"]
            finally:
                await browser.close()
    finally:
        for c in others:
            await c.close()
        await node.stop()
