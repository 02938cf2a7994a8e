"""roomcast.node.api: request validation and the backend id namespace (pure parts)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomcast.node.api import (
    ApiError,
    BroadcastRequest,
    HistoryRequest,
    PublishRequest,
    backend_dedupe_id,
    decode,
)
from roomcast.node.peer import auto_dedupe_id, user_dedupe_id


def test_a_publish_request_decodes_with_the_documented_defaults():
    req = decode(PublishRequest, b'{"room":"a.b","data":[1,{"x":2}]}', 65536)
    assert (req.room, bytes(req.data), req.id, req.sender) == ("a.b", b'[1,{"x":2}]', None,
                                                                "backend")
    req = decode(PublishRequest, b'{"room":"a","data":1,"id":"i","from":"billing"}', 65536)
    assert (req.id, req.sender) == ("i", "billing")


@pytest.mark.parametrize("kind,payload,code", [
    (PublishRequest, b"", "bad_request"),
    (PublishRequest, b"[]", "bad_request"),
    (PublishRequest, b'{"room":"a b","data":1}', "bad_room"),
    (PublishRequest, b'{"room":"a","data":1,"id":""}', "bad_request"),
    (PublishRequest, b'{"room":"a","data":1,"id":"x\\n"}', "bad_request"),
    (PublishRequest, b'{"room":"a","data":' + b"[" * 40 + b"]" * 40 + b"}", "bad_request"),
    (BroadcastRequest, b'{"rooms":[],"data":1}', "bad_request"),
    (BroadcastRequest, b'{"rooms":["ok","a..b"],"data":1}', "bad_room"),
    (HistoryRequest, b'{"room":"a","limit":0}', "bad_request"),
    (HistoryRequest, b'{"room":"a","after":-1}', "bad_request"),
])
def test_bad_requests_are_typed_errors(kind, payload, code):
    with pytest.raises(ApiError) as info:
        decode(kind, payload or b"null", 65536)
    assert info.value.code == code


def test_a_request_over_the_size_limit_is_refused():
    with pytest.raises(ApiError):
        decode(PublishRequest, b'{"room":"a","data":"' + b"x" * 2000 + b'"}', 1024)


text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=30)


@given(text, text, text, st.integers(1, 2**40))
def test_backend_ids_never_meet_client_ids(msg_id, user, conn, n):
    """The backend's namespace is out of reach of every client publish key."""
    key = backend_dedupe_id(msg_id)
    assert key != user_dedupe_id(user, msg_id) and key != auto_dedupe_id(conn, n)
    assert backend_dedupe_id(msg_id, "room.a") != key
