"""What presence nodes send each other, and what backends get (``docs/presence.md``): the
wire formats both trackers share (:mod:`roomcast.presence.tracker`,
:mod:`roomcast.presence.scoped`)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

import msgspec

from roomcast.presence.state import NO_INFO, Conn, Op


class OneDelta(msgspec.Struct):
    origin: str
    counter: int
    op: str
    conn: Conn


class Step(msgspec.Struct, array_like=True):
    counter: int
    op: str
    conn: Conn


class Deltas(msgspec.Struct):
    """The deltas of one batch (presence/tracker.py), in counter order: one NATS message."""

    origin: str
    deltas: list[Step]


class DeltaMessage(msgspec.Struct):
    """Decodes both forms: one delta (every version) or a batch (since 2026-11-21)."""

    origin: str
    counter: int = 0
    op: str = ""
    conn: Conn | None = None
    deltas: list[Step] | None = None


class Snapshot(msgspec.Struct):
    origin: str
    node: str
    counter: int
    conns: list[Conn]


class Heartbeat(msgspec.Struct):
    origin: str
    node: str
    counter: int
    conns: int
    beat: int = 0  # consecutive per node (room-scoped presence reads a gap as a loss)
    scope: str = "cluster"


class BackendEvent(msgspec.Struct):
    """A stored presence event (``docs/presence.md``)."""

    type: str  # "join" | "leave"
    room: str
    user: str
    conn: str
    node: str
    ts: int
    first: bool  # the user's first connection in the room (user-level join)
    last: bool  # the user's last connection left the room (user-level leave)
    reason: str = "client"  # "client" or "node_down"
    info: dict[str, Any] = {}


enc = msgspec.json.Encoder()
dec_delta = msgspec.json.Decoder(DeltaMessage)
dec_snap = msgspec.json.Decoder(Snapshot)
dec_hb = msgspec.json.Decoder(Heartbeat)


def event_bytes(op: Op, c: Conn, first: bool, last: bool, reason: str) -> bytes:
    return enc.encode(BackendEvent(op.value, c.room, c.user, c.conn, c.node,
                                    int(time.time() * 1000), first, last, reason, c.info))


def from_wire(w: Conn) -> Conn:
    """An entry as decoded from the wire, to be kept. Every node holds one per connection in
    the cluster, so the strings many entries share (room, node) are interned and an empty
    ``info`` is one dict: ~170 bytes less per entry (bench.clustersize)."""
    return Conn(sys.intern(w.room), w.conn, w.user, sys.intern(w.node), w.joined_at,
                w.info or NO_INFO)


@dataclass
class Peer:
    node: str
    last_seen: float
    counter: int
    conns: int
    beat: int = 0


class Record(msgspec.Struct, array_like=True):
    """Room-scoped presence: one entry as stored and sent, the origin's counter, alive (join)
    or not (leave)."""

    counter: int
    alive: bool
    conn: Conn


class PeerSnapshot(msgspec.Struct):
    """A snapshot reply read for its sender only (room-scoped presence: no connections)."""

    origin: str
    node: str
    counter: int


dec_record = msgspec.json.Decoder(Record)
dec_peer = msgspec.json.Decoder(PeerSnapshot)
