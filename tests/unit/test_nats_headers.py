"""FastHeadersClient parses header blocks exactly as nats-py does, only faster."""

from __future__ import annotations

import asyncio

import nats.aio.client
import nats.errors
import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomcast.backplane.natsclient import FastHeadersClient

REAL = [
    b"NATS/1.0\r\nNats-Stream: ROOMS\r\nNats-Subject: room.a\r\nNats-Sequence: 42\r\n"
    b"Nats-Time-Stamp: 2026-11-21T16:00:00.123456789Z\r\nNats-Last-Sequence: 40\r\n\r\n",
    b"NATS/1.0 503\r\n\r\n",
    b"NATS/1.0 404 No Messages\r\n\r\n",
    b"NATS/1.0 100\r\nIdle Heartbeat\r\nNats-Last-Consumer: 1016\r\n\r\n",
    b"NATS/1.0\r\n\r\n",
    b"NATS/1.0\r\nA:b\r\nC:\tD \r\nbad key: x\r\nnocolon\r\n\xff\xfe: y\r\nE: \xc3\xa9\xff\r\n\r\n",
]

line_bytes = st.binary(max_size=20).filter(lambda b: b"\r\n" not in b and not b.endswith(b"\r"))


def both(block: bytes):
    async def run():
        return (await nats.aio.client.Client()._process_headers(block),
                await FastHeadersClient()._process_headers(block))
    return asyncio.run(run())


def test_real_header_blocks_parse_the_same():
    for block in REAL:
        slow, fast = both(block)
        assert slow == fast, block


@given(st.lists(st.tuples(line_bytes, line_bytes), max_size=6))
def test_random_header_blocks_parse_the_same(pairs):
    block = b"NATS/1.0\r\n" + b"".join(k + b":" + v + b"\r\n" for k, v in pairs) + b"\r\n"
    slow, fast = both(block)
    assert slow == fast


token_chars = st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="*>.")
subjects_ = st.lists(st.text(token_chars, min_size=1, max_size=8), min_size=1, max_size=4).map(
    ".".join)


@given(subjects_, subjects_, st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF),
                                     min_size=1, max_size=30).filter(lambda t: t == t.strip()),
       st.binary(max_size=200))
def test_publish_msg_id_queues_the_same_bytes_as_nats_py(subject, reply, msg_id, payload):
    """The one-step HPUB equals what nats-py's publish() with a Nats-Msg-Id header queues."""
    async def run():
        ours, theirs = FastHeadersClient(), FastHeadersClient()
        for c in (ours, theirs):
            c._max_pending_size = 1 << 20  # not connected: publishes are buffered, as here
        await ours.publish_msg_id(subject, reply, msg_id, payload)
        await theirs.publish(subject, payload, reply=reply, headers={"Nats-Msg-Id": msg_id})
        return b"".join(ours._pending), b"".join(theirs._pending)

    ours, theirs = asyncio.run(run())
    assert ours == theirs


BAD_SUBJECTS = ["room.a\n", "room.a\r\nPUB x 1", "room.a b", "room\ta", "room.\x00", "room..a",
                ".room", "room.", ""]
BAD_IDS = ["m\r\nX: 1", "m\n", " m", "m ", ""]


@pytest.mark.parametrize("subject,msg_id", [(s, "m") for s in BAD_SUBJECTS]
                         + [("room.a", i) for i in BAD_IDS])
def test_publish_msg_id_refuses_what_nats_would_misread(subject, msg_id):
    """A subject with whitespace, control bytes or an empty token, or a Nats-Msg-Id with a line
    break or edge whitespace, is refused before anything is queued (ids are never altered)."""
    async def run():
        c = FastHeadersClient()
        c._max_pending_size = 1 << 20
        with pytest.raises(nats.errors.BadSubjectError):
            await c.publish_msg_id(subject, "_INBOX.x", msg_id, b"{}")
        return c._pending

    assert asyncio.run(run()) == []


@pytest.mark.parametrize("subject", BAD_SUBJECTS)
def test_publish_subscribe_and_request_refuse_bad_subjects(subject):
    """Every path that writes a subject (publish, reply inboxes, subscribe, queue groups,
    request, headers) refuses one NATS would misread, before anything is queued."""
    async def run():
        c = FastHeadersClient()
        c._max_pending_size = 1 << 20
        with pytest.raises(nats.errors.BadSubjectError):
            await c.publish(subject, b"")
        if subject:  # an empty reply means "no reply"
            with pytest.raises(nats.errors.BadSubjectError):
                await c.publish("ok", b"", reply=subject)
        with pytest.raises(nats.errors.BadSubjectError):
            await c.publish("ok", b"", headers={"X": subject + "\n"})
        with pytest.raises(nats.errors.BadSubjectError):
            await c.subscribe(subject)
        if subject:  # an empty queue means "no queue group"
            with pytest.raises(nats.errors.BadSubjectError):
                await c.subscribe("ok", queue=subject)
        return c._pending

    assert asyncio.run(run()) == []


def _from_dict(block: bytes):
    """What the live path read before: nats-py's parsed headers, then int()."""
    async def run():
        return await nats.aio.client.Client()._process_headers(block)
    h = asyncio.run(run())
    if not h or "Nats-Sequence" not in h:
        return None
    try:
        return int(h["Nats-Sequence"]), int(h.get("Nats-Last-Sequence", 0))
    except ValueError:
        return None


seq_value = st.one_of(st.integers(0, 2**63).map(lambda n: str(n).encode()),
                      st.sampled_from([b"", b"x", b" 7 ", b"-1", b"1.5", b"12a"]))


@given(st.lists(st.tuples(st.sampled_from([b"Nats-Stream", b"Nats-Subject", b"Nats-Time-Stamp",
                                           b"X-Other", b"Nats-Sequence-Id"]), line_bytes),
                max_size=4),
       st.one_of(st.none(), seq_value), st.one_of(st.none(), seq_value), st.booleans())
def test_sequence_headers_read_what_the_parsed_headers_say(others, seq, last, last_first):
    from roomcast.backplane.natsclient import sequence_headers

    lines = [k + b": " + v for k, v in others]
    named = []
    if seq is not None:
        named.append(b"Nats-Sequence: " + seq)
    if last is not None:
        named.append(b"Nats-Last-Sequence: " + last)
    if last_first:
        named.reverse()
    block = b"NATS/1.0\r\n" + b"".join(x + b"\r\n" for x in lines + named) + b"\r\n"
    assert sequence_headers(block) == _from_dict(block), block


def test_sequence_headers_of_real_republished_messages():
    from roomcast.backplane.natsclient import sequence_headers

    assert sequence_headers(REAL[0]) == (42, 40)
    assert sequence_headers(None) is None
    assert sequence_headers(b"NATS/1.0\r\nNats-Stream: ROOMS\r\n\r\n") is None
