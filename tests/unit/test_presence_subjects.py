"""The subjects of room-scoped presence records (backplane/subjects.py): a room's filter finds
exactly that room's entries, a node's filter exactly that node's, whatever dots the names hold
(properties, matched as nats-server matches subjects)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from roomcast.auth import pattern_matches
from roomcast.backplane import subjects

token = st.text("abcxyz019_-", min_size=1, max_size=4)
names = st.lists(token, min_size=1, max_size=4).map(".".join)  # dotted, like rooms and ids


@given(names, names, names, names)
def test_a_rooms_filter_matches_exactly_its_rooms_entries(room, other, instance, conn):
    entry = subjects.presence_entry(instance, conn, room)
    assert subjects.valid_tokens(entry, max_len=10_000)
    assert pattern_matches(subjects.presence_room_filter(room), entry)
    if other != room:
        assert not pattern_matches(subjects.presence_room_filter(other), entry)


@given(names, names, names, names)
def test_a_nodes_filter_matches_exactly_its_nodes_entries(instance, other, conn, room):
    entry = subjects.presence_entry(instance, conn, room)
    assert pattern_matches(subjects.presence_node_filter(instance), entry)
    if other != instance:
        assert not pattern_matches(subjects.presence_node_filter(other), entry)
