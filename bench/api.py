"""Backend publishes through the server API (docs/api.md): publishes/s through one node.

    python -m bench.api [--count 20000 --window 512]

One edge node on a 3-server JetStream cluster (R3); a backend (nats-py, in this process) sends
``roomcast.api.publish`` requests over NATS with ``--window`` of them in flight, each with its
own id, and counts the replies (each one only after JetStream stored the message).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import nats

from bench.harness import Cluster, machine, percentile, self_cpu


async def run(cluster: Cluster, count: int, window: int, rooms: int) -> dict:
    nc = await nats.connect(cluster.nats_cluster.urls)
    try:
        latencies: list[float] = []
        errors = 0
        sem = asyncio.Semaphore(window)

        async def one(i: int) -> None:
            nonlocal errors
            body = json.dumps({"room": f"bench.api.{i % rooms}", "data": {"n": i},
                               "id": f"api-{i}"}).encode()
            async with sem:
                t0 = time.perf_counter()
                msg = await nc.request("roomcast.api.publish", body, timeout=30)
                latencies.append(time.perf_counter() - t0)
            if "seq" not in json.loads(msg.data):
                errors += 1

        await asyncio.gather(*(one(i) for i in range(min(500, count))))  # warm-up
        latencies.clear()
        node_cpu0, gen_cpu0 = cluster.node_cpu(), self_cpu()
        nats_cpu0 = cluster.nats_cpu()
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(500, count)))
        elapsed = time.perf_counter() - t0
        n = count - 500
        lat = sorted(latencies)
        return {"publishes": n, "per_s": n / elapsed, "errors": errors,
                "p50_ms": percentile(lat, 0.5) * 1000, "p99_ms": percentile(lat, 0.99) * 1000,
                "node_cpu_us": (cluster.node_cpu() - node_cpu0) / n * 1e6,
                "nats_cpu_s": cluster.nats_cpu() - nats_cpu0,
                "gen_cpu_s": self_cpu() - gen_cpu0}
    finally:
        await nc.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--window", type=int, nargs="+", default=[64, 512])
    ap.add_argument("--rooms", type=int, default=10)
    args = ap.parse_args()
    import uvloop

    print(f"# server API publish: 1 node, 3 NATS servers (R3), {args.rooms} rooms; {machine()}")
    print("| in flight | publishes | publishes/s | p50 ms | p99 ms | node CPU µs/publish "
          "| errors |")
    print("|---|---|---|---|---|---|---|")
    with Cluster(nodes=1, nats=3) as cluster:
        for window in args.window:
            r = uvloop.run(run(cluster, args.count, window, args.rooms))
            print(f"| {window} | {r['publishes']} | {r['per_s']:,.0f} | {r['p50_ms']:.2f} | "
                  f"{r['p99_ms']:.2f} | {r['node_cpu_us']:.0f} | {r['errors']} |", flush=True)


if __name__ == "__main__":
    main()
