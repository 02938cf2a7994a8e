"""Every Python example in README.md and docs/*.md is a complete program: each is run here as it
stands, in a fresh interpreter, against a real 3-server JetStream cluster and two real nodes,
with the environment `make run` provides (ROOMCAST_URL, ROOMCAST_TOKEN, ROOMCAST_NATS_URL).
examples/echo_bot.py too."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest
import pytest_asyncio

from tests.helpers import UNIT, WsClient, room_name, start_node, token

ROOT = Path(__file__).parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [(doc.relative_to(ROOT).as_posix(), i, code)
          for doc in DOCS
          for i, code in enumerate(re.findall(r"```python\n(.*?)```", doc.read_text(), re.S))]


def test_the_docs_have_python_examples():
    assert {d for d, _, _ in BLOCKS} >= {"README.md", "docs/client.md", "docs/api.md"}


@pytest_asyncio.fixture
async def cluster_env(nats3):
    a = await start_node(nats3.urls, node_id="docs-a")
    b = await start_node(nats3.urls, node_id="docs-b")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
    env.update(ROOMCAST_URL=f"ws://127.0.0.1:{a.port}/ws,ws://127.0.0.1:{b.port}/ws",
               ROOMCAST_TOKEN=token("dev", ttl=3600), ROOMCAST_NATS_URL=",".join(nats3.urls),
               ROOMCAST_DEV_ENV=os.devnull)
    yield env, a, b
    await a.stop()
    await b.stop()


async def run(args: list[str], env: dict, timeout: float = 60 * UNIT) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*args, env=env, cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("doc,index,code", BLOCKS, ids=[f"{d}#{i}" for d, i, _ in BLOCKS])
async def test_a_doc_example_runs_as_written(cluster_env, doc, index, code):
    env, _, _ = cluster_env
    rc, out, err = await run([sys.executable, "-c", code], env)
    assert rc == 0, f"{doc} example {index} failed:\n{out}\n{err}"
    assert out.strip(), f"{doc} example {index} printed nothing"


async def test_the_echo_bot_answers(cluster_env):
    env, a, _ = cluster_env
    room = room_name()
    bot = asyncio.create_task(run([sys.executable, "examples/echo_bot.py", room, "--once"],
                                  {**env, "ROOMCAST_TOKEN": token("bot")}))
    user = await WsClient.connect(a.port, token("ann"))
    await user.join(room)
    answer = None
    async with asyncio.timeout(30 * UNIT):
        while answer is None:  # ping until the bot (which may still be starting) answers
            await user.publish(room, "ping")
            try:
                answer = await user.wait_for(lambda f: f["type"] == "message"
                                             and f["from"] == "bot", timeout=3)
            except TimeoutError:
                pass
    assert answer["data"] == {"text": "echo: ping"} and answer["id"].startswith("echo-")
    rc, _, err = await bot
    assert rc == 0, err
    await user.close()
