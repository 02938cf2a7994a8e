"""Which record of a room-scoped presence entry is the newest: pure, no I/O, no clocks.

Under ``--presence-scope rooms`` (:mod:`roomcast.presence.scoped`) a connection's entry in a
room is a series of records written by its node alone, each stamped with that node's counter
(higher is newer). A node following the room hears them live, in order per writer but possibly
twice (a resend) and interleaved with reads of the stream that may be older than what it heard.
:class:`RoomRecords` keeps the newest record of each entry and says what each record or read
changes; ``tests/unit/test_presence_records.py`` checks by property that any such interleaving
ends where the writers' last records are.
"""

from __future__ import annotations

from collections.abc import Iterable


class RoomRecords:
    """The newest record heard of every remote entry of one room."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        #: conn id -> (counter, alive, when heard)
        self._seen: dict[str, tuple[int, bool, float]] = {}

    def offer(self, conn_id: str, counter: int, alive: bool, now: float) -> bool:
        """Whether this record is newer than any heard of the entry (then it is kept: the
        caller applies it — a join when ``alive``, else a leave)."""
        known = self._seen.get(conn_id)
        if known is not None and known[0] >= counter:
            return False
        self._seen[conn_id] = (counter, alive, now)
        return True

    def gone_after_read(self, in_read: Iterable[str], started: float, grace: float) -> list[str]:
        """Entries to remove after a read of the room that began at ``started`` and held
        ``in_read``: those alive here, absent from the read (their leave expired from the
        stream, or their node's records were purged) and heard before ``started - grace``
        (a newer entry may not be in a read that was already under way)."""
        have = set(in_read)
        gone = [cid for cid, (_, alive, heard) in self._seen.items()
                if alive and cid not in have and heard < started - grace]
        for cid in gone:
            del self._seen[cid]
        return gone

    def expire(self, conn_id: str, heard: float) -> None:
        """Forget a leave heard at ``heard`` unless a newer record came since (a leave is kept
        only to order records that arrive late)."""
        known = self._seen.get(conn_id)
        if known is not None and not known[1] and known[2] == heard:
            del self._seen[conn_id]

    def alive(self) -> set[str]:
        return {cid for cid, (_, alive, _) in self._seen.items() if alive}

    def __len__(self) -> int:
        return len(self._seen)
