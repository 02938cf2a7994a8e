"""``roomcast chat ROOM`` and ``roomcast tail ROOM``: watch a room, and resume, by hand.

Connection changes (reconnecting, resumed on another node, recovered or not) are printed to
stderr, so killing a node under a running ``roomcast tail`` shows the resume happen.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading

from roomcast.client import State, connect


def _status(state: State, info: dict) -> None:
    if state is State.CONNECTED:
        resume = info.get("resume")
        detail = ""
        if resume:
            parts = [f"{room}: {'recovered' if r.get('recovered') else 'NOT recovered'}"
                     f" ({r.get('replayed', 0)} replayed)" for room, r in resume.items()]
            detail = " — resumed " + ", ".join(parts)
        print(f"* connected to {info.get('node')}{detail}", file=sys.stderr, flush=True)
    elif state is State.DISCONNECTED:
        print(f"* disconnected (code {info.get('code')}), reconnecting…", file=sys.stderr,
              flush=True)


async def tail(urls: list[str], token: str, room: str, *, as_json: bool = True) -> int:
    async with connect(urls, token, on_state=_status) as client:
        await client.join(room)
        async for msg in client:
            if as_json:
                print(json.dumps({"room": msg.room, "seq": msg.seq, "prev": msg.prev,
                                  "from": msg.sender, "ts": msg.ts, "data": msg.data}),
                      flush=True)
            else:
                text = msg.data.get("text") if isinstance(msg.data, dict) else msg.data
                print(f"[{msg.seq}] {msg.sender}: {text}", flush=True)
    return 0


def _stdin_lines(loop: asyncio.AbstractEventLoop) -> asyncio.Queue:
    """Lines typed on standard input (None at its end), read by a daemon thread: Ctrl-C ends
    the program at once (a blocked read in the default executor would keep it alive until
    Enter, as interpreter exit joins those threads)."""
    lines: asyncio.Queue = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read, name="stdin", daemon=True).start()
    return lines


async def chat(urls: list[str], token: str, room: str) -> int:
    lines = _stdin_lines(asyncio.get_running_loop())
    async with connect(urls, token, on_state=_status) as client:
        await client.join(room)

        async def show() -> None:
            async for msg in client:
                text = msg.data.get("text") if isinstance(msg.data, dict) else msg.data
                print(f"[{msg.seq}] {msg.sender}: {text}", flush=True)

        shower = asyncio.create_task(show())
        try:
            while True:
                line = await lines.get()
                if line is None:
                    break
                if line.strip():
                    await client.publish(room, {"text": line.rstrip("\n")})
        finally:
            shower.cancel()
    return 0
