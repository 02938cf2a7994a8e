"""Member lists and counts on real nodes (docs/protocol.md §4.10): how much a `joined` lists,
and a room's members moving between lists and counts as it crosses its threshold."""

from __future__ import annotations

import pytest

from tests.helpers import PRESENCE_SCOPE, WsClient, room_name, start_node, token
from tests.integration.test_presence import DIFF, eventually

#: Under both presence scopes (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("presence_scope")


async def test_member_lists_are_capped_by_users_and_by_connections(nats3):
    """`joined` lists members up to --presence-list-max users, and each user's first 8
    connections; beyond the users, counts only (one user's many tabs do not ride on every
    join)."""
    from roomcast.presence.tracker import PresenceConfig

    node = await start_node(nats3.urls, node_id="capped",
                            presence=PresenceConfig(heartbeat_interval=0.25, timeout=1.5,
                                                    list_max=2,
                                                    scope=PRESENCE_SCOPE["scope"]),
                            drain_window=0.1)
    clients: list[WsClient] = []
    try:
        room = room_name()
        for user in ("u1", "u2"):
            clients.append(await WsClient.connect(node.port, token(user)))
            j = await clients[-1].join(room)
        assert set(j["presence"]["members"]) == {"u1", "u2"}
        clients.append(await WsClient.connect(node.port, token("u3")))
        j = await clients[-1].join(room)
        assert j["presence"] == {"users": 3, "connections": 3}
        tabs = room_name()
        for n in range(1, 11):
            clients.append(await WsClient.connect(node.port, token("tabs")))
            j = await clients[-1].join(tabs)
            assert len(j["presence"]["members"]["tabs"]) == min(n, 8)
            assert j["presence"]["connections"] == n
    finally:
        for c in clients:
            await c.close()
        await node.stop()


async def test_rooms_over_the_threshold_get_counts_then_lists_again(nats3):
    """Real nodes, list_max 3: the Python client keeps the member list from presence_diff
    frames, drops it for counts when a fourth user arrives (presence_count), and gets the
    whole list back (presence_state) when the room falls below 90 % of the threshold; its
    on_presence callback hears each user who came and went while listed."""
    from roomcast.client import connect
    from roomcast.presence.tracker import PresenceConfig

    cfg = PresenceConfig(heartbeat_interval=0.25, timeout=1.5, list_max=3, diff_interval=DIFF,
                         count_interval=0.2, scope=PRESENCE_SCOPE["scope"])
    a = await start_node(nats3.urls, node_id="ta", presence=cfg)
    b = await start_node(nats3.urls, node_id="tb", presence=cfg)
    room = room_name()
    heard: list[tuple[list, list]] = []
    others: list[WsClient] = []
    try:
        async with connect(f"ws://127.0.0.1:{a.port}/ws", token("obs"),
                           on_presence=lambda r, j, lft: heard.append((j, lft))) as c:
            await c.join(room)
            view = c.presence(room)
            assert sorted(view.members) == ["obs"]
            for i, node in enumerate((b, a)):
                others.append(await WsClient.connect(node.port, token(f"m{i}")))
                await others[-1].join(room)
            await eventually(lambda: view.members is not None and len(view.members) == 3)
            assert sorted(view.members) == ["m0", "m1", "obs"] and view.users == 3
            others.append(await WsClient.connect(b.port, token("m2")))
            await others[-1].join(room)
            await eventually(lambda: view.members is None and view.users == 4)
            await others.pop().close()  # 3 users: 3 > 90 % of 3, still counted
            await eventually(lambda: view.users == 3)
            assert view.members is None
            await others.pop().close()  # 2 users: listed again
            await eventually(lambda: view.members is not None)
            assert sorted(view.members) == ["m0", "obs"] and view.users == 2
            # Heard while listed: m0 and m1 came (one diff or two); nothing while counted, and
            # the list coming back is a sync, not news.
            assert sorted(u for came, _ in heard for u in came) == ["m0", "m1"], heard
            assert all(not went for _, went in heard), heard
            kinds = [f["type"] for f in others[0].frames if f["type"].startswith("presence_")]
            assert "presence_count" in kinds and kinds[-1] == "presence_state", kinds
    finally:
        for o in others:
            await o.close()
        await a.stop()
        await b.stop()
