"""A bot that answers every message in a room, surviving node failures.

    ROOMCAST_TOKEN=$(roomcast token --user bot --jwt-key ...) \
    python examples/echo_bot.py ws://127.0.0.1:8765/ws,ws://127.0.0.1:8766/ws lobby
"""

from __future__ import annotations

import asyncio
import os
import sys

from roomcast.client import State, connect


async def main(urls: list[str], room: str) -> None:
    def on_state(state: State, info: dict) -> None:
        print(f"{state.value}: {info}", file=sys.stderr)

    async with connect(urls, os.environ["ROOMCAST_TOKEN"], on_state=on_state) as client:
        joined = await client.join(room)
        print(f"joined {room} at seq {joined['seq']}", file=sys.stderr)
        async for msg in client:
            if msg.sender == "bot":
                continue
            seq = await client.publish(room, {"text": f"echo: {msg.data}"},
                                       id=f"echo-{msg.seq}")  # retries stay idempotent
            print(f"answered {msg.seq} with {seq}", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1].split(","), sys.argv[2]))
