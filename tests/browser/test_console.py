"""The operator console on the internal port, in a real headless Chromium, against real nodes
on a real 3-server JetStream cluster: nodes, traffic charts, rooms, a room's presence and last
messages, and its actions (drain a node, disconnect a user), all behind the API key."""

from __future__ import annotations

import asyncio

import pytest

from tests.browser.test_demo import ARTIFACTS, CHROMIUM, FLAGS, async_playwright, wait_js
from tests.helpers import UNIT, WsClient, room_name, start_node, token

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (Debian package "
                                                "'chromium'; .ci/run installs it as root)"),
    pytest.mark.skipif(async_playwright is None, reason="playwright not installed"),
]

KEY = "console-key-0123456789abcdef"


async def test_the_console_shows_the_cluster_and_acts(nats3, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(KEY + "\n")
    a = await start_node(nats3.urls, node_id="con-a", api_key_file=str(keys))
    b = await start_node(nats3.urls, node_id="con-b", api_key_file=str(keys))
    room = room_name("con")
    clients = [await WsClient.connect(n.port, token(u)) for n, u in ((a, "ann"), (b, "bob"))]
    for c in clients:
        await c.join(room)
    stop = asyncio.Event()

    async def traffic() -> None:
        i = 0
        while not stop.is_set():
            await clients[0].publish(room, {"text": f"m{i}"})
            i += 1
            await asyncio.sleep(0.05)

    pump = asyncio.create_task(traffic())
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 900})
                page.on("dialog", lambda d: asyncio.ensure_future(d.accept()))
                await page.goto(f"http://127.0.0.1:{a.internal_port}/console")
                # Without the key the page shows nothing of the cluster.
                await page.fill("#key", "wrong-key-0123456789")
                await page.click("#keyform button")
                await wait_js(page, "document.getElementById('status').dataset.ok === 'false'")
                assert "unauthorized" in await page.text_content("#status")
                assert await page.eval_on_selector_all("#nodes tr", "r => r.length") == 0
                await page.fill("#key", KEY)
                await page.click("#keyform button")
                await wait_js(page, "document.querySelectorAll('#nodes tr').length === 2")
                rows = await page.eval_on_selector_all("#nodes tr", "r => r.map(e => e.dataset.node)")
                assert rows == ["con-a", "con-b"]
                await wait_js(page, f"!!document.querySelector('#rooms tr[data-room=\"{room}\"]')")
                await page.click(f"#rooms tr[data-room='{room}']")
                await wait_js(page, "document.getElementById('members').textContent"
                                    " === 'ann, bob'")
                await wait_js(page, "document.querySelectorAll('#messages li').length === 10")
                await wait_js(page, "Number(document.getElementById('dps').textContent"
                                    ".replace(/,/g, '')) > 0", timeout=20 * UNIT)
                await wait_js(page, "Number(document.getElementById('pps').textContent"
                                    ".replace(/,/g, '')) > 0", timeout=20 * UNIT)
                await asyncio.sleep(3)  # a few seconds of chart
                ARTIFACTS.mkdir(exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "console.png"))

                await page.fill("#user", "bob")
                await page.click("#disconnect button")
                await wait_js(page, "document.getElementById('disconnected').textContent"
                                    ".startsWith('closed 1 connection')")
                assert await asyncio.wait_for(clients[1].closed, 10 * UNIT) == 4003

                await page.click("#nodes tr[data-node='con-b'] button")
                async with asyncio.timeout(20 * UNIT):
                    while not b.draining:  # noqa: ASYNC110 - the node is in this process
                        await asyncio.sleep(0.05)
            finally:
                await browser.close()
    finally:
        stop.set()
        await pump
        for c in clients:
            await c.close()
        await a.stop()
        await b.stop()
