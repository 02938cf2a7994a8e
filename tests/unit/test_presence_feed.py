"""The presence feed's batching (presence/feed.py) against both clients' merge rule.

A simulated room: connections of a few users open and close, time passes in random steps
(the feed sends its frames when due), and observers join at random moments with the
``joined`` summary of that moment, then apply every frame sent after it. At the end every
observer's view must be the server's truth: the same users when the room lists members, no list
(``members`` None) when it is counted, and the same user count either way. The Python client
(``RoomPresence``) is checked by hypothesis; ``roomcast.js`` (``applyPresence``) gets the same
generated histories through Node.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomcast.client.presence import RoomPresence
from roomcast.presence.feed import FeedOptions, PresenceFeed
from roomcast.presence.state import Conn, PresenceState

ROOM = "r"
USERS = [f"u{i}" for i in range(6)]

# An op: ("open", user), ("close", index into open conns), ("tick", seconds), ("observe",)
ops = st.lists(st.one_of(
    st.tuples(st.just("open"), st.sampled_from(USERS)),
    st.tuples(st.just("close"), st.integers(0, 50)),
    st.tuples(st.just("tick"), st.sampled_from([0.01, 0.05, 0.1, 0.3, 1.5])),
    st.tuples(st.just("observe")),
), max_size=80)


def simulate(history: list[tuple], threshold: int, events: str = "users") -> dict:
    """Run ``history``; returns the observers (their summary and the frames after it, decoded)
    and the truth at the end."""
    state = PresenceState("self")
    feed = PresenceFeed(state, interval=0.1, count_interval=1.0,
                        options_for=lambda room: FeedOptions(threshold=threshold, events=events))
    now = 0.0
    conns: list[str] = []
    ids = iter(range(10**6))
    observers: list[dict] = [{"summary": None, "frames": []}]  # the first: the room's creator
    frames_sent = []

    def local(room: str) -> bool:
        return True

    def send_due() -> None:
        for _, frame in feed.due(now):
            f = json.loads(frame)
            frames_sent.append((now, f))
            for o in observers:
                o["frames"].append(f)

    def summary() -> dict:
        return json.loads(msgspec.json.encode(feed.summary(ROOM)))

    observers[0]["summary"] = summary()
    for op in history:
        if op[0] == "open":
            c = Conn(ROOM, f"c{next(ids)}", op[1], "self", 0)
            conns.append(c.conn)
            _, trans = state.track(c)
            feed.add(trans, now, local)
        elif op[0] == "close" and conns:
            conn = conns.pop(op[1] % len(conns))
            out = state.untrack(ROOM, conn)
            if out is not None:
                feed.add(out[1], now, local)
        elif op[0] == "tick":
            now += op[1]
            send_due()
        elif op[0] == "observe":
            observers.append({"summary": summary(), "frames": []})
    for _ in range(3):  # everything due is sent (counts wait for their interval)
        now += 5.0
        send_due()
    listing = feed.summary(ROOM).get("members") is not None
    return {"observers": observers, "listing": listing,
            "users": sorted(state.members(ROOM)), "user_count": state.user_count(ROOM),
            "frames_sent": frames_sent}


def check_python(run: dict) -> None:
    for o in run["observers"]:
        view = RoomPresence.of(o["summary"])
        for f in o["frames"]:
            view.apply(f)
        assert view.users == run["user_count"]
        if run["listing"]:
            assert view.members is not None and sorted(view.members) == run["users"]
        else:
            assert view.members is None


@settings(max_examples=400, deadline=None)
@given(ops, st.sampled_from([1, 3, 100]))
def test_views_converge_to_the_truth(history, threshold):
    check_python(simulate(history, threshold))


@settings(max_examples=100, deadline=None)
@given(ops)
def test_counts_only_namespace_never_lists(history):
    run = simulate(history, 100, events="counts")
    assert not run["listing"]
    assert all(f["type"] == "presence_count" for _, f in run["frames_sent"])
    check_python(run)


def test_one_frame_per_interval_whatever_the_joins():
    """200 users join within one interval: one diff for the room (not 200 frames per member),
    then, the room being over its threshold, counts at most once per count interval."""
    history = [("open", f"x{i}") for i in range(50)] + [("tick", 0.1)]
    run = simulate(history, threshold=100)
    assert [f["type"] for _, f in run["frames_sent"]] == ["presence_diff"]
    assert len(run["frames_sent"][0][1]["joins"]) == 50
    history = [("open", f"x{i}") for i in range(200)] + [("tick", 0.1)]
    history += [("open", f"y{i}") if i % 2 else ("tick", 0.1) for i in range(100)]
    run = simulate(history, threshold=100)
    kinds = [f["type"] for _, f in run["frames_sent"]]
    assert kinds[0] == "presence_count" and set(kinds) == {"presence_count"}
    times = [t for t, _ in run["frames_sent"]]
    assert all(b - a >= 1.0 - 1e-9 for a, b in zip(times, times[1:], strict=False))
    check_python(run)


def test_back_below_the_threshold_sends_the_whole_list_once():
    history = [("open", f"x{i}") for i in range(5)] + [("tick", 0.1)]
    history += [("close", 0)] * 4 + [("tick", 2.0)]
    run = simulate(history, threshold=3)
    kinds = [f["type"] for _, f in run["frames_sent"]]
    assert kinds == ["presence_count", "presence_state"], kinds
    assert run["listing"] and run["users"] == ["x4"]
    check_python(run)


def test_a_diff_names_each_touched_user_with_their_final_state():
    """Came and went within one interval: in ``leaves`` (an observer that joined meanwhile
    listed them); left and came back: in ``joins``."""
    state = PresenceState("self")
    feed = PresenceFeed(state, interval=0.1)
    a = Conn(ROOM, "a1", "ann", "self", 0)
    feed.add(state.track(a)[1], 0.0, lambda r: True)
    assert feed.due(0.2)
    feed.add(state.untrack(ROOM, "a1")[1], 0.3, lambda r: True)
    feed.add(state.track(Conn(ROOM, "a2", "ann", "self", 1))[1], 0.31, lambda r: True)
    feed.add(state.track(Conn(ROOM, "b1", "bob", "self", 2))[1], 0.32, lambda r: True)
    feed.add(state.untrack(ROOM, "b1")[1], 0.33, lambda r: True)
    [(_, frame)] = feed.due(0.5)
    f = json.loads(frame)
    assert set(f["joins"]) == {"ann"} and f["joins"]["ann"]["conn"] == "a2"
    assert set(f["leaves"]) == {"bob"}
    assert (f["users"], f["connections"]) == (1, 1)


def test_rooms_without_local_members_are_not_fed():
    state = PresenceState("self")
    feed = PresenceFeed(state)
    assert not feed.add(state.track(Conn(ROOM, "a1", "ann", "other", 0))[1], 0.0,
                        lambda r: False)
    assert feed.next_due() is None and feed.due(10.0) == []


NODE = shutil.which("node")
STATIC = Path(__file__).parents[2] / "node" / "static"


@pytest.mark.skipif(NODE is None, reason="node not installed: roomcast.js's merge needs it")
def test_roomcast_js_merge_is_the_same_rule(tmp_path):
    """300 random histories (the generator above, seeded): roomcast.js's applyPresence ends
    where the truth is, for every observer."""
    rng = random.Random(20261201)
    cases = []
    for _ in range(300):
        history = []
        for _ in range(rng.randrange(80)):
            kind = rng.choice(["open", "open", "close", "tick", "observe"])
            history.append({"open": ("open", rng.choice(USERS)),
                            "close": ("close", rng.randrange(50)),
                            "tick": ("tick", rng.choice([0.01, 0.1, 0.3, 1.5])),
                            "observe": ("observe",)}[kind])
        run = simulate(history, rng.choice([1, 3, 100]))
        check_python(run)
        cases.append({k: run[k] for k in ("observers", "listing", "users", "user_count")})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    script = tmp_path / "check.mjs"
    script.write_text(f"""
import {{ readFileSync }} from "node:fs";
import {{ applyPresence, presenceView }} from {json.dumps((STATIC / "roomcast.js").as_uri())};
const cases = JSON.parse(readFileSync({json.dumps(str(tmp_path / "cases.json"))}, "utf8"));
let checked = 0;
for (const c of cases) {{
  for (const o of c.observers) {{
    const view = presenceView(o.summary);
    for (const f of o.frames) applyPresence(view, f);
    const users = view.members === null ? null : [...view.members.keys()].sort();
    const want = c.listing ? JSON.stringify(c.users) : "null";
    if (JSON.stringify(users) !== want || view.users !== c.user_count) {{
      console.log("MISMATCH", JSON.stringify(o), want, JSON.stringify(users));
      process.exit(1);
    }}
    checked++;
  }}
}}
console.log("checked", checked);
""")
    out = subprocess.run([NODE, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) >= 300


def test_huge_rooms_get_counts_less_often():
    """A count goes to every member: a room's counts go out once per count_interval up to
    1,000 users, then once per 1,000 users seconds, at most every 10 s."""
    state = PresenceState("self")
    feed = PresenceFeed(state, count_interval=1.0)
    for i in range(5000):
        feed.add(state.track(Conn(ROOM, f"c{i}", f"u{i}", "self", 0))[1], 0.0, lambda r: True)
    assert feed.count_interval_of(ROOM) == 5.0
    sent = []
    for k in range(1, 300):  # 30 s, a join every 0.1 s
        t = 0.1 * k
        feed.add(state.track(Conn(ROOM, f"x{k}", f"x{k}", "self", 0))[1], t, lambda r: True)
        if feed.due(t):
            sent.append(t)
    assert 5 <= len(sent) <= 7, sent  # every ~5 s, not every second
    assert all(b - a >= 5.0 - 1e-9 for a, b in zip(sent, sent[1:], strict=False)), sent
    assert feed.count_interval_of("empty") == 1.0
