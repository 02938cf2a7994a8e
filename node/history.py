"""History pages of one room, for the server API (``docs/api.md``) and the client ``history``
frame (``docs/protocol.md`` §3.6): the same reading, the same shape, the same bounds.

A room keeps at most ``--history-per-room`` messages, so the whole retained part is read
forward (JetStream skips other rooms server-side) and sliced; stream sequences are global, so
a page cannot be located by arithmetic on ``seq``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import msgspec

from roomcast import protocol as p
from roomcast.backplane.base import Backplane

#: Most messages one page may ask for.
LIMIT_MAX = 1000
LIMIT_DEFAULT = 100


@dataclass(frozen=True, slots=True)
class Page:
    frames: list[bytes]  # ``message`` frames (§4.5), in the page's order
    more: bool  # older (or, oldest-first, newer) retained messages exist beyond the page


async def read_page(backplane: Backplane, room: str, *, before: int | None, after: int | None,
                    limit: int, batch: int, max_bytes: int) -> Page:
    """Newest first (below ``before`` when given), or oldest first above ``after``.

    At most ``limit`` messages and about ``max_bytes`` of frames (always at least one
    message): a page that stops early says ``more``.

    Raises:
        BackplaneError: the stream could not be read.
    """
    # Reads are direct gets, answered by any replica; one may lag the leader by a few ms and
    # miss a message that was just acknowledged. The leader's newest seq for the room, asked
    # first, says when a read came up short: it is read again (a backend that publishes and
    # then reads history sees its message).
    newest = await backplane.last_seq(room, leader=True)
    for attempt in range(CATCH_UP_TRIES):
        msgs, complete = await _read_from(backplane, room, after, limit, batch)
        if not complete or (msgs[-1].seq if msgs else 0) >= newest:
            break
        await asyncio.sleep(CATCH_UP_PAUSE * (attempt + 1))
    prevs = {m.seq: (msgs[i - 1].seq if i else None) for i, m in enumerate(msgs)}
    if after is not None:
        if msgs and msgs[0].seq != after + 1:
            prevs[msgs[0].seq] = None  # what came before the first one read is not known here
        chosen = [m for m in msgs if before is None or m.seq < before]
    else:
        chosen = [m for m in msgs if before is None or m.seq < before][::-1]
    room_json = msgspec.json.encode(room)
    frames: list[bytes] = []
    size = 0
    for m in chosen:
        if len(frames) == limit:
            break
        frame = p.message_frame(room_json, m.seq, prevs[m.seq], m.body)
        size += len(frame) + 1
        if frames and size > max_bytes:
            break
        frames.append(frame)
    return Page(frames, len(frames) < len(chosen))


#: A lagging replica is read again this many times, pausing 10, 20, … ms (about 1 s in all).
CATCH_UP_TRIES = 14
CATCH_UP_PAUSE = 0.01


async def _read_from(backplane: Backplane, room: str, after: int | None, limit: int,
                     batch: int) -> tuple[list, bool]:
    """The retained messages above ``after`` (all of them, or — oldest first — a little
    more than ``limit``); whether the read went to the end of the room."""
    start = (after + 1) if after is not None else 1
    msgs = []
    while True:
        got = await backplane.history(room, start, batch)
        msgs += got
        if len(got) < batch:
            return msgs, True
        start = got[-1].seq + 1
        if after is not None and len(msgs) > limit:
            return msgs, False
