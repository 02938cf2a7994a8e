"""The lock-free hot-path metrics export exactly what prometheus-client's own would."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from roomcast.node.metrics import FastCounter, FastHistogram, _fast

BUCKETS = (.0005, .001, .002, .005, .01, .1, 1, 20)


@given(st.lists(st.tuples(st.one_of(st.sampled_from(BUCKETS), st.floats(0, 50, allow_nan=False)),
                          st.integers(1, 3)), max_size=50),
       st.lists(st.integers(1, 1000), max_size=20))
def test_same_exposition_as_prometheus_client(observations, increments):
    ours = CollectorRegistry()
    fast_h = FastHistogram("h_seconds", "doc", BUCKETS)
    fast_c = FastCounter("c", "doc")
    ours.register(_fast([fast_h, fast_c]))
    ref = CollectorRegistry()
    h = Histogram("h_seconds", "doc", buckets=BUCKETS, registry=ref)
    c = Counter("c", "doc", registry=ref)
    for value, times in observations:
        fast_h.observe(value, times)
        for _ in range(times):
            h.observe(value)
    for n in increments:
        fast_c.inc(n)
        c.inc(n)

    def lines(reg):  # prometheus-client adds a _created sample to its own; we have none
        return [line for line in generate_latest(reg).decode().splitlines()
                if "_created" not in line and not line.startswith("# ")]

    mine, theirs = lines(ours), lines(ref)
    assert [ln.rsplit(" ", 1)[0] for ln in mine] == [ln.rsplit(" ", 1)[0] for ln in theirs]
    for a, b in zip(mine, theirs, strict=True):
        assert abs(float(a.rsplit(" ", 1)[1]) - float(b.rsplit(" ", 1)[1])) < 1e-6


async def test_loop_lag_probe_records_a_stalled_loop():
    """A callback that blocks the loop for 150 ms shows up as one lag sample of >= 100 ms;
    an idle loop's samples stay under it."""
    import asyncio
    import time

    from roomcast.node.metrics import probe_loop_lag

    h = FastHistogram("lag_seconds", "doc", (.01, .1, 1))
    task = asyncio.create_task(probe_loop_lag(h, interval=0.02))
    await asyncio.sleep(0.2)
    idle = list(h.counts)
    assert sum(idle) >= 3  # it samples (a loaded machine may lag anywhere: not asserted)
    time.sleep(0.15)  # noqa: ASYNC251 - blocking the loop is the point
    await asyncio.sleep(0.1)
    task.cancel()
    # The block shows up as (at least) one more sample in (0.1, 1] or above.
    assert h.counts[2] + h.counts[3] >= idle[2] + idle[3] + 1
    assert h.sum >= 0.1


def test_connections_are_read_at_scrape_and_codes_counted_per_child() -> None:
    from roomcast.node.metrics import NodeMetrics

    m = NodeMetrics("n1")
    conns: dict = {}
    m.watch_connections(conns)
    conns.update({"a": None, "b": None})
    for code in (1000, 4001, 1000):
        m.count_close(code)
    m.count_error("rate_limited")
    text = m.render().decode()
    assert "roomcast_connections 2.0" in text
    assert 'roomcast_closes_total{code="1000"} 2.0' in text
    assert 'roomcast_closes_total{code="4001"} 1.0' in text
    assert 'roomcast_errors_total{code="rate_limited"} 1.0' in text
    del conns["a"]
    assert "roomcast_connections 1.0" in m.render().decode()
