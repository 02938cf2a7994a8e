"""roomcast.protocol: frame decoding, error classification, frame building."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomcast import protocol as p
from roomcast.protocol import CloseCode, ErrorCode


def test_decodes_each_client_frame_type():
    """join, leave, publish and ping decode into their structs."""
    j = p.decode_client_frame(b'{"type":"join","room":"a.b","since":5,"epoch":"e","rid":1}')
    assert isinstance(j, p.Join) and (j.room, j.since, j.epoch, j.rid) == ("a.b", 5, "e", 1)
    assert isinstance(p.decode_client_frame('{"type":"leave","room":"a"}'), p.Leave)
    pub = p.decode_client_frame(b'{"type":"publish","room":"a","data":[1,{"x":null}],"id":"m"}')
    assert isinstance(pub, p.Publish) and bytes(pub.data) == b'[1,{"x":null}]' and pub.id == "m"
    assert isinstance(p.decode_client_frame(b'{"type":"ping","rid":"x"}'), p.Ping)


@pytest.mark.parametrize("raw,code,rid", [
    (b"not json", ErrorCode.BAD_FRAME, None),
    (b"[1,2]", ErrorCode.BAD_FRAME, None),
    (b'{"rid":3}', ErrorCode.BAD_FRAME, 3),
    (b'{"type":"nope","rid":4}', ErrorCode.UNKNOWN_TYPE, 4),
    (b'{"type":"join","rid":5}', ErrorCode.BAD_FRAME, 5),
    (b'{"type":"join","room":7,"rid":"r"}', ErrorCode.BAD_FRAME, "r"),
    (b'{"type":"publish","room":"a","rid":6}', ErrorCode.BAD_FRAME, 6),
    (b'{"type":"publish","room":"a","data":1,"id":""}', ErrorCode.BAD_FRAME, None),
    (b'{"type":"ping","rid":"' + b"x" * 65 + b'"}', ErrorCode.BAD_FRAME, None),
])
def test_bad_frames_are_classified(raw, code, rid):
    """Each malformed frame yields the documented code and echoes a readable rid."""
    with pytest.raises(p.FrameError) as info:
        p.decode_client_frame(raw)
    assert info.value.code is code
    assert info.value.rid == rid


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_decoder(raw):
    """Any bytes either decode or raise FrameError, never anything else."""
    try:
        p.decode_client_frame(raw)
    except p.FrameError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=10)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["type", "room", "rid", "data", "id", "since", "x"]),
                       json_values, max_size=6))
def test_arbitrary_objects_decode_or_fail_cleanly(obj):
    """Any JSON object decodes or raises FrameError; unknown types are unknown_type."""
    try:
        frame = p.decode_client_frame(json.dumps(obj))
    except p.FrameError as exc:
        if isinstance(obj.get("type"), str) and obj["type"] not in p.CLIENT_TYPES:
            assert exc.code is ErrorCode.UNKNOWN_TYPE
        return
    assert obj["type"] in p.CLIENT_TYPES and type(frame).__name__.lower() == obj["type"]


@settings(max_examples=200, deadline=None)
@given(json_values, st.text(max_size=30), st.integers(1, 2**53), st.integers(0, 2**53))
def test_message_frame_is_valid_json_with_every_field(data, user, seq, prev):
    """The byte-spliced message frame parses back to the documented fields."""
    body = p.stored_body(json.dumps(user).encode(), 123, "id-1", json.dumps(data).encode())
    frame = json.loads(p.message_frame(json.dumps("r.1").encode(), seq, prev, body))
    assert frame == {"type": "message", "room": "r.1", "seq": seq, "prev": prev, "from": user,
                     "ts": 123, "id": "id-1", "data": data}
    unknown = json.loads(p.message_frame(b'"r"', seq, None, body))
    assert unknown["prev"] is None


@pytest.mark.parametrize("room,ok", [
    ("lobby", True), ("chat.general", True), ("a-b_c.9", True), ("", False), ("a..b", False),
    (".a", False), ("a.", False), ("a b", False), ("a.*", False), ("a.>", False),
    ("x" * 200, True), ("x" * 201, False), ("ünï", False), ("chat.y\n", False),
    ("chat\n.y", False), ("a\r", False), ("a\x00", False), ("a\t", False), (7, False),
])
def test_room_names(room, ok):
    """Room names are dot-separated tokens of [A-Za-z0-9_-], at most 200 characters."""
    assert p.valid_room(room) is ok


#: What NATS treats specially in a subject, or what ends its protocol line.
NATS_SPECIAL = set(" \t\r\n\x00\x0b\x0c*>") | {chr(c) for c in range(32)} | {"\x7f"}


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=60) | st.lists(st.sampled_from(["a", "b1", "-", "_", ".", "\n", " ",
                                                         "*", ">", "\r", "é"]),
                                         max_size=12).map("".join))
def test_no_name_the_validator_accepts_is_special_to_nats(name):
    """Whatever valid_room (the one validator of subject parts) accepts has no byte NATS
    treats specially, no empty token, and is ASCII: safe as it is inside a subject."""
    if not p.valid_room(name):
        return
    assert not set(name) & NATS_SPECIAL
    assert name.isascii() and all(name.split("."))
    assert len(name) <= p.MAX_ROOM_LEN


@pytest.mark.parametrize("frame", [
    b'{"type":"join","room":"a","since":1000000}',  # valid: answered by the node (§3.1)
])
def test_since_within_range_decodes(frame):
    assert p.decode_client_frame(frame).since == 1000000


@pytest.mark.parametrize("frame", [
    b'{"type":"join","room":"a","since":9007199254740992,"rid":1}',
    b'{"type":"join","room":"a","since":9223372036854775808,"rid":1}',
    b'{"type":"join","room":"a","since":1000000000000000000000000000000,"rid":1}',
    b'{"type":"join","room":"a","since":-1,"rid":1}',
    b'{"type":"join","room":"a","since":1.5,"rid":1}',
    b'{"type":"resume","token":"t","rooms":{"a":9007199254740992},"rid":1}',
    b'{"type":"ping","rid":9007199254740992}',
])
def test_numbers_no_json_peer_represents_exactly_are_bad_frames(frame):
    """`since`, resume positions and integer rids beyond 2^53-1 (or negative, or not
    integers) are bad_frame (§2.2)."""
    with pytest.raises(p.FrameError) as info:
        p.decode_client_frame(frame)
    assert info.value.code is ErrorCode.BAD_FRAME


def _nest(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("template", [
    b'{"type":"publish","room":"a","data":%s,"rid":1}', b'{"type":"ping","x":%s,"rid":1}',
    b'{"type":"ping","rid":%s}', b'{"type":"join","room":"a","since":%s}', b'%s',
])
@pytest.mark.parametrize("depth", [p.MAX_DEPTH, 1000, 100_000])
def test_deep_nesting_is_a_bad_frame(template, depth):
    """Nesting past MAX_DEPTH (the frame object counts) anywhere is bad_frame, never a
    RecursionError, whatever the depth."""
    with pytest.raises(p.FrameError) as info:
        p.decode_client_frame(template % _nest(depth))
    assert info.value.code is ErrorCode.BAD_FRAME


def test_nesting_up_to_the_limit_is_accepted():
    frame = p.decode_client_frame(b'{"type":"publish","room":"a","data":%s}'
                                  % _nest(p.MAX_DEPTH - 1))
    assert bytes(frame.data) == _nest(p.MAX_DEPTH - 1)
    # brackets inside strings do not nest
    text = json.dumps(["[" * 100 + ' \\" [[[[\\', "{" * 50]).encode()
    p.decode_client_frame(b'{"type":"publish","room":"a","data":%s}' % text)


def _depth(v) -> int:
    if isinstance(v, list):
        return 1 + max(map(_depth, v), default=0)
    if isinstance(v, dict):
        return 1 + max(map(_depth, v.values()), default=0)
    return 0


deep_values = st.recursive(
    st.none() | st.integers() | st.text(st.sampled_from('[]{}"\\ ab'), max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(st.sampled_from('[]{}"\\ab'), max_size=4), inner, max_size=3),
    max_leaves=40)


@settings(max_examples=500, deadline=None)
@given(deep_values, st.integers(1, 8))
def test_too_deep_agrees_with_the_real_depth(value, limit):
    """too_deep(json) is exactly depth > limit, with brackets and escapes inside strings."""
    raw = json.dumps(value).encode()
    assert p.too_deep(raw, limit) == (_depth(value) > limit)


def test_error_frames_carry_temporary_flag_and_rid():
    """Error frames state whether a retry may succeed."""
    f = json.loads(p.error(ErrorCode.RATE_LIMITED, "slow", rid=9, room="r"))
    assert f == {"type": "error", "code": "rate_limited", "message": "slow", "temporary": True,
                 "rid": 9, "room": "r"}
    assert json.loads(p.error(ErrorCode.FORBIDDEN, "no"))["temporary"] is False


def test_close_code_ranges():
    """Codes below 4500 invite a reconnect; 4500+ do not."""
    assert CloseCode.SLOW_CONSUMER.reconnect and CloseCode.FLOOD.reconnect
    assert CloseCode.SERVICE_RESTART.reconnect
    assert not CloseCode.TOKEN_EXPIRED.reconnect
