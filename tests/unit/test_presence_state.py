"""presence.state: pure presence, merged across replicas in memory."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from presence.state import Conn, Delta, Op, PresenceState


def conn(room="r", cid="a.1", user="alice", node="A") -> Conn:
    return Conn(room, cid, user, node, 1, {"name": user})


def ops(transitions) -> list[tuple[str, str, str]]:
    return [(t.op.value, t.room, t.user) for t in transitions]


def test_tabs_of_one_user_are_one_member():
    """Two connections of one user: one join; closing one tab: no leave; both: one leave."""
    s = PresenceState("A")
    _, t1 = s.track(conn(cid="A.1"))
    _, t2 = s.track(conn(cid="A.2"))
    assert ops(t1) == [("join", "r", "alice")] and t2 == []
    assert s.user_count("r") == 1 and s.conn_count("r") == 2
    _, t3 = s.untrack("r", "A.1")
    assert t3 == []
    _, t4 = s.untrack("r", "A.2")
    assert ops(t4) == [("leave", "r", "alice")]
    assert s.untrack("r", "A.2") is None
    assert s.rooms() == {}


def test_deltas_replicate_between_nodes():
    """Deltas from A applied on B give B the same view, including multi-node users."""
    a, b = PresenceState("A"), PresenceState("B")
    b.apply_snapshot("A", 0, [])
    d1, _ = a.track(conn(cid="A.1"))
    d2, t_local = b.track(conn(cid="B.1", node="B"))
    assert ops(t_local) == [("join", "r", "alice")]
    trans, need = b.apply_delta(d1)
    assert (trans, need) == ([], False)  # alice is already present through B.1
    assert b.members("r")["alice"][0]["conn"] in ("A.1", "B.1") and b.conn_count("r") == 2
    d3, _ = a.untrack("r", "A.1")
    assert b.apply_delta(d3) == ([], False)
    assert b.conn_count("r") == 1


def test_gap_in_counters_asks_for_a_snapshot():
    """A missing delta is detected by its counter; the snapshot repairs the view."""
    a, b = PresenceState("A"), PresenceState("B")
    b.apply_snapshot("A", 0, [])
    d1, _ = a.track(conn(cid="A.1", user="u1"))
    a.track(conn(cid="A.2", user="u2"))  # lost on the way to B
    d3, _ = a.track(conn(cid="A.3", user="u3"))
    assert ops(b.apply_delta(d1)[0]) == [("join", "r", "u1")]
    trans, need = b.apply_delta(d3)
    assert need is True and trans == []
    repaired = b.apply_snapshot("A", a.counter, a.snapshot_of("A"))
    assert sorted(ops(repaired)) == [("join", "r", "u2"), ("join", "r", "u3")]
    assert b.apply_delta(d3) == ([], False)  # already covered by the snapshot


def test_deltas_before_first_snapshot_wait_for_it():
    """Until an origin's snapshot arrives its deltas are not applied (need_sync)."""
    b = PresenceState("B")
    a = PresenceState("A")
    d1, _ = a.track(conn(cid="A.1"))
    assert b.apply_delta(d1) == ([], True)
    assert ops(b.apply_snapshot("A", 1, a.snapshot_of("A"))) == [("join", "r", "alice")]


def test_snapshot_replaces_origin_state_and_ignores_stale_ones():
    """A snapshot removes what the origin no longer has; an older snapshot changes nothing."""
    b = PresenceState("B")
    b.apply_snapshot("A", 5, [conn(cid="A.1"), conn(cid="A.2", user="bob")])
    assert b.user_count("r") == 2
    assert ops(b.apply_snapshot("A", 7, [conn(cid="A.1")])) == [("leave", "r", "bob")]
    assert b.apply_snapshot("A", 6, []) == []
    assert b.user_count("r") == 1


def test_purge_of_dead_node_leaves_only_users_without_other_connections():
    """Purging node A: users also connected through B stay; others leave."""
    b = PresenceState("B")
    b.apply_snapshot("A", 1, [conn(cid="A.1", user="alice"), conn(cid="A.2", user="bob"),
                              conn(room="q", cid="A.2", user="bob")])
    b.track(conn(cid="B.1", user="alice", node="B"))
    out = b.purge_node("A")
    assert sorted(ops(out)) == [("leave", "q", "bob"), ("leave", "r", "bob")]
    assert b.members("r") == {"alice": [conn(cid="B.1", node="B").meta()]}
    assert "A" not in b.nodes()


def test_queries():
    s = PresenceState("A")
    s.track(conn(cid="A.1", user="alice"))
    s.track(conn(room="q", cid="A.1", user="alice"))
    s.track(conn(room="q", cid="A.2", user="bob"))
    assert s.rooms() == {"r": (1, 1), "q": (2, 2)}
    assert sorted(c.room for c in s.user("alice")) == ["q", "r"]
    assert s.nodes() == {"A": 2}
    assert s.origin_of("A.2") == "A" and s.origin_of("zzz") is None
    assert Op.JOIN == "join"


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["track", "untrack", "remote", "purge"]),
                          st.sampled_from(["r", "s"]), st.integers(0, 5),
                          st.sampled_from(["alice", "bob", 'q"uote\u00e9'])), max_size=40))
def test_members_json_is_members_encoded(steps):
    """The pre-encoded member list (sent on every join/resume) always says what members()
    says, whatever happened before: joins, leaves, remote deltas, a node's purge."""
    s = PresenceState("A")
    s.apply_snapshot("B", 0, [])  # B's deltas apply from now on
    counter = 0
    for op, room, n, user in steps:
        if op == "track":
            s.track(Conn(room, f"A.{n}", user, "A", n, {"n": n}))
        elif op == "untrack":
            s.untrack(room, f"A.{n}")
        elif op == "remote":
            counter += 1
            s.apply_delta(Delta("B", counter, Op.JOIN, Conn(room, f"B.{n}", user, "B", n)))
        else:
            s.purge_node("B")
        for r in ("r", "s"):
            assert json.loads(s.members_json(r)) == s.members(r)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from(["r1", "r2", "r3"]),
                          st.sampled_from(["c1", "c2", "c3", "c4"])), max_size=60))
def test_a_nodes_connections_are_indexed_whatever_their_rooms(steps):
    """A connection in one room or several (the index keeps one room as a str, several as a
    set): snapshots list exactly what is tracked, and a purge removes all of it."""
    node = PresenceState("n")
    here: set[tuple[str, str]] = set()
    for join, room, conn in steps:
        if join:
            node.track(Conn(room, conn, f"user-{conn}", "n", 0))
            here.add((room, conn))
        else:
            node.untrack(room, conn)
            here.discard((room, conn))
    assert {(c.room, c.conn) for c in node.snapshot_of("n")} == here
    other = PresenceState("m")
    other.apply_snapshot("n", node.counter, node.snapshot_of("n"))
    assert {(c.room, c.conn) for c in other.snapshot_of("n")} == here
    other.purge_node("n")
    assert other.snapshot_of("n") == [] and other.rooms() == {}
