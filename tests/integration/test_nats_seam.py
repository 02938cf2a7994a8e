"""The seam into nats-py's internals (roomcast.backplane.natsclient) against a real
nats-server: whatever a direct handler raises is caught there, counted and logged, and
nats-py's read loop keeps reading (docs/performance.md)."""

from __future__ import annotations

import logging

from roomcast.backplane.natsclient import FastHeadersClient
from tests.helpers import UNIT


async def test_a_failing_direct_handler_drops_its_message_and_reading_goes_on(nats1, caplog):
    """A handler that raises on every other message: the others and another subscription's
    messages all arrive, requests still get their replies, the failures are counted and
    logged once (not once per message)."""
    nc = FastHeadersClient()
    await nc.connect(nats1.urls[0])
    try:
        got: list[bytes] = []
        other: list[bytes] = []

        def flaky(subject: bytes, headers: bytes | None, data: bytes) -> None:
            if int(data) % 2:
                raise RuntimeError("injected handler failure")
            got.append(data)

        sub = await nc.subscribe("seam.flaky")
        nc.direct(sub, flaky)
        sub2 = await nc.subscribe("seam.other")
        nc.direct(sub2, lambda s, h, d: other.append(d))
        async def echo(m) -> None:
            await m.respond(m.data)

        responder = await nc.subscribe("seam.echo", cb=echo)
        caplog.set_level(logging.ERROR, "roomcast.backplane.nats")
        for i in range(200):
            await nc.publish("seam.flaky", str(i).encode())
            await nc.publish("seam.other", str(i).encode())
        # The sentinel: the server handles one connection's messages in order, so its reply
        # comes after all 400 deliveries, which the parser handed over synchronously.
        reply = await nc.request("seam.echo", b"still reading", timeout=5 * UNIT)
        assert reply.data == b"still reading"
        assert len(other) == 200
        assert got == [str(i).encode() for i in range(0, 200, 2)]
        assert nc.handler_errors == 100 and nc.is_connected
        logged = [r for r in caplog.records if "handler for seam.flaky failed" in r.getMessage()]
        assert len(logged) == 1 and logged[0].exc_info is not None
        await responder.unsubscribe()
    finally:
        await nc.close()


async def test_permission_matcher_agrees_with_a_real_nats_server(nats1):
    """Every well-formed pattern of up to 4 tokens over {a, b, *, >} against every room of up to
    4 tokens over {a, b}: roomcast's matcher allows exactly what nats-server delivers."""
    import itertools

    from roomcast.auth import pattern_matches, pattern_problem

    def words(alphabet, n):
        return [".".join(t) for k in range(1, n + 1) for t in itertools.product(alphabet, repeat=k)]

    patterns = [p for p in words(["a", "b", "*", ">"], 4) if pattern_problem(p) is None]
    rooms = words(["a", "b"], 4)
    nc = FastHeadersClient()
    await nc.connect(nats1.urls[0])
    try:
        got: dict[str, set[str]] = {p: set() for p in patterns}
        for pat in patterns:
            sub = await nc.subscribe("perm." + pat)
            nc.direct(sub, lambda s, h, d, pat=pat: got[pat].add(s.decode()[len("perm."):]))

        async def echo(m) -> None:
            await m.respond(b"")

        await nc.subscribe("sentinel", cb=echo)
        for room in rooms:
            await nc.publish("perm." + room, b"")
        await nc.request("sentinel", b"", timeout=5 * UNIT)  # after every delivery above
        assert len(patterns) == 160 and len(rooms) == 30
        for pat in patterns:
            assert got[pat] == {r for r in rooms if pattern_matches(pat, r)}, pat
    finally:
        await nc.close()
