"""Fixtures: real nats-server processes and real edge nodes on free ports."""

from __future__ import annotations

import pytest

from roomcast.natsserver import NatsCluster


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
