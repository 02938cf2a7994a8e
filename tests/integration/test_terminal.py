"""`roomcast tail` and `roomcast chat` against a real node."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

from tests.helpers import UNIT, room_name, start_node, token


async def test_tail_prints_messages_and_chat_publishes(nats3):
    """chat publishes stdin lines; tail prints them as JSON lines with seq and sender."""
    node = await start_node(nats3.urls)
    room = room_name()
    url = f"ws://127.0.0.1:{node.port}/ws"
    env = {**os.environ, "ROOMCAST_URL": url}
    tail = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "roomcast", "tail", room, "--token", token("tia"), env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = await asyncio.wait_for(tail.stderr.readline(), 20 * UNIT)
        assert b"connected to" in line
        chat = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "roomcast", "chat", room, "--token", token("chad"), env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(chat.communicate(b"hello there\n"), 30 * UNIT)
        assert chat.returncode == 0, err
        printed = json.loads(await asyncio.wait_for(tail.stdout.readline(), 20 * UNIT))
        assert printed["from"] == "chad" and printed["data"] == {"text": "hello there"}
        assert printed["seq"] > 0 and printed["prev"] == 0
    finally:
        tail.terminate()
        await tail.wait()
        await node.stop()


async def test_tail_with_bad_token_exits_with_the_reason(nats3):
    """A refused token ends the command with the server's reason, not a traceback."""
    node = await start_node(nats3.urls)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "roomcast", "tail", "lobby", "--token", "nope",
            "--url", f"ws://127.0.0.1:{node.port}/ws",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 30 * UNIT)
        assert proc.returncode == 1
        assert b"malformed token" in err and b"Traceback" not in err
    finally:
        await node.stop()
