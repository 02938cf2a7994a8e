"""Optional backend: the backplane contract against NATS in a Docker container (testcontainers).

Skipped, with the reason, where no Docker engine is reachable (the development machines and CI
here have only the docker client). The same contract always runs against real nats-server
processes in tests/contracts.
"""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def nats_container():
    try:
        from testcontainers.community.nats import NatsContainer
    except ImportError:
        try:  # testcontainers before the community split
            from testcontainers.nats import NatsContainer  # type: ignore
        except ImportError as exc:
            pytest.skip(f"testcontainers NATS module not installed: {exc}")
    try:
        container = NatsContainer("nats:2.15.1-alpine").with_command("-js")
        container.start()
    except Exception as exc:  # noqa: BLE001 - any failure to reach Docker means: skip
        pytest.skip(f"no Docker engine reachable for testcontainers: {type(exc).__name__}: "
                    f"{str(exc)[:160]}")
    yield container
    container.stop()


async def test_backplane_contract_on_a_container(nats_container):
    """Publish, dedupe and history on NATS running in a container."""
    from roomcast.backplane.nats import NatsBackplane, NatsConfig

    url = nats_container.nats_uri()
    bp = NatsBackplane(NatsConfig(urls=(url,), replicas=1, stream=f"TC{uuid.uuid4().hex[:6]}"))
    await bp.start()
    try:
        a = await bp.publish("tc", b"1", "id-1")
        b = await bp.publish("tc", b"1", "id-1")
        assert b.seq == a.seq and b.duplicate
        assert [m.seq for m in await bp.history("tc", 1, 10)] == [a.seq]
    finally:
        await bp.close()
