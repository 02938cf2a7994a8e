"""Fixtures: real nats-server processes and real edge nodes on free ports."""

from __future__ import annotations

import os

import pytest
import pytest_asyncio
from hypothesis import settings

from roomcast.natsserver import NatsCluster

# CI runs the same examples every time (reproducible); local runs keep exploring.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def pytest_collection_modifyitems(config, items):
    """Long background scenarios are judged by tests/test_zz_background.py when it runs."""
    from tests import background

    background.CHECKED_LATER = any(i.nodeid.startswith("tests/test_zz_background.py")
                                   for i in items)


def pytest_generate_tests(metafunc):
    """Tests that use ``presence_scope`` run once per presence scope (a test that only makes
    sense under some names them: ``@pytest.mark.presence_scopes("cluster")``)."""
    if "presence_scope" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("presence_scopes")
        scopes = list(marker.args) if marker else ["cluster", "rooms"]
        metafunc.parametrize("presence_scope", scopes, indirect=True)


@pytest.fixture
def presence_scope(request):
    """The presence scope of this test (``fast_presence`` and ``fast_env`` read it)."""
    from tests.helpers import PRESENCE_SCOPE

    PRESENCE_SCOPE["scope"] = request.param
    yield request.param
    PRESENCE_SCOPE["scope"] = "cluster"


@pytest.fixture(scope="module")
def nats3():
    """A 3-server JetStream cluster for the test module."""
    with NatsCluster(3) as cluster:
        yield cluster


@pytest.fixture
def nats1():
    """A single JetStream server for one test."""
    with NatsCluster(1) as cluster:
        yield cluster


@pytest_asyncio.fixture
async def nodes(nats3):
    """Two in-process edge nodes, ``node-a`` and ``node-b``, on the module's cluster."""
    from tests.helpers import start_node

    a = await start_node(nats3.urls, node_id="node-a")
    b = await start_node(nats3.urls, node_id="node-b")
    yield a, b
    await a.stop()
    await b.stop()
