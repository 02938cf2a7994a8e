"""Cross-node round trip: client A on node 1 publishes, client B on node 2 echoes.

    python -m bench.pingpong [--count 2000 --rate 0 500] [--without-nodes]

A publishes ``{"t": ns}`` to room ``ping``; B (joined to ``ping`` on the other node) publishes
the same data to room ``pong``, which A has joined. The round trip is from A's send to A's
receipt of the echo: two JetStream-stored publishes (R3 in the 3-server cluster) and two
cross-node deliveries. ``--rate`` paces the pings (0: one at a time, each after the last echo).

``--without-nodes`` measures the floor under it: the same round trip through
:class:`roomcast.backplane.nats.NatsBackplane` alone (A's connection on NATS server 1, B's on
server 2, both in this process; JetStream store, RePublish, same stream settings), no edge
node and no WebSocket.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

import msgspec

from bench.harness import Cluster, lag_summary, machine, percentile, pin_split
from bench.wsclient import connect


class Data(msgspec.Struct):
    t: int
    i: int


class Msg(msgspec.Struct):
    type: str
    room: str = ""
    data: Data | None = None


decode = msgspec.json.Decoder(Msg).decode
decode_data = msgspec.json.Decoder(Data).decode


class Timings:
    """Round trips and first legs (A's send -> B's receipt), in ns."""

    def __init__(self) -> None:
        self.rtts: list[int] = []
        self.legs: list[int] = []
        self.b_seen: dict[int, int] = {}
        self.got = asyncio.Event()

    def at_b(self, d: Data) -> None:
        if d.i >= 0:
            self.b_seen[d.i] = time.perf_counter_ns() - d.t

    def at_a(self, d: Data) -> None:
        if d.i >= 0:
            self.rtts.append(time.perf_counter_ns() - d.t)
            if d.i in self.b_seen:
                self.legs.append(self.b_seen.pop(d.i))
        self.got.set()

    def result(self, count: int) -> dict:
        rtts, legs = sorted(self.rtts), sorted(self.legs)
        return {"n": len(rtts), "p50": percentile(rtts, .5) / 1e6,
                "p99": percentile(rtts, .99) / 1e6,
                "max": rtts[-1] / 1e6 if rtts else float("nan"), "lost": count - len(rtts),
                "leg50": percentile(legs, .5) / 1e6, "leg99": percentile(legs, .99) / 1e6}


async def drive(args, tm: Timings, ping: Callable[[int, int], None]) -> dict:
    """Warm up, then send ``args.count`` pings paced at ``args.rate`` (0: one at a time)."""
    for _ in range(50):
        tm.got.clear()
        ping(time.perf_counter_ns(), -1)
        await asyncio.wait_for(tm.got.wait(), 5)
    t0 = time.monotonic()
    for i in range(args.count):
        if args.rate:
            await asyncio.sleep(max(0.0, t0 + i / args.rate - time.monotonic()))
        else:
            tm.got.clear()
        ping(time.perf_counter_ns(), i)
        if not args.rate:
            await asyncio.wait_for(tm.got.wait(), 5)
    deadline = time.monotonic() + 10
    while len(tm.rtts) < args.count and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    return tm.result(args.count)


async def run(args) -> dict:
    with Cluster(nodes=2, nats=args.nats) as cluster:
        if args.pin:
            pin_split(cluster)
        p1, p2 = (n.port for n in cluster.node_procs)
        path = f"/ws?token={cluster.token('pp')}"
        tm = Timings()
        b_proto = None

        def on_b(raw: bytes) -> None:
            if raw.startswith(b'{"type":"message"'):
                d = decode(raw).data
                tm.at_b(d)
                b_proto.send_text(b'{"type":"publish","room":"pp.pong","data":{"t":%d,"i":%d}}'
                                  % (d.t, d.i))

        def on_a(raw: bytes) -> None:
            if raw.startswith(b'{"type":"message"'):
                tm.at_a(decode(raw).data)

        a = await connect("127.0.0.1", p1, path, on_a)
        b_proto = await connect("127.0.0.1", p2, path, on_b)
        a.send_text(b'{"type":"join","room":"pp.pong"}')
        b_proto.send_text(b'{"type":"join","room":"pp.ping"}')
        await asyncio.sleep(0.5)
        lag0 = cluster.loop_lag()
        r = await drive(args, tm, lambda t, i: a.send_text(
            b'{"type":"publish","room":"pp.ping","data":{"t":%d,"i":%d}}' % (t, i)))
        r["lag"] = lag_summary(lag0, cluster.loop_lag())
        a.transport.close()
        b_proto.transport.close()
        await asyncio.sleep(0.2)
        return r


async def run_without_nodes(args) -> dict:
    from roomcast.backplane.nats import NatsBackplane, NatsConfig
    from roomcast.natsserver import NatsCluster

    with NatsCluster(args.nats) as cluster:
        replicas = cluster.replicas
        a = NatsBackplane(NatsConfig(urls=(cluster.urls[0],), replicas=replicas))
        b = NatsBackplane(NatsConfig(urls=(cluster.urls[1 % args.nats],), replicas=replicas))
        await a.start()
        await b.start()
        tm = Timings()
        pending: set[asyncio.Task] = set()

        def publish(bp: NatsBackplane, room: str, d: Data, msg_id: str) -> None:
            task = asyncio.create_task(bp.publish(room, b'{"t":%d,"i":%d}' % (d.t, d.i), msg_id))
            pending.add(task)
            task.add_done_callback(pending.discard)

        def on_b(m) -> None:
            d = decode_data(m.body)
            tm.at_b(d)
            publish(b, "pp.pong", d, f"b{d.t}")

        await b.subscribe("pp.ping", on_b)
        await a.subscribe("pp.pong", lambda m: tm.at_a(decode_data(m.body)))
        await asyncio.sleep(0.5)
        r = await drive(args, tm, lambda t, i: publish(a, "pp.ping", Data(t, i), f"a{t}"))
        await asyncio.gather(*pending, return_exceptions=True)
        await a.close()
        await b.close()
        return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--rate", type=float, nargs="+", default=[0.0, 500.0],
                    help="pings per second (0: sequential)")
    ap.add_argument("--nats", type=int, default=3)
    ap.add_argument("--pin", action="store_true",
                    help="NATS servers on CPU 0, nodes and load generator on the others")
    ap.add_argument("--without-nodes", action="store_true",
                    help="the same round trip through the NATS backplane alone (the floor)")
    args = ap.parse_args()
    what = "backplane only (no nodes)" if args.without_nodes else "through two edge nodes"
    print(f"# cross-node round trip {what}, NATS {args.nats} servers"
          f"{', pinned: NATS on CPU 0, the rest on the others' if args.pin else ''}; {machine()}")
    print("| pings/s | round trips | p50 ms | p99 ms | max ms | lost | A -> B p50 / p99 ms | "
          "nodes' loop lag samples / over 5 / 25 / 100 ms |")
    print("|---|---|---|---|---|---|---|---|")
    import uvloop

    for rate in args.rate:
        args.rate = rate
        r = uvloop.run(run_without_nodes(args) if args.without_nodes else run(args))
        label = "sequential" if not rate else f"{rate:g}"
        print(f"| {label} | {r['n']} | {r['p50']:.2f} | {r['p99']:.2f} | {r['max']:.2f} | "
              f"{r['lost']} | {r['leg50']:.2f} / {r['leg99']:.2f} | {r.get('lag', '-')} |", flush=True)


if __name__ == "__main__":
    main()
