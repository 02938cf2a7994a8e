"""What a room's members are told about presence, batched per interval: pure logic, no I/O.

Every user-level change (:class:`~roomcast.presence.state.Transition`) in a room with local
members marks the room *touched*; :meth:`PresenceFeed.due` then turns each touched room into
**one** frame for all its members (``docs/protocol.md`` §4.10):

* ``presence_diff`` while the room lists its members: every user touched since the last frame
  with their **final** state — in ``joins`` if present now, in ``leaves`` if not. A final state
  (not the sequence of events) is what makes a diff safe for a member that joined in the
  middle of the interval: its ``joined`` list was taken at some point of the interval, and the
  diff brings every touched user to where they are now, whatever that list said.
* ``presence_count`` (at most once per :meth:`PresenceFeed.count_interval_of` the room: the
  configured interval, longer for huge rooms — a count goes to every member, so a room of N
  users costs N writes per count) while the room has more users than
  its threshold (lists name each user's first few connections only): members keep
  counts, not lists, and a join costs the node the same whatever the room's size.
* ``presence_state`` (the whole list) when a room in counts comes back below 90 % of its
  threshold: the hysteresis keeps a room at the threshold from flapping between the two.

A join thus costs O(1) frames per interval and room instead of one frame per member: a room
filling with N users costs O(N) frames in total, not O(N²).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from roomcast.presence.state import Op, PresenceState, Transition

_enc = msgspec.json.Encoder()

#: A room's counts go out at most once per ``count_interval``, or once per this many users
#: seconds if longer (10,000 users: every 10 s), capped at ``COUNT_INTERVAL_MAX``: the writes a
#: room's counts cost stay near ``COUNT_USERS_PER_SECOND`` per second cluster-wide, not N.
COUNT_USERS_PER_SECOND = 1000
COUNT_INTERVAL_MAX = 10.0


@dataclass(frozen=True, slots=True)
class FeedOptions:
    """Args:
    threshold: above this many users a room's members get counts instead of lists.
    events: ``"users"`` (diffs below the threshold, counts above), ``"counts"`` (counts
        only) or ``"off"`` (no presence frames; ``joined`` still carries the counts).
    """

    threshold: int = 100
    events: str = "users"


class _Touched:
    __slots__ = ("users", "since")

    def __init__(self, since: float) -> None:
        self.users: dict[str, Transition] = {}  # user -> their last transition
        self.since = since


class PresenceFeed:
    def __init__(self, state: PresenceState, *, interval: float = 0.1,
                 count_interval: float = 1.0,
                 options_for: Callable[[str], FeedOptions] | None = None) -> None:
        self.state = state
        self.interval = interval
        self.count_interval = count_interval
        self._options_for = options_for or (lambda room, o=FeedOptions(): o)
        self._touched: dict[str, _Touched] = {}
        #: room -> True while its members get lists, False while they get counts. Kept for
        #: rooms with local members only (:meth:`forget`).
        self._listing: dict[str, bool] = {}
        self._counts_sent: dict[str, float] = {}  # room -> when its last presence_count went

    # -- input -------------------------------------------------------------------------

    def add(self, transitions: list[Transition], now: float,
            local: Callable[[str], bool]) -> bool:
        """Note ``transitions``; ``local(room)`` says whether the room has members here.
        Returns whether a room became touched (the caller then makes sure :meth:`due` is
        called by :meth:`next_due`)."""
        became = False
        for t in transitions:
            if not local(t.room):
                continue
            touched = self._touched.get(t.room)
            if touched is None:
                if self._options_for(t.room).events == "off":
                    continue
                touched = self._touched[t.room] = _Touched(now)
                became = True
            touched.users[t.user] = t
        return became

    def forget(self, room: str) -> None:
        """The room has no local members any more."""
        self._touched.pop(room, None)
        self._listing.pop(room, None)
        self._counts_sent.pop(room, None)

    # -- what new members get ----------------------------------------------------------

    def summary(self, room: str) -> dict:
        """``presence`` of ``joined``/``resumed``/``welcome.rooms``: counts, and the member
        list while the room lists members (the same rule the frames follow)."""
        users, conns = self.state.user_count(room), self.state.conn_count(room)
        out: dict = {"users": users, "connections": conns}
        if self._lists(room, users):
            out["members"] = msgspec.Raw(self.state.members_json(room))
        return out

    def _lists(self, room: str, users: int, *, flushing: bool = False) -> bool:
        """Whether the room lists its members now. A room moves to counts as soon as it is
        over its threshold (the members learn it from the next frame, a ``presence_count``),
        but back to lists only when a frame is sent (``flushing``: a ``presence_state`` tells
        every member at once) and below 90 % of it. The first answer for a room is kept."""
        o = self._options_for(room)
        if o.events != "users":
            return False
        listing = self._listing.get(room)
        if listing is None or listing:
            listing = users <= o.threshold
        elif flushing:
            listing = users <= o.threshold * 9 // 10
        self._listing[room] = listing
        return listing

    # -- output ------------------------------------------------------------------------

    def count_interval_of(self, room: str) -> float:
        users = self.state.user_count(room)
        return max(self.count_interval, min(COUNT_INTERVAL_MAX, users / COUNT_USERS_PER_SECOND))

    def next_due(self) -> float | None:
        """When :meth:`due` has something to send (monotonic seconds), None if nothing."""
        best = None
        for room, t in self._touched.items():
            at = t.since + self.interval
            sent = self._counts_sent.get(room)
            if sent is not None and not self._listing.get(room, True):
                at = max(at, sent + self.count_interval_of(room))
            best = at if best is None else min(best, at)
        return best

    def due(self, now: float) -> list[tuple[str, bytes]]:
        """The frames to send now: ``(room, frame)``, one per room at most."""
        out: list[tuple[str, bytes]] = []
        for room, touched in list(self._touched.items()):
            if now < touched.since + self.interval:
                continue
            frame = self._frame(room, touched, now)
            if frame is None:
                continue  # counts held back until count_interval has passed
            del self._touched[room]
            if frame:
                out.append((room, frame))
        return out

    def _frame(self, room: str, touched: _Touched, now: float) -> bytes | None:
        state = self.state
        users, conns = state.user_count(room), state.conn_count(room)
        was = self._listing.get(room)
        if self._options_for(room).events == "off":
            return b""
        if self._lists(room, users, flushing=True):
            if was is False:
                self._counts_sent.pop(room, None)
                return b'{"type":"presence_state","room":%s,"users":%d,"connections":%d,' \
                       b'"members":%s}' % (_enc.encode(room), users, conns,
                                           state.members_json(room))
            joins, leaves = {}, {}
            for user, t in touched.users.items():
                first = state.first_conn(room, user)  # the touched users only: O(changes)
                if first is not None:
                    # The connection that made them present, if it still is; else their oldest.
                    joins[user] = (t.conn.meta() if t.op is Op.JOIN
                                   and state.has_conn(room, t.conn.conn) else first.meta())
                else:
                    leaves[user] = t.conn.meta()
            return _enc.encode({"type": "presence_diff", "room": room, "joins": joins,
                                "leaves": leaves, "users": users, "connections": conns})
        sent = self._counts_sent.get(room)
        if sent is not None and was is False and now < sent + self.count_interval_of(room):
            return None
        # Sent even if the counts equal the last ones sent: a member that joined meanwhile
        # may have been told other counts.
        self._counts_sent[room] = now
        return _enc.encode({"type": "presence_count", "room": room, "users": users,
                            "connections": conns})
