"""presence/records.py: whatever order room-scoped presence records and reads arrive in, a
follower ends where the writers' last records are (properties, no I/O)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from roomcast.presence.records import RoomRecords

ENTRIES = ["n1.1", "n1.2", "n2.1", "n2.2"]


@st.composite
def histories(draw):
    """Each entry's records in the order its node wrote them: join, leave, join, …, with the
    writer's counter (one counter per node, shared by its entries)."""
    counters = {"n1": 0, "n2": 0}
    writes: list[tuple[str, int, bool]] = []
    steps = draw(st.lists(st.sampled_from(ENTRIES), min_size=1, max_size=30))
    alive = dict.fromkeys(ENTRIES, False)
    for cid in steps:
        node = cid.split(".")[0]
        counters[node] += 1
        alive[cid] = not alive[cid]
        writes.append((cid, counters[node], alive[cid]))
    return writes


def truth(writes) -> set[str]:
    last: dict[str, bool] = {}
    for cid, _, alive in writes:
        last[cid] = alive
    return {cid for cid, alive in last.items() if alive}


#: A leave record expires from the stream this many writes after it was written (Nats-TTL).
LEAVE_TTL = 4


def stream_at(writes, upto: int) -> dict[str, tuple[int, bool]]:
    """The stream after the first ``upto`` writes: the last record of each entry, without the
    leaves that expired meanwhile."""
    last: dict[str, tuple[int, bool, int]] = {}
    for j, (cid, counter, alive) in enumerate(writes[:upto]):
        last[cid] = (counter, alive, j)
    return {cid: (counter, alive) for cid, (counter, alive, j) in last.items()
            if alive or upto - j <= LEAVE_TTL}


def apply_read(rr: RoomRecords, snapshot: dict[str, tuple[int, bool]], started: float,
               now: float, grace: float) -> None:
    for cid, (counter, alive) in snapshot.items():
        rr.offer(cid, counter, alive, now)
    rr.gone_after_read(snapshot, started, grace)


@settings(max_examples=500)
@given(histories(), st.data())
def test_live_records_with_duplicates_converge(writes, data):
    """Every record heard at least once, in each writer's order, with duplicates of older
    ones anywhere after their first arrival: the follower ends at the truth."""
    rr = RoomRecords()
    delivered: list[tuple[str, int, bool]] = []
    for t, w in enumerate(writes):
        rr.offer(*w, now=float(t))
        delivered.append(w)
        for dup in data.draw(st.lists(st.sampled_from(delivered), max_size=2)):
            rr.offer(*dup, now=float(t))
    assert rr.alive() == truth(writes)


@settings(max_examples=500)
@given(histories(), st.data())
def test_lost_records_and_stale_reads_converge_at_a_fresh_read(writes, data):
    """Live records may be lost; reads may be answered by a replica some writes behind; leaves
    are forgotten after a while. A read at least as new as the last write, begun after the
    last record heard plus the grace, brings the follower to the truth."""
    grace = 2.0
    rr = RoomRecords()
    now = 0.0
    tombs: list[tuple[str, float]] = []
    for i, (cid, counter, alive) in enumerate(writes):
        now += data.draw(st.sampled_from([0.0, 0.5, 3.0]))
        if data.draw(st.booleans()):  # heard live (else lost)
            if rr.offer(cid, counter, alive, now) and not alive:
                tombs.append((cid, now))
        if data.draw(st.booleans()):  # a read, from a replica up to 3 writes behind
            behind = data.draw(st.integers(0, 3))
            apply_read(rr, stream_at(writes, max(0, i + 1 - behind)), now, now, grace)
        if tombs and data.draw(st.booleans()):  # an old leave forgotten
            rr.expire(*tombs.pop(0))
    now += grace + 1
    apply_read(rr, stream_at(writes, len(writes)), now, now, grace)
    assert rr.alive() == truth(writes)


def test_an_older_record_never_undoes_a_newer_one():
    rr = RoomRecords()
    assert rr.offer("a", 5, False, 0.0)  # the leave first
    assert not rr.offer("a", 4, True, 0.0)  # its join, late
    assert rr.alive() == set()
    assert rr.offer("a", 6, True, 1.0)
    assert rr.alive() == {"a"}


def test_a_read_removes_only_entries_heard_before_it_began_minus_the_grace():
    rr = RoomRecords()
    rr.offer("old", 1, True, 0.0)
    rr.offer("fresh", 2, True, 9.5)
    assert rr.gone_after_read([], started=10.0, grace=2.0) == ["old"]
    assert rr.alive() == {"fresh"}


def test_a_forgotten_leave_is_only_forgotten_if_nothing_newer_came():
    rr = RoomRecords()
    rr.offer("a", 1, False, 1.0)
    rr.offer("a", 2, True, 2.0)
    rr.expire("a", 1.0)  # the leave heard at 1.0 is no longer the newest: kept
    assert rr.alive() == {"a"} and len(rr) == 1
    rr.offer("b", 3, False, 3.0)
    rr.expire("b", 3.0)
    assert len(rr) == 1
