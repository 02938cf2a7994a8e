"""roomcast.node.peer: frames in, actions out (no I/O)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from roomcast.auth import Identity, Permissions
from roomcast.node.peer import (
    Close,
    DoJoin,
    DoLeave,
    DoPublish,
    Peer,
    PeerLimits,
    Send,
    TokenBucket,
    auto_dedupe_id,
    user_dedupe_id,
)
from roomcast.protocol import CloseCode


def make_peer(**limits) -> Peer:
    ident = Identity("alice", Permissions(("chat.*", "lobby"), ("chat.*",)), expires_at=1e12)
    return Peer(ident, "n1.1", PeerLimits(**limits), now=0.0)


def error_code(actions) -> str:
    [a] = actions
    assert isinstance(a, Send)
    return json.loads(a.frame)["code"]


def test_join_leave_publish_actions():
    """Permitted requests become backplane actions; the dedupe id is scoped to the user."""
    peer = make_peer()
    assert peer.handle(b'{"type":"join","room":"chat.a","rid":1}', 0) == [
        DoJoin("chat.a", 1, None, None)]
    assert peer.rooms == {"chat.a"}
    [pub] = peer.handle(b'{"type":"publish","room":"chat.a","data":{"x":1},"id":"m1"}', 0)
    assert isinstance(pub, DoPublish) and pub.dedupe_id == user_dedupe_id("alice", "m1") and pub.body == b'{"x":1}'
    [auto] = peer.handle(b'{"type":"publish","room":"chat.a","data":1}', 0)
    assert auto.client_id is None and auto.dedupe_id == auto_dedupe_id("n1.1", 1)
    assert peer.handle(b'{"type":"leave","room":"chat.a"}', 0) == [DoLeave("chat.a", None)]
    assert peer.rooms == set()


def test_permissions_and_room_validation():
    """Forbidden rooms and bad names are error frames, not actions."""
    peer = make_peer()
    assert error_code(peer.handle(b'{"type":"join","room":"admin"}', 0)) == "forbidden"
    assert error_code(peer.handle(b'{"type":"publish","room":"lobby","data":1}', 0)) == "forbidden"
    assert error_code(peer.handle(b'{"type":"join","room":"chat.*"}', 0)) == "bad_room"
    assert error_code(peer.handle(b'{"type":"leave","room":"lobby"}', 0)) == "not_joined"
    assert error_code(peer.handle(b'{"type":"join","room":"lobby","since":-1}', 0)) == "bad_frame"
    assert error_code(peer.handle(
        b'{"type":"publish","room":"chat.a","data":1,"id":"a\\nb"}', 0)) == "bad_frame"


def test_room_limit():
    """Joins past max_rooms are refused; re-joining a joined room is not counted twice."""
    peer = make_peer(max_rooms=2)
    peer.handle(b'{"type":"join","room":"chat.a"}', 0)
    peer.handle(b'{"type":"join","room":"chat.b"}', 0)
    assert isinstance(peer.handle(b'{"type":"join","room":"chat.a"}', 0)[0], DoJoin)
    assert error_code(peer.handle(b'{"type":"join","room":"chat.c"}', 0)) == "too_many_rooms"
    peer.join_failed("chat.b")
    assert isinstance(peer.handle(b'{"type":"join","room":"chat.c"}', 0)[0], DoJoin)


def test_flood_control():
    """Past the burst, frames are refused as rate_limited; a long run of them closes with 4002."""
    peer = make_peer(rate_limit=10, rate_burst=3, flood_close_after=4)
    ping = b'{"type":"ping"}'
    assert all(isinstance(peer.handle(ping, 0)[0], Send) for _ in range(3))
    for _ in range(3):
        assert error_code(peer.handle(ping, 0)) == "rate_limited"
    assert peer.handle(ping, 0) == [Close(CloseCode.FLOOD, "flood")]
    # Tokens come back with time, and a good frame resets the run.
    assert json.loads(peer.handle(ping, 1.0)[0].frame)["type"] == "pong"


def test_token_bucket_refills_at_rate_up_to_burst():
    """The bucket holds at most burst tokens and refills at rate per second."""
    b = TokenBucket(rate=2, burst=4, now=0)
    assert [b.take(0) for _ in range(5)] == [True] * 4 + [False]
    assert b.take(0.5) and not b.take(0.5)
    assert sum(b.take(100) for _ in range(10)) == 4


def test_remembered_publish_checks_never_let_a_forbidden_room_through():
    """Rooms that passed the publish checks are remembered (bounded); forbidden and badly
    named rooms are refused every time, before and after many allowed ones."""
    from roomcast.node.peer import MAY_PUBLISH_CACHE

    peer = make_peer(rate_limit=1e6, rate_burst=10**6)
    for i in range(3 * MAY_PUBLISH_CACHE):
        [ok] = peer.handle(b'{"type":"publish","room":"chat.r%d","data":1}' % (i % 100), 0)
        assert isinstance(ok, DoPublish)
        assert len(peer._may_publish) <= MAY_PUBLISH_CACHE
        assert error_code(peer.handle(b'{"type":"publish","room":"lobby","data":1}', 0)) == \
            "forbidden"
        assert error_code(peer.handle(b'{"type":"publish","room":"chat.*","data":1}', 0)) == \
            "bad_room"


printable = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40)


@given(printable, printable, printable, printable)
def test_user_dedupe_ids_collide_only_for_the_same_user_and_id(u1, i1, u2, i2):
    """(user, id) -> key is injective: two users never share a key whatever their `sub`
    and ids (`col` + `x:y` vs `col:x` + `y`; ids differing in whitespace)."""
    assert (user_dedupe_id(u1, i1) == user_dedupe_id(u2, i2)) == ((u1, i1) == (u2, i2))


@given(printable, printable, printable, st.integers(1, 2**40))
def test_auto_ids_are_out_of_reach_of_user_chosen_ids(user, msg_id, conn, n):
    """No user-chosen id, under any `sub` (a connection id seen in presence included), maps to
    the key of another connection's publish without id."""
    assert user_dedupe_id(user, msg_id) != auto_dedupe_id(conn, n)
    assert user_dedupe_id(conn, f"{n}") != auto_dedupe_id(conn, n)


def test_known_collisions_of_the_old_key_are_gone():
    """The defects of the `user:id` key: separator collisions and trimmed whitespace."""
    assert user_dedupe_id("col", "x:y") != user_dedupe_id("col:x", "y")
    assert user_dedupe_id("a", "m") != user_dedupe_id("a", "m ")
    ident = Identity("n1.1", Permissions(("chat.*",), ("chat.*",)), expires_at=1e12)
    squatter = Peer(ident, "n2.1", PeerLimits(), now=0.0)
    victim = make_peer()
    [a] = squatter.handle(b'{"type":"publish","room":"chat.a","data":1,"id":"1"}', 0)
    [b] = victim.handle(b'{"type":"publish","room":"chat.a","data":1}', 0)
    assert a.dedupe_id != b.dedupe_id
