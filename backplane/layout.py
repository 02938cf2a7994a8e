"""Which JetStream stream and subjects hold each room: pure, no I/O (``docs/namespaces.md``).

* Rooms in no namespace, with ``streams = 1`` (the default): the ``ROOMS`` stream, subjects
  ``room.<room>`` / ``live.room.<room>`` — the layout of every version before namespaces.
* Ephemeral namespaces (``storage = "ephemeral"``): no stream; ``eph.<room>`` over core NATS.
* Any other namespace ``ns``, and the defaults with ``streams = K > 1``: streams
  ``ROOMS_<TAG>_<k>`` for k in 0..K-1, subjects ``rs.<tag>.<k>.<room>`` /
  ``live.rs.<tag>.<k>.<room>``. A room's k is ``crc32(room) mod K``: stable across processes,
  versions and machines, so every node puts a room in the same stream.

Why the node hashes instead of a NATS subject-mapping partition (``{{partition(K, …)}}``):
every read names the stream (direct gets, the leader's last sequence), so the node must know a
room's stream anyway; a mapping would be one more piece of server configuration to keep in
step with the nodes' (accounts in every server's config), and this function is tested here.
A room lives in exactly one stream, so its order, ``seq``/``prev`` chain, history, resume and
duplicate window are those of one stream, as before; only the stream's epoch is per stream.
Changing a namespace's ``streams`` moves rooms between streams: their history stays behind
(a migration, not a live change; docs/namespaces.md).
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

from nats.js.api import DiscardPolicy, RePublish, StorageType, StreamConfig

from roomcast.backplane import subjects
from roomcast.namespaces import Namespace, Namespaces, single, stream_tag


@dataclass(frozen=True, slots=True)
class Place:
    stream: str  # "" for an ephemeral room (no stream)
    subject: str  # the room's messages are published (and stored) here
    live: str  # the stream re-publishes them here, with sequence headers
    index: int  # the stream's position in the layout (its part of the epoch); -1: none
    ephemeral: bool = False  # core NATS only: nothing stored, no seq (docs/namespaces.md)


#: Subjects of ephemeral rooms: published and delivered over core NATS, never stored.
EPHEMERAL_PREFIX = "eph."


@dataclass(frozen=True, slots=True)
class Stream:
    name: str
    prefix: str  # subject prefix of its rooms, e.g. "rs.CHAT.0."
    live_prefix: str
    namespace: Namespace


class Layout:
    def __init__(self, namespaces: Namespaces, *, rooms_stream: str = subjects.STREAM) -> None:
        self.namespaces = namespaces
        self.streams: list[Stream] = []
        self._of: dict[str, list[Stream]] = {}  # namespace name -> its streams
        for ns in namespaces.all():
            if ns.storage == "ephemeral":
                self._of[ns.name] = []
                continue
            if not ns.name and ns.streams == 1:
                group = [Stream(rooms_stream, subjects.ROOM_PREFIX, subjects.LIVE_PREFIX, ns)]
            else:
                tag = stream_tag(ns.name)
                group = [Stream(f"{rooms_stream}_{tag}_{k}", f"rs.{tag}.{k}.",
                                f"live.rs.{tag}.{k}.", ns) for k in range(ns.streams)]
            self._of[ns.name] = group
            self.streams += group
        self._index = {s.name: i for i, s in enumerate(self.streams)}
        self.fingerprint = hashlib.sha256(
            ",".join(s.prefix + s.name for s in self.streams).encode()).hexdigest()[:8]
        self._cache: dict[str, Place] = {}

    @classmethod
    def default(cls, history: int, max_age: float, *,
                rooms_stream: str = subjects.STREAM) -> Layout:
        return cls(single(Namespace(history=history, history_max_age=max_age)),
                   rooms_stream=rooms_stream)

    def partition_groups(self) -> list[list[str]]:
        """The stream names of each namespace spread over more than one stream (their
        leaders belong on different servers)."""
        return [[s.name for s in group] for group in self._of.values() if len(group) > 1]

    def place(self, room: str) -> Place:
        p = self._cache.get(room)
        if p is None:
            group = self._of[self.namespaces.of(room).name]
            if not group:
                p = Place("", EPHEMERAL_PREFIX + room, EPHEMERAL_PREFIX + room, -1, True)
            else:
                s = group[zlib.crc32(room.encode()) % len(group)] if len(group) > 1 else group[0]
                p = Place(s.name, s.prefix + room, s.live_prefix + room, self._index[s.name])
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[room] = p
        return p

    def stream_configs(self, *, replicas: int, duplicate_window: float) -> list[StreamConfig]:
        return [StreamConfig(
            name=s.name, subjects=[s.prefix + ">"], storage=StorageType.FILE,
            num_replicas=replicas, max_msgs_per_subject=s.namespace.kept_per_room,
            max_age=s.namespace.history_max_age, duplicate_window=duplicate_window,
            discard=DiscardPolicy.OLD, allow_direct=True,
            republish=RePublish(src=s.prefix + ">", dest=s.live_prefix + ">"))
            for s in self.streams]
