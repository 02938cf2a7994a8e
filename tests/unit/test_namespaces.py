"""Namespaces (roomcast/namespaces.py) and the stream layout (backplane/layout.py): parsing,
errors that name the line, the room -> namespace lookup, the stable room -> stream hash."""

from __future__ import annotations

import zlib

import pytest

from roomcast.backplane.layout import Layout
from roomcast.errors import ConfigError
from roomcast.namespaces import Namespace, Namespaces, parse

BASE = Namespace(history=500, history_max_age=3600.0, member_list_max=50)

GOOD = """
# rooms outside every namespace
[defaults]
history = 200

[namespaces.chat]
streams = 3
presence_events = "users"

[namespaces.score]
storage = "latest"
publish = "backend"

[namespaces."game.lobby"]
presence = false
history_max_age = 0

[namespaces.stadium]
presence_events = "counts"
member_list_max = 10
"""


def test_a_file_with_every_option_kind_parses():
    ns = parse(GOOD, BASE)
    assert ns.defaults == Namespace(history=200, history_max_age=3600.0, member_list_max=50)
    chat = ns.by_name["chat"]
    assert (chat.streams, chat.history, chat.member_list_max) == (3, 200, 50)  # inherits
    assert ns.by_name["score"].kept_per_room == 1 and ns.by_name["score"].publish == "backend"
    assert ns.by_name["game.lobby"].presence is False
    assert ns.by_name["game.lobby"].history_max_age == 0.0
    assert ns.by_name["stadium"].presence_events == "counts"


def test_rooms_take_the_longest_matching_prefix():
    ns = parse(GOOD + '\n[namespaces."game"]\nhistory = 7\n', BASE)
    assert ns.of("chat").name == "chat" and ns.of("chat.general").name == "chat"
    assert ns.of("chatter").name == "" and ns.of("chat-x").name == ""
    assert ns.of("game.lobby.7").name == "game.lobby"
    assert ns.of("game.arena").name == "game"
    assert ns.of("lobby").name == ""


@pytest.mark.parametrize(("text", "line", "words"), [
    ("[defaults]\nhistory = 0\n", 2, "history must be 1..1000000"),
    ("[defaults]\nhistroy = 5\n", 2, "unknown option 'histroy'"),
    ("[namespaces.chat]\nstreams = 17\n", 2, "streams must be 1..16"),
    ("[namespaces.chat]\n\n\nstorage = \"stored\"\n", 4, "storage must be one of"),
    ("[namespaces.chat]\npublish = \"anyone\"\n", 2, "publish must be one of"),
    ("[namespaces.chat]\npresence = \"yes\"\n", 2, "must be true or false"),
    ("[namespaces.chat]\nhistory_max_age = -1\n", 2, "history_max_age must be"),
    ("[namespaces.\"a b\"]\nhistory = 3\n", 1, "a room prefix of dot-separated tokens"),
    ("[rooms]\nhistory = 3\n", 1, "unknown table [rooms]"),
    ("[defaults]\nhistory = \n", 2, "Invalid value"),  # a TOML syntax error: tomllib's line
    ("[namespaces.a_b]\nhistory = 3\n[namespaces.a-b]\nhistory = 4\n", 3,
     "would share stream names"),
    ("[namespaces.chat]\npresence = false\npresence_events = \"users\"\n", 3,
     "presence_events needs presence = true"),
])
def test_an_invalid_file_is_refused_naming_the_line(text, line, words):
    with pytest.raises(ConfigError) as e:
        parse(text, BASE, source="ns.toml")
    message = str(e.value)
    assert f"ns.toml, line {line}" in message or f"(at line {line}" in message, message
    assert words in message, message


def test_the_default_layout_is_the_one_before_namespaces():
    layout = Layout.default(1000, 86400.0)
    place = layout.place("chat.general")
    assert (place.stream, place.subject, place.live) == ("ROOMS", "room.chat.general",
                                                         "live.room.chat.general")
    [cfg] = layout.stream_configs(replicas=3, duplicate_window=120.0)
    assert cfg.subjects == ["room.>"] and cfg.max_msgs_per_subject == 1000


def test_partitions_are_a_stable_hash_and_streams_do_not_overlap():
    layout = Layout(parse(GOOD, BASE))
    names = [s.name for s in layout.streams]
    assert names == ["ROOMS", "ROOMS_CHAT_0", "ROOMS_CHAT_1", "ROOMS_CHAT_2",
                     "ROOMS_GAME_LOBBY_0", "ROOMS_SCORE_0", "ROOMS_STADIUM_0"]
    seen = {layout.place(f"chat.{i}").stream for i in range(200)}
    assert seen == {"ROOMS_CHAT_0", "ROOMS_CHAT_1", "ROOMS_CHAT_2"}
    # The same function on every node, every version: crc32 of the room's UTF-8 bytes mod K.
    for room in ("chat.general", "chat.ü", "chat.7"):
        assert layout.place(room).stream == f"ROOMS_CHAT_{zlib.crc32(room.encode()) % 3}"
    assert layout.place("chat.general").subject.startswith("rs.CHAT.")
    assert layout.place("lobby").stream == "ROOMS"
    configs = {c.name: c for c in layout.stream_configs(replicas=3, duplicate_window=120.0)}
    assert configs["ROOMS_SCORE_0"].max_msgs_per_subject == 1
    assert configs["ROOMS_GAME_LOBBY_0"].max_age == 0.0
    prefixes = [c.subjects[0][:-1] for c in configs.values()]
    assert all(not a.startswith(b) for a in prefixes for b in prefixes if a != b)


def test_the_epoch_of_several_streams_is_checked_per_room():
    """A client's epoch (from welcome) stays valid for rooms whose stream was not recreated."""
    from roomcast.backplane.nats import NatsBackplane, NatsConfig

    bp = NatsBackplane(NatsConfig(namespaces=Namespaces(Namespace(streams=3))))
    bp._epochs = ["e0", "e1", "e2"]
    epoch = bp.epoch
    room = next(f"r{i}" for i in range(100) if bp.layout.place(f"r{i}").index == 1)
    other = next(f"r{i}" for i in range(100) if bp.layout.place(f"r{i}").index == 2)
    assert bp.epoch_matches(room, epoch) and bp.epoch_matches(other, epoch)
    bp._epochs[1] = "e1-recreated"
    assert not bp.epoch_matches(room, epoch) and bp.epoch_matches(other, epoch)
    assert not bp.epoch_matches(other, "another-layout:e0,e1,e2")
    assert not bp.epoch_matches(other, "e0")


def test_partition_groups_come_from_the_layout_whatever_the_stream_name():
    layout = Layout(parse(GOOD, BASE), rooms_stream="CHATS")
    assert layout.partition_groups() == [["CHATS_CHAT_0", "CHATS_CHAT_1", "CHATS_CHAT_2"]]
    assert Layout.default(1000, 0.0).partition_groups() == []
