"""Token refresh on live connections (docs/protocol.md §3.7, §4.13): the Python client and
roomcast.js in a real headless Chromium, each with 20 s tokens from a token function, stay on
one connection for 3 minutes with no lost message; a client whose token function stops
giving tokens is closed with 4500 at expiry. Real nodes, a real 3-server JetStream cluster.

The duration is ``ROOMCAST_REFRESH_SOAK_SECONDS`` (default 180: the acceptance criterion);
both clients run at the same time, on a cluster of their own, in the background while the rest
of the suite runs (tests/background.py); tests/test_zz_background.py judges the outcome."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from roomcast.client import State, connect
from roomcast.natsserver import NatsCluster
from tests import background
from tests.browser.test_demo import CHROMIUM, FLAGS, async_playwright, wait_js
from tests.helpers import UNIT, WsClient, room_name, start_node, token

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (Debian package "
                                                "'chromium'; .ci/run installs it as root)"),
    pytest.mark.skipif(async_playwright is None, reason="playwright not installed"),
]

SOAK = float(os.environ.get("ROOMCAST_REFRESH_SOAK_SECONDS", "180"))
TOKEN_TTL = 20

BROWSER_CLIENT = """async ([url, room]) => {
  const { RoomcastClient } = await import("/roomcast.js");
  const got = (window.got = []);
  window.states = [];
  const c = (window.soak = new RoomcastClient([url], () => window.mintToken(),
                                              { shuffleUrls: false }));
  c.addEventListener("state", (e) => window.states.push(e.detail.state));
  c.addEventListener("message", (e) => got.push(e.detail.seq));
  await c.connect();
  await c.join(room);
  return c.tokenExpires;
}"""


@pytest.mark.timeout(SOAK + 180)
def test_sessions_with_20s_tokens_last_3_minutes_on_one_connection():
    """Started here, judged by tests/test_zz_background.py (or here, when that is not run)."""
    fut = background.start("token-refresh-soak", soak)
    if not background.CHECKED_LATER:
        fut.result(timeout=SOAK + 150)


async def soak() -> None:
    with NatsCluster(3) as cluster:
        await _soak(cluster)


async def _soak(nats3) -> None:
    a = await start_node(nats3.urls, node_id="soak-a")
    b = await start_node(nats3.urls, node_id="soak-b")
    room = room_name("soak")
    minted = {"python": 0, "browser": 0}

    def mint(who: str, user: str) -> str:
        minted[who] += 1
        return token(user, ttl=TOKEN_TTL)

    states: list[tuple[State, dict]] = []
    publisher = await WsClient.connect(b.port, token("pub", ttl=3600))
    sent: list[int] = []
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            try:
                page = await browser.new_page()
                await page.expose_function("mintToken", lambda: mint("browser", "web"))
                await page.goto(f"http://127.0.0.1:{a.port}/")
                first_exp = await page.evaluate(BROWSER_CLIENT,
                                                [f"ws://127.0.0.1:{a.port}/ws", room])
                async with connect(f"ws://127.0.0.1:{a.port}/ws",
                                   lambda: mint("python", "py"),
                                   on_state=lambda s, i: states.append((s, i))) as py:
                    await py.join(room)
                    py_first_exp = py.token_expires
                    received: list[int] = []

                    async def read() -> None:
                        async for msg in py:
                            received.append(msg.seq)

                    reader = asyncio.create_task(read())
                    end = time.monotonic() + SOAK
                    while time.monotonic() < end:
                        sent.append((await publisher.publish(room, len(sent)))["seq"])
                        await asyncio.sleep(1.0)
                    sentinel = (await publisher.publish(room, "end"))["seq"]
                    sent.append(sentinel)
                    async with asyncio.timeout(20 * UNIT):
                        while not received or received[-1] != sentinel:  # noqa: ASYNC110
                            await asyncio.sleep(0.05)
                    reader.cancel()
                    assert received == sent  # every message, in order, once
                    assert py.sessions == 1 and py.conn_id is not None
                    assert not [s for s, _ in states if s is State.DISCONNECTED]
                    assert py.token_expires > py_first_exp + SOAK - TOKEN_TTL
                await wait_js(page, f"window.got.length && window.got.at(-1) === {sentinel}")
                assert await page.evaluate("window.got") == sent
                assert await page.evaluate("window.soak.sessions") == 1
                assert await page.evaluate("window.states") == ["connecting", "connected"]
                assert await page.evaluate("window.soak.tokenExpires") > first_exp + SOAK - TOKEN_TTL
            finally:
                await browser.close()
        # One token at connect, then one per refresh (about every TOKEN_TTL / 2 seconds).
        for who in ("python", "browser"):
            assert minted[who] >= SOAK / TOKEN_TTL, minted
    finally:
        await publisher.close()
        await a.stop()
        await b.stop()


async def test_a_client_whose_token_function_stops_is_closed_4500_at_expiry(nats3):
    node = await start_node(nats3.urls, node_id="soak-x")
    calls = 0

    def provider() -> str:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("identity provider unreachable")
        return token("zoe", ttl=4)

    closed = asyncio.get_running_loop().create_future()

    def on_state(state: State, info: dict) -> None:
        if state is State.DISCONNECTED and not closed.done():
            closed.set_result(info.get("code"))

    try:
        async with connect(f"ws://127.0.0.1:{node.port}/ws", provider, on_state=on_state) as c:
            exp = c.token_expires
            assert await asyncio.wait_for(closed, 15 * UNIT) == 4500
            assert time.time() >= exp - 1  # not before expiry
            assert calls >= 2  # it was asked, and failed
    finally:
        await node.stop()
