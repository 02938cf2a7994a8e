"""Pieces of the NATS client the backplane needs fast: header parsing and JetStream acks.

Kept apart from :mod:`roomcast.backplane.nats` (the backplane's logic) because they lean on
nats-py's internals or replace part of what it does per message (``docs/performance.md``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable

import msgspec
import nats.aio.client
import nats.errors

#: Publishes awaiting their JetStream ack, at most (beyond it, publishers wait their turn).
MAX_PENDING_ACKS = 8192
#: Seconds between sweeps that fail publish attempts whose ack is overdue.
ACK_SWEEP = 0.1


class ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class PubAck(msgspec.Struct):
    seq: int = 0
    duplicate: bool = False
    error: ApiError | None = None


decode_ack = msgspec.json.Decoder(PubAck).decode

log = logging.getLogger("roomcast.backplane.nats")

_WHITESPACE = re.compile(r"\s")
#: What would break the NATS protocol line or address nothing: whitespace and control bytes
#: anywhere, an empty token (a leading, trailing or doubled dot).
_BAD_SUBJECT = re.compile(r"[\s\x00-\x1f\x7f]|^\.|\.\.|\.\Z|^\Z")
_BAD_HEADER = re.compile(r"[\r\n\x00]")
#: Seconds between two error-level logs of failing direct handlers (the rest are counted).
HANDLER_ERROR_LOG_EVERY = 10.0


def check_subject(subject: str, what: str = "subject") -> None:
    """Refuse a subject (or queue group, reply inbox) NATS would misread: the request fails
    with :class:`nats.errors.BadSubjectError` and nothing reaches the connection. NATS
    answers a malformed protocol line by closing the connection, which would cost every
    other request on it (docs/protocol.md §2.1; names are validated before this, this is
    the last line)."""
    if _BAD_SUBJECT.search(subject) is not None:
        raise nats.errors.BadSubjectError(f"invalid NATS {what}: {subject[:80]!r}")


class FastHeadersClient(nats.aio.client.Client):
    """nats-py's client with a faster parse of plain header blocks (``NATS/1.0`` + lines).

    Every live message (``Nats-Sequence``/``Nats-Last-Sequence``) and every history reply
    carries headers; nats-py 2.16 checks each key character by character in a generator,
    which was the largest single cost of a reconnect storm's replays (docs/performance.md).
    The result is the same dict (tests/unit/test_nats_headers.py compares both); blocks with
    an inline status (``NATS/1.0 503``) still go through nats-py's own parser.
    """

    def __init__(self) -> None:
        super().__init__()
        #: Subscriptions whose messages skip nats-py's Msg, queue and task (see direct()).
        self._direct: dict[int, Callable[[bytes, bytes | None, bytes], None]] = {}
        #: Messages whose direct handler raised (dropped; nats-py's read loop kept reading).
        self.handler_errors = 0
        self._handler_error_logged = float("-inf")

    # -- the exception barrier and the subject checks of the seam ------------------------

    async def publish(self, subject: str, payload: bytes = b"", reply: str = "",
                      headers: dict[str, str] | None = None) -> None:
        check_subject(subject)
        if reply:
            check_subject(reply, "reply subject")
        if headers:
            for key, value in headers.items():
                if _BAD_HEADER.search(key) or _BAD_HEADER.search(value):
                    raise nats.errors.BadSubjectError(f"invalid NATS header {key[:40]!r}")
        await super().publish(subject, payload, reply=reply, headers=headers)

    async def subscribe(self, subject: str, queue: str = "", **kwargs):
        check_subject(subject)
        if queue:
            check_subject(queue, "queue group")
        return await super().subscribe(subject, queue=queue, **kwargs)

    def direct(self, sub, handler: Callable[[bytes, bytes | None, bytes], None]) -> None:
        """Hand ``sub``'s messages to ``handler(subject, raw_headers, data)`` straight from the
        protocol parser, on the event loop: no ``Msg`` object, no pending queue, no task wakeup
        per message. For the JetStream ack inbox, where that was a large part of a publish."""
        self._direct[sub._id] = handler

    def undirect(self, sub) -> None:
        self._direct.pop(sub._id, None)

    async def publish_msg_id(self, subject: str, reply: str, msg_id: str, payload: bytes) -> None:
        """``publish(subject, payload, reply=reply, headers={"Nats-Msg-Id": msg_id})`` with the
        same checks (and the seam's subject and header checks), the ``HPUB`` command built in
        one step. The id is sent exactly as given."""
        check_subject(subject)
        if _BAD_HEADER.search(msg_id) or not msg_id or msg_id != msg_id.strip():
            raise nats.errors.BadSubjectError("invalid Nats-Msg-Id")
        if self.is_closed:
            raise nats.errors.ConnectionClosedError
        if self.is_draining_pubs:
            raise nats.errors.ConnectionDrainingError
        size = len(payload)
        if not self.is_connected and (self._max_pending_size <= 0
                                      or size + self._pending_data_size > self._max_pending_size):
            raise nats.errors.OutboundBufferLimitError
        if size > self._max_payload:
            raise nats.errors.MaxPayloadError
        hdr = b"NATS/1.0\r\nNats-Msg-Id: %s\r\n\r\n" % msg_id.encode()
        self.stats["out_msgs"] += 1
        self.stats["out_bytes"] += size
        await self._send_command(b"HPUB %s %s %d %d\r\n%s%s\r\n" % (
            subject.encode(), reply.encode(), len(hdr), len(hdr) + size, hdr, payload))
        if self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()

    async def _process_msg(self, sid, subject, reply, data, headers):
        handler = self._direct.get(sid)
        if handler is None:
            return await super()._process_msg(sid, subject, reply, data, headers)
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        try:
            handler(subject, headers or None, data)
        except Exception:  # noqa: BLE001 - the barrier: nats-py's read loop must keep reading
            self._handler_failed(subject)

    def _handler_failed(self, subject: bytes) -> None:
        """A direct handler raised: the message is dropped, counted, logged (at most once per
        ``HANDLER_ERROR_LOG_EVERY`` seconds with its traceback), and reading goes on."""
        self.handler_errors += 1
        now = time.monotonic()
        if now - self._handler_error_logged >= HANDLER_ERROR_LOG_EVERY:
            self._handler_error_logged = now
            log.exception("handler for %s failed; message dropped (%d so far)",
                          subject[:120].decode(errors="replace"), self.handler_errors)

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


def sequence_headers(raw: bytes | None) -> tuple[int, int] | None:
    """``Nats-Sequence`` and ``Nats-Last-Sequence`` (0 when absent) from a raw header block as
    JetStream's RePublish writes it, without building a dict; None when ``Nats-Sequence`` is
    missing or either value is not an integer (the same answers as reading them from
    nats-py's parsed headers, property-tested)."""
    if not raw:
        return None
    i = raw.find(b"\r\nNats-Sequence:")
    if i < 0:
        return None
    try:
        seq = int(raw[i + 16:raw.find(b"\r\n", i + 16)])
        k = raw.find(b"\r\nNats-Last-Sequence:")
        prev = int(raw[k + 21:raw.find(b"\r\n", k + 21)]) if k >= 0 else 0
    except ValueError:
        return None
    return seq, prev


class AckError(Exception):
    """JetStream refused a publish or nobody answered it (no stream / no responders)."""


def expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError("no JetStream ack in time"))


async def unsubscribe_quietly(sub) -> None:
    """Unsubscribe ``sub`` if there is one; a connection that is reconnecting or closed has
    nothing to unsubscribe from."""
    if sub is not None:
        try:
            await sub.unsubscribe()
        except nats.errors.Error:
            pass
