"""What a newcomer or an operator sees when something is wrong: one clear line, no traceback
(NATS unreachable, a busy port), and `roomcast chat` ending on Ctrl-C. Real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys

from tests.helpers import KEY, UNIT, token


def roomcast(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
    clean["ROOMCAST_DEV_ENV"] = os.devnull
    return subprocess.run([sys.executable, "-m", "roomcast", *args], capture_output=True,
                          text=True, timeout=timeout * UNIT, env={**clean, **env})


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def test_admin_without_nats_is_one_line():
    out = roomcast("admin", "rooms", "--nats-url", f"nats://127.0.0.1:{dead_port()}")
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "cannot connect to NATS at nats://127.0.0.1:" in \
        out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_a_node_on_a_busy_port_is_one_line(nats1):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = roomcast("node", "--host", "127.0.0.1", "--port", str(port), "--internal-port",
                       "0", "--jwt-key", KEY, "--nats-url", nats1.urls[0])
    assert out.returncode == 2, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("roomcast: configuration error: port: cannot listen") and \
        "address already in use" in last
    assert "Traceback" not in out.stderr


def test_a_node_without_nats_warns_once_then_fails_in_one_line():
    """nats-py reports every failed attempt (4 a second): the node says once that it keeps
    trying, then one error line at its connect deadline — not a line per attempt."""
    out = roomcast("node", "--host", "127.0.0.1", "--port", "0", "--internal-port", "0",
                   "--jwt-key", KEY, "--nats-url", f"nats://127.0.0.1:{dead_port()}",
                   "--log-format", "text", "--nats-connect-timeout", "3")
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) <= 3, lines
    assert "not reachable yet" in lines[0] and "cannot connect to NATS" in lines[-1]
    assert "Traceback" not in out.stderr


async def test_chat_exits_on_ctrl_c(nodes):
    a, _ = nodes
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "roomcast", "chat", "lobby-ctrl-c",
        "--url", f"ws://127.0.0.1:{a.port}/ws", "--token", token("cc"),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "ROOMCAST_DEV_ENV": os.devnull},
        # As from a terminal: a suite started in the background (`make test &`, CI runners)
        # has SIGINT ignored, and a child would inherit that and rightly ignore Ctrl-C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        async with asyncio.timeout(30 * UNIT):
            while b"connected" not in await proc.stderr.readline():
                pass
        proc.send_signal(signal.SIGINT)  # stdin stays open: a blocked read must not hold it
        await asyncio.wait_for(proc.wait(), 20 * UNIT)
        assert proc.returncode in (0, 130, -signal.SIGINT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
