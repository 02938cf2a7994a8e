"""Fixtures: real nats-server processes and real edge nodes on free ports."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from roomcast.natsserver import NatsCluster

# CI runs the same examples every time (reproducible); local runs keep exploring.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


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
