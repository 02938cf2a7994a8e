"""Ask every node and gather their answers (NATS request to a subject every node subscribes
to, no queue group): the server API's cluster-wide actions (:mod:`roomcast.node.control`) and
room-scoped presence's admin answers (:mod:`roomcast.presence.admin`)."""

from __future__ import annotations

import asyncio

import msgspec

from roomcast.backplane.natsclient import unsubscribe_quietly


async def gather(nc, subject: str, payload: bytes, *, expected: int | None,
                 wait: float) -> list[dict]:
    """The JSON-object answers to one request on ``subject``, collected until ``expected``
    of them are in or ``wait`` seconds pass (with ``expected`` None, for all of
    ``wait``). Answers that are not JSON objects are dropped."""
    inbox = nc.new_inbox()
    answers: list[dict] = []
    enough = asyncio.Event()

    async def collect(msg) -> None:
        try:
            answer = msgspec.json.decode(msg.data)
        except msgspec.DecodeError:
            return
        if not isinstance(answer, dict):
            return
        answers.append(answer)
        if expected is not None and len(answers) >= expected:
            enough.set()

    sub = await nc.subscribe(inbox, cb=collect)
    try:
        await nc.publish(subject, payload, reply=inbox)
        try:
            await asyncio.wait_for(enough.wait(), wait)
        except TimeoutError:
            pass
    finally:
        await unsubscribe_quietly(sub)
    return answers
