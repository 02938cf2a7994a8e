"""Pieces of the NATS client the backplane needs fast: header parsing and JetStream acks.

Kept apart from :mod:`roomcast.backplane.nats` (the backplane's logic) because they lean on
nats-py's internals or replace part of what it does per message (``docs/performance.md``).
"""

from __future__ import annotations

import asyncio
import re

import msgspec
import nats.aio.client

#: Publishes awaiting their JetStream ack, at most (beyond it, publishers wait their turn).
MAX_PENDING_ACKS = 8192


class ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class PubAck(msgspec.Struct):
    seq: int = 0
    duplicate: bool = False
    error: ApiError | None = None


decode_ack = msgspec.json.Decoder(PubAck).decode


_WHITESPACE = re.compile(r"\s")


class FastHeadersClient(nats.aio.client.Client):
    """nats-py's client with a faster parse of plain header blocks (``NATS/1.0`` + lines).

    Every live message (``Nats-Sequence``/``Nats-Last-Sequence``) and every history reply
    carries headers; nats-py 2.16 checks each key character by character in a generator,
    which was the largest single cost of a reconnect storm's replays (docs/performance.md).
    The result is the same dict (tests/unit/test_nats_headers.py compares both); blocks with
    an inline status (``NATS/1.0 503``) still go through nats-py's own parser.
    """

    async def _process_headers(self, headers):
        if not headers or not headers.startswith(b"NATS/1.0\r\n"):
            return await super()._process_headers(headers)
        out: dict[str, str] = {}
        for line in headers[10:].split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            try:
                key = name.strip().decode("ascii")
            except UnicodeDecodeError:
                continue
            if _WHITESPACE.search(key) is None:
                out[key] = value.strip().decode("utf-8", "replace")
        return out or None


class AckError(Exception):
    """JetStream refused a publish or nobody answered it (no stream / no responders)."""


def expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError("no JetStream ack in time"))
