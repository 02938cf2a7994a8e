"""The handshake's request parsing shortcuts answer exactly what the standard library does
(node/handshake.py ``split_target``, node/web.py ``token_from``)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from hypothesis import example, given, settings
from hypothesis import strategies as st

from roomcast.node.handshake import split_target
from roomcast.node.web import token_from

# What request targets and queries are made of, weighted towards the characters that matter.
_target_chars = st.sampled_from(list("/?#&=;+% \t\r\n:@tokenws") + ["%41", "%2", "\x00", "é"])
targets = st.lists(_target_chars, max_size=24).map("".join)
queries = st.lists(st.sampled_from(["token", "=", "&", "t", "a", "+", "%20", "%", ";", "x=1",
                                    "token=", "token=v", "tok%65n=q", " "]),
                   max_size=10).map("".join)


@settings(max_examples=3000)
@given(targets)
@example("/ws?token=abc")
@example("//host/ws?token=abc")
@example("http://h/ws?token=abc")
@example("/ws#frag?token=abc")
@example("/ws?token=a\tb")
@example("/ws ")
def test_split_target_is_urlsplits_path_and_query(target: str) -> None:
    url = urlsplit(target)
    assert split_target(target) == (url.path, url.query)


def _parse_qs_token(query: str) -> str | None:
    values = parse_qs(query).get("token")
    return values[0] if values else None


@settings(max_examples=3000)
@given(queries)
@example("token=abc")
@example("a=1&token=&token=second")
@example("token")
@example("token=a=b")
@example("tok%65n=x")
@example("token=a+b")
def test_token_from_query_is_parse_qs_first_token(query: str) -> None:
    assert token_from(None, query) == _parse_qs_token(query)


def test_bearer_header_wins_over_the_query() -> None:
    assert token_from("Bearer  abc ", "token=q") == "abc"
    assert token_from("bearer abc", "") == "abc"
    assert token_from("Basic abc", "token=q") == "q"
    assert token_from("", "token=q") == "q"
