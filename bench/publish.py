"""Publish throughput: how many client publishes per second one node stores in JetStream.

    python -m bench.publish [--connections 50 --window 64 --rooms 100 --duration 8]
                            [--streams 1 3]

``--streams K`` spreads the rooms over K JetStream streams (a namespaces file with
``[defaults] streams = K``, docs/namespaces.md; each value one run), leaders on different
servers.

Starts its own 3-server JetStream cluster (stream R3) and one edge node on 127.0.0.1.
``--connections`` clients each keep ``--window`` publishes in flight (a new one is sent as each
``ack`` arrives), spread over ``--rooms`` rooms nobody has joined, so the figure is the
ingest path alone: client frame -> node -> JetStream -> stored -> ``ack``. Prints acked
publishes/s, node CPU per publish, NATS CPU, and the ack latency p50/p99/max.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench.harness import (
    Cluster,
    add_gen_gc_flag,
    machine,
    percentile,
    self_cpu,
    tune_generator_gc,
)
from bench.wsclient import connect


async def _pace(args, senders, credits, state) -> None:
    """Send ``--rate`` publishes per second in total (1 ms ticks), within each window."""
    t0 = time.monotonic()
    sent = 0
    i = 0
    n = len(senders)
    while not state["stop"]:
        due = int((time.monotonic() - t0) * args.rate)
        tries = 0
        while sent < due and tries < n:
            k = i % n
            i += 1
            if credits[k][0] > 0:
                credits[k][0] -= 1
                senders[k]()
                sent += 1
                tries = 0
            else:
                tries += 1
        await asyncio.sleep(0.001)


async def run(args) -> dict:
    env = {}
    if args.streams != 1:
        import tempfile

        f = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)  # noqa: SIM115
        f.write(f"[defaults]\nstreams = {args.streams}\n")
        f.close()
        env["ROOMCAST_NAMESPACES"] = f.name
    with Cluster(nodes=1, nats=args.nats, env=env) as cluster:
        port = cluster.node_procs[0].port
        path = f"/ws?token={cluster.token('pub')}"
        lat: list[int] = []
        state = {"measuring": False, "acked": 0, "errors": 0, "stop": False}
        protos = []

        def make(idx: int):
            sent_at: dict[bytes, int] = {}
            credit = [0]
            counter = [0]
            proto_box: list = []

            def send() -> None:
                i = counter[0]
                counter[0] = i + 1
                rid = b"%d" % i
                sent_at[rid] = time.perf_counter_ns()
                proto_box[0].send_text(
                    b'{"type":"publish","room":"pub.%d","rid":%s,"data":{"p":"%s"}}'
                    % ((idx * 7 + i) % args.rooms, rid, b"x" * args.size))

            def on_frame(raw: bytes) -> None:
                if raw.startswith(b'{"type":"ack"'):
                    start = raw.find(b'"rid":') + 6
                    end = start
                    while raw[end] in b"0123456789":
                        end += 1
                    t = sent_at.pop(raw[start:end], None)
                    if state["measuring"] and t is not None:
                        lat.append(time.perf_counter_ns() - t)
                        state["acked"] += 1
                    if not state["stop"]:
                        if args.rate:
                            credit[0] += 1  # paced: the sender loop sends when the pace allows
                        else:
                            send()
                elif raw.startswith(b'{"type":"error"'):
                    state["errors"] += 1
                    if state["errors"] <= 3:
                        print("error frame:", raw[:200].decode(errors="replace"), flush=True)

            return proto_box, send, on_frame, credit

        senders = []
        credits = []
        for idx in range(args.connections):
            box, send, on_frame, credit = make(idx)
            box.append(await connect("127.0.0.1", port, path, on_frame))
            protos.append(box[0])
            senders.append(send)
            credits.append(credit)
        await asyncio.sleep(0.5)
        tune_generator_gc(args)
        pacer = None
        if args.rate:
            for credit in credits:
                credit[0] = args.window
            pacer = asyncio.get_running_loop().create_task(_pace(args, senders, credits, state))
        else:
            for send in senders:
                for _ in range(args.window):
                    send()
        await asyncio.sleep(args.warmup)
        cpu0, nats0, gen0 = cluster.node_cpu(), cluster.nats_cpu(), self_cpu()
        state["measuring"] = True
        t0 = time.monotonic()
        await asyncio.sleep(args.duration)
        state["measuring"] = False
        elapsed = time.monotonic() - t0
        cpu1, nats1, gen1 = cluster.node_cpu(), cluster.nats_cpu(), self_cpu()
        acked = state["acked"]
        state["stop"] = True
        if pacer is not None:
            pacer.cancel()
        await asyncio.sleep(1.0)
        for p in protos:
            p.transport.close()
        await asyncio.sleep(0.3)
        lat.sort()
        return {
            "publishes_per_s": acked / elapsed,
            "cpu_us": (cpu1 - cpu0) / acked * 1e6 if acked else float("nan"),
            "node_cpu": (cpu1 - cpu0) / elapsed * 100,
            "nats_cpu": (nats1 - nats0) / elapsed * 100,
            "gen_cpu": (gen1 - gen0) / elapsed * 100,
            "p50": percentile(lat, .5) / 1e6, "p99": percentile(lat, .99) / 1e6,
            "max": lat[-1] / 1e6 if lat else float("nan"), "errors": state["errors"],
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--window", type=int, nargs="+", default=[64],
                    help="publishes in flight per connection (several values: one run each)")
    ap.add_argument("--rooms", type=int, default=100)
    ap.add_argument("--rate", type=float, default=0.0,
                    help="publishes/s in total (0: as fast as acks come back)")
    ap.add_argument("--size", type=int, default=60, help="padding bytes per message")
    ap.add_argument("--duration", type=float, default=8.0)
    add_gen_gc_flag(ap)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--nats", type=int, default=3)
    ap.add_argument("--runs", type=int, default=1, help="rounds over the settings, alternating")
    ap.add_argument("--streams", type=int, nargs="+", default=[1],
                    help="JetStream streams the rooms are spread over (several: one run each)")
    args = ap.parse_args()
    print(f"# publish throughput: 1 node, {args.connections} connections, {args.rooms} rooms, "
          f"NATS {args.nats} servers; {machine()}")
    print("| streams | in flight | publishes/s | node CPU µs/publish | node CPU % | NATS CPU % | "
          "load gen CPU % | ack p50 ms | p99 ms | max ms | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    import uvloop

    windows, all_streams = args.window, args.streams
    for streams, window in [(k, w) for _ in range(args.runs) for k in all_streams for w in windows]:
        args.window, args.streams = window, streams
        r = uvloop.run(run(args))
        print(f"| {streams} | {window * args.connections} | {r['publishes_per_s']:,.0f} | "
              f"{r['cpu_us']:.1f} | "
              f"{r['node_cpu']:.0f} | {r['nats_cpu']:.0f} | {r['gen_cpu']:.0f} | {r['p50']:.2f} | "
              f"{r['p99']:.2f} | {r['max']:.2f} | {r['errors']} |", flush=True)


if __name__ == "__main__":
    main()
