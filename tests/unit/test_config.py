"""roomcast.config and the presence settings: invalid values are refused at start-up."""

from __future__ import annotations

import pytest

from roomcast.errors import ConfigError
from roomcast.presence.tracker import PresenceConfig
from tests.helpers import node_config


@pytest.mark.parametrize("node_id", ["node 1", "node-1\n", "a..b", "x" * 129, "n*", "n>"])
def test_node_ids_that_would_break_a_nats_subject_are_refused(node_id):
    """The node id becomes part of the presence sync/evict subjects: the subject validator."""
    with pytest.raises(ConfigError) as info:
        node_config(["nats://127.0.0.1:4222"], node_id=node_id)
    assert info.value.field == "node_id"


def test_hostname_style_node_ids_are_fine():
    assert node_config(["nats://127.0.0.1:4222"], node_id="edge-7.example-1234").node_id


@pytest.mark.parametrize("kw", [{"timeout": 9.5, "heartbeat_interval": 1.0},
                                {"timeout": 10.0, "heartbeat_interval": 0.5},
                                {"timeout": 1.0, "heartbeat_interval": 1.0}])
def test_presence_crash_bound_stays_within_10_seconds(kw):
    """A crashed node is removed within timeout + heartbeat: that sum is at most 10 s."""
    with pytest.raises(ConfigError):
        PresenceConfig(**kw)
    assert PresenceConfig(timeout=9.0, heartbeat_interval=1.0)
