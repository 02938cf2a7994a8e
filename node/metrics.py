"""Prometheus metrics of one edge node (``/metrics``). One registry per node.

The metrics updated once per publish or per delivered message (``received``, ``delivered``,
``publish_latency``, ``fanout``) are :class:`FastCounter` / :class:`FastHistogram`: plain
attributes updated without prometheus-client's per-update lock and value objects (~1-3 µs per
update, a measurable share of a publish), read by a collector at scrape time. A node runs one
event loop thread, so no lock is needed.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)


class FastCounter:
    __slots__ = ("name", "doc", "value")

    def __init__(self, name: str, doc: str) -> None:
        self.name, self.doc, self.value = name, doc, 0

    def inc(self, n: int = 1) -> None:
        self.value += n

    def family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.doc, value=self.value)


class FastHistogram:
    __slots__ = ("name", "doc", "bounds", "counts", "sum")

    def __init__(self, name: str, doc: str, buckets: tuple[float, ...]) -> None:
        self.name, self.doc = name, doc
        self.bounds = sorted(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float, times: int = 1) -> None:
        self.counts[bisect_left(self.bounds, value)] += times  # bucket i: value <= bounds[i]
        self.sum += value * times

    def family(self) -> HistogramMetricFamily:
        cumulative, total = [], 0
        for bound, n in zip([*map(_le, self.bounds), "+Inf"], self.counts, strict=True):
            total += n
            cumulative.append((bound, total))
        return HistogramMetricFamily(self.name, self.doc, buckets=cumulative, sum_value=self.sum)


def _le(bound: float) -> str:
    return repr(float(bound))


class _Collector:
    """Values read at scrape time: ``collect`` returns the metric families."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self.collect = collect

    def describe(self) -> list:
        return []


def _fast(metrics: list[FastCounter | FastHistogram]) -> _Collector:
    return _Collector(lambda: [m.family() for m in metrics])


#: Seconds between two event-loop lag samples (:func:`probe_loop_lag`).
LOOP_LAG_INTERVAL = 0.1


async def probe_loop_lag(histogram: FastHistogram, interval: float = LOOP_LAG_INTERVAL) -> None:
    """Sleep ``interval`` again and again and record how much later than asked each wake-up
    came. Anything that keeps the loop from running timers (a long callback, a collector pause,
    a CPU shared with busier processes) shows up here; libuv timers have 1 ms granularity, so
    lags under ~1 ms are noise."""
    while True:
        t = time.perf_counter()
        await asyncio.sleep(interval)
        histogram.observe(max(0.0, time.perf_counter() - t - interval))


class NodeMetrics:
    def __init__(self, node_id: str) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.connections = Gauge("roomcast_connections", "Open client connections", registry=r)
        self.rooms = Gauge("roomcast_rooms", "Rooms with local members", registry=r)
        self.received = FastCounter("roomcast_messages_received",
                                    "Client publishes accepted for storage")
        self.delivered = FastCounter("roomcast_messages_delivered",
                                     "Message frames written to clients")
        self.fanout = FastHistogram("roomcast_fanout_recipients", "Local recipients per message",
                                    (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000))
        self.publish_latency = FastHistogram(
            "roomcast_publish_ack_seconds", "Client publish to JetStream ack",
            (.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10, 20))
        self.loop_lag = FastHistogram(
            "roomcast_event_loop_lag_seconds",
            f"How late the node's event loop ran a timer due every {LOOP_LAG_INTERVAL} s",
            (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
        r.register(_fast([self.received, self.delivered, self.fanout, self.publish_latency,
                          self.loop_lag]))
        self.errors = Counter("roomcast_errors_total", "Error frames sent, by code", ["code"],
                              registry=r)
        self.closes = Counter("roomcast_closes_total", "Connections closed by the server, by code",
                              ["code"], registry=r)
        self.auth_failures = Counter("roomcast_auth_failures_total", "Refused handshakes",
                                     registry=r)
        self.slow_consumers = Counter("roomcast_slow_consumers_total",
                                      "Connections closed for not reading fast enough", registry=r)
        self.gaps_repaired = Counter("roomcast_gaps_repaired_total",
                                     "Live gaps filled from JetStream history", registry=r)
        self.resumes = Counter("roomcast_resumes_total", "Session resumes, by full recovery",
                               ["recovered"], registry=r)
        self.nats_connected = Gauge("roomcast_nats_connected", "1 when connected to NATS",
                                    registry=r)
        self.draining = Gauge("roomcast_draining", "1 while the node drains", registry=r)
        self.info = Gauge("roomcast_node_info", "Node identity", ["node"], registry=r)
        self.info.labels(node=node_id).set(1)
        # A labelled metric's child per label value, looked up once (``labels()`` takes a
        # lock and builds a tuple on every call; closes and errors are counted per connection).
        self._children: dict[tuple[object, str], object] = {}

    def watch_connections(self, connections) -> None:
        """``roomcast_connections`` is read from ``connections`` at each scrape, not set on
        every connect and close."""
        self.connections.set_function(lambda: len(connections))

    def count_close(self, code: int) -> None:
        self._child(self.closes, str(code)).inc()

    def count_error(self, code: str) -> None:
        self._child(self.errors, code).inc()

    def _child(self, metric, value: str):
        key = (metric, value)
        child = self._children.get(key)
        if child is None:
            if len(self._children) > 1000:  # codes are a small fixed set; bounded anyway
                self._children.clear()
            child = self._children[key] = metric.labels(code=value)
        return child

    def watch_event_log(self, log) -> None:
        """Expose a :class:`roomcast.presence.eventlog.EventLog`'s counters."""

        def collect() -> list[Metric]:
            events = CounterMetricFamily("roomcast_presence_events",
                                         "Backend presence events, by outcome",
                                         labels=["outcome"])
            events.add_metric(["stored"], log.stored_events)
            events.add_metric(["dropped"], log.dropped)
            return [events,
                    CounterMetricFamily("roomcast_presence_event_messages",
                                        "Stored presence event messages (batches)",
                                        value=log.stored),
                    GaugeMetricFamily("roomcast_presence_events_pending",
                                      "Presence events waiting to be stored", value=log.pending)]

        self.registry.register(_Collector(collect))

    def watch_presence(self, tracker) -> None:
        """What presence costs this node: the rooms and entries it holds, the changes from
        other nodes it applied (bench.clustersize)."""

        def collect() -> list[Metric]:
            rooms, entries = tracker.state.size()
            return [GaugeMetricFamily("roomcast_presence_rooms", "Rooms whose presence this "
                                      "node holds", value=rooms),
                    GaugeMetricFamily("roomcast_presence_entries", "Connection entries (room, "
                                      "connection) this node holds", value=entries),
                    CounterMetricFamily("roomcast_presence_remote_changes", "Presence changes "
                                        "from other nodes this node received",
                                        value=tracker.deltas_received)]

        self.registry.register(_Collector(collect))

    def watch_replay_cache(self, cache) -> None:
        """Expose a :class:`roomcast.node.replaycache.ReplayCache`'s counters."""

        def collect() -> list[Metric]:
            lookups = CounterMetricFamily("roomcast_replay_cache_lookups",
                                          "Resumes looked up in the replay cache, by result",
                                          labels=["result"])
            lookups.add_metric(["hit"], cache.hits)
            lookups.add_metric(["miss"], cache.misses)
            return [lookups, GaugeMetricFamily("roomcast_replay_cache_bytes",
                                               "Bytes held by the replay cache", value=cache.size)]

        self.registry.register(_Collector(collect))

    def watch_nats_client(self, client) -> None:
        """Expose a :class:`roomcast.backplane.natsclient.FastHeadersClient`'s barrier count."""
        self.registry.register(_Collector(lambda: [CounterMetricFamily(
            "roomcast_nats_handler_errors",
            "NATS messages dropped because roomcast's handler raised (reading went on)",
            value=client.handler_errors)]))

    def render(self) -> bytes:
        return generate_latest(self.registry)
