"""A bot that answers every message in a room, surviving node failures.

    .venv/bin/python examples/echo_bot.py lobby        # against `make run`: no flags needed

Node URLs and a token come from ``ROOMCAST_URL`` and ``ROOMCAST_TOKEN``, or from the running dev
cluster's ``.roomcast/dev.env`` (which ``make run`` writes). With ``--once`` it answers one
message and exits (the tests run it so).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from roomcast import devenv
from roomcast.client import State, connect


async def main(urls: list[str], token: str, room: str, once: bool) -> None:
    def on_state(state: State, info: dict) -> None:
        print(f"{state.value}: {info}", file=sys.stderr)

    async with connect(urls, token, on_state=on_state) as client:
        joined = await client.join(room)
        print(f"joined {room} at seq {joined['seq']}", file=sys.stderr, flush=True)
        async for msg in client:
            if isinstance(msg.id, str) and msg.id.startswith("echo-"):
                continue  # our own answers
            seq = await client.publish(room, {"text": f"echo: {msg.data}"},
                                       id=f"echo-{msg.seq}")  # retries stay idempotent
            print(f"answered {msg.seq} with {seq}", file=sys.stderr, flush=True)
            if once:
                return


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="answer every message in a room")
    ap.add_argument("room", nargs="?", default="lobby")
    ap.add_argument("--once", action="store_true", help="answer one message, then exit")
    args = ap.parse_args()
    devenv.apply_defaults()
    if "ROOMCAST_URL" not in os.environ or "ROOMCAST_TOKEN" not in os.environ:
        sys.exit("echo_bot: set ROOMCAST_URL and ROOMCAST_TOKEN, or start `make run` first")
    asyncio.run(main(os.environ["ROOMCAST_URL"].split(","), os.environ["ROOMCAST_TOKEN"],
                     args.room, args.once))
