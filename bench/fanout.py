"""Fan-out benchmark: R rooms x M members over N nodes, one publisher per room.

    python -m bench.fanout [--rooms 10 --members 100 --rate 32 --duration 10]

Starts its own 3-server JetStream cluster and edge nodes on 127.0.0.1, connects R*M receivers
(spread round-robin over the nodes) and R publishers, publishes ``--rate`` messages per second
per room for ``--duration`` seconds, and prints deliveries/s, server CPU per delivery,
end-to-end latency (publish sent -> message received) p50/p99/max, loss and duplicates.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import msgspec

from bench.harness import (
    Cluster,
    add_gen_gc_flag,
    add_user_mode,
    lag_summary,
    machine,
    percentile,
    self_cpu,
    tune_generator_gc,
)
from bench.wsclient import connect
from roomcast.client.model import Verdict, judge
from roomcast.node.metrics import FastHistogram, probe_loop_lag


class Data(msgspec.Struct):
    t: int


class Msg(msgspec.Struct):  # only what the receivers check; other fields are skipped
    seq: int = 0
    prev: int | None = 0
    data: Data | None = None


decode = msgspec.json.Decoder(Msg).decode


class Receiver:
    __slots__ = ("last", "count", "dups", "gaps", "lat", "measuring")

    def __init__(self, lat: list[float]) -> None:
        self.last: int | None = None
        self.count = 0
        self.dups = 0
        self.gaps = 0
        self.lat = lat

    def on_frame(self, raw: bytes) -> None:
        if not raw.startswith(b'{"type":"message"'):
            return
        m = decode(raw)
        verdict = judge(self.last, m.seq, m.prev)  # the clients' rule; here gaps are counted
        if verdict is Verdict.DUPLICATE:
            self.dups += 1
            return
        if verdict is Verdict.GAP:
            self.gaps += 1
        self.last = m.seq
        self.count += 1
        if m.data is not None and STATE["measuring"]:
            self.lat.append(time.time_ns() - m.data.t)


STATE = {"measuring": False}



async def run(args) -> dict:
    with Cluster(nodes=args.nodes, nats=args.nats) as cluster:
        ports = [n.port for n in cluster.node_procs]
        lat: list[float] = []
        receivers: list[Receiver] = []
        protos = []
        paths = cluster.paths("member", args.rooms * args.members, args.same_user)
        for i in range(args.rooms * args.members):
            room = i % args.rooms
            r = Receiver(lat)
            p = await connect("127.0.0.1", ports[i % len(ports)], paths[i], r.on_frame)
            p.send_text(b'{"type":"join","room":"bench.%d"}' % room)
            receivers.append(r)
            protos.append(p)
        await asyncio.sleep(1.0)
        acks = [0] * args.rooms
        pubs = []
        for room in range(args.rooms):
            def on_ack(raw: bytes, room=room) -> None:
                if raw.startswith(b'{"type":"ack"'):
                    acks[room] += 1
            pubs.append(await connect("127.0.0.1", ports[room % len(ports)],
                                      cluster.paths(f"publisher{room}", 1)[0], on_ack))
        tune_generator_gc(args)
        pad = "x" * max(0, args.size - 60)
        sent = 0
        interval = 1.0 / args.rate
        t_start = time.monotonic()
        t_measure = t_start + args.warmup
        t_end = t_measure + args.duration
        cpu0 = nats0 = None
        d0 = 0
        tick = 0
        slot = interval / args.rooms  # rooms publish at staggered phases, not in one burst
        while True:
            now = time.monotonic()
            if now >= t_end:
                break
            if cpu0 is None and now >= t_measure:
                STATE["measuring"] = True
                lag0 = cluster.loop_lag()
                gen_lag = FastHistogram("gen_lag", "", (0.005, 0.025, 0.1))
                gen_probe = asyncio.create_task(probe_loop_lag(gen_lag))
                cpu0, nats0 = cluster.node_cpu(), cluster.nats_cpu()
                gen0 = self_cpu()
                d0 = sum(r.count for r in receivers)
            room = tick % args.rooms
            pubs[room].send_text(
                b'{"type":"publish","room":"bench.%d","id":"%d","data":{"t":%d,"p":"%s"}}'
                % (room, tick, time.time_ns(), pad.encode()))
            sent += 1
            tick += 1
            await asyncio.sleep(max(0.0, t_start + tick * slot - time.monotonic()))
        cpu1, nats1 = cluster.node_cpu(), cluster.nats_cpu()
        gen1 = self_cpu()
        d1 = sum(r.count for r in receivers)
        STATE["measuring"] = False
        gen_probe.cancel()
        node_lag = lag_summary(lag0, cluster.loop_lag())
        c = gen_lag.counts
        gen_lag_s = f"{sum(c)} / {sum(c[1:])} / {sum(c[2:])} / {c[3]}"
        elapsed = time.monotonic() - t_measure
        # Let in-flight messages arrive, then count loss.
        expected = args.members * sum(acks)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            expected = args.members * sum(acks)
            if sum(r.count for r in receivers) >= expected and sum(acks) == sent:
                break
            await asyncio.sleep(0.1)
        received = sum(r.count for r in receivers)
        rss = cluster.node_rss()
        for p in protos + pubs:
            p.transport.close()
        await asyncio.sleep(0.5)  # let the loop really close them before stopping the nodes
        lat.sort()
        deliveries = d1 - d0
        return {
            "rooms": args.rooms, "members": args.members, "nodes": args.nodes,
            "rate_per_room": args.rate, "published": sent, "acked": sum(acks),
            "deliveries_per_s": deliveries / elapsed,
            "cpu_us_per_delivery": (cpu1 - cpu0) / deliveries * 1e6 if deliveries else float("nan"),
            "node_cpu_percent": (cpu1 - cpu0) / elapsed * 100,
            "nats_cpu_percent": (nats1 - nats0) / elapsed * 100,
            "gen_cpu_percent": (gen1 - gen0) / elapsed * 100,
            "p50_ms": percentile(lat, 0.5) / 1e6, "p99_ms": percentile(lat, 0.99) / 1e6,
            "max_ms": (lat[-1] / 1e6) if lat else float("nan"),
            "lost": max(0, expected - received), "dups": sum(r.dups for r in receivers),
            "gaps": sum(r.gaps for r in receivers),
            "node_rss_mib": [round(x / 2**20, 1) for x in rss],
            "node_lag": node_lag, "gen_lag": gen_lag_s,
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rooms", type=int, default=10)
    ap.add_argument("--members", type=int, default=100)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--nats", type=int, default=3)
    ap.add_argument("--rate", type=float, nargs="+", default=[32.0],
                    help="messages per second per room (several values: one run each)")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    add_gen_gc_flag(ap)
    ap.add_argument("--size", type=int, default=100, help="approximate message size, bytes")
    add_user_mode(ap)
    args = ap.parse_args()
    print(f"# fan-out: {args.rooms} rooms x {args.members} members over {args.nodes} nodes, "
          f"NATS {args.nats} servers; {machine()}")
    print("| rate/room | deliveries/s | node CPU µs/delivery | node CPU % | NATS CPU % | load gen CPU % | "
          "p50 ms | p99 ms | max ms | lost | dups | gaps | node RSS MiB | "
          "loop lag samples / over 5 / 25 / 100 ms: nodes; load generator |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    import uvloop

    for rate in args.rate:
        args.rate = rate
        r = uvloop.run(run(args))
        print(f"| {rate:g} | {r['deliveries_per_s']:,.0f} | {r['cpu_us_per_delivery']:.1f} | "
              f"{r['node_cpu_percent']:.0f} | {r['nats_cpu_percent']:.0f} | {r['gen_cpu_percent']:.0f} | {r['p50_ms']:.1f} | "
              f"{r['p99_ms']:.1f} | {r['max_ms']:.1f} | {r['lost']} | {r['dups']} | {r['gaps']} | "
              f"{r['node_rss_mib']} | {r['node_lag']}; {r['gen_lag']} |", flush=True)


if __name__ == "__main__":
    main()
