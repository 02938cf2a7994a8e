"""Idle memory per connection: N authenticated connections joined to one room, on one node.

    python -m bench.idle [--connections 2000 5000 10000] [--hold 2] [--env ROOMCAST_PING_INTERVAL=1]

Starts one NATS server and one edge node, measures the node's RSS, opens N connections
(each authenticated with a JWT and joined to one room), waits ``--hold`` seconds for RSS to
settle, and prints (RSS after - RSS before) / N, and the node's event-loop lag while it held
the idle connections (with a short ping interval, that is the keepalive sweep's cost).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench.harness import Cluster, add_user_mode, lag_summary, machine, rss_bytes
from bench.wsclient import connect


async def run(n: int, hold: float, env: dict | None = None, same_user: bool = False) -> dict:
    with Cluster(nodes=1, nats=1, env=env or {}) as cluster:
        node = cluster.node_procs[0]
        await asyncio.sleep(1.0)
        before = rss_bytes(node.proc.pid)
        joined = 0

        def on_frame(raw: bytes) -> None:
            nonlocal joined
            if raw.startswith(b'{"type":"joined"'):
                joined += 1

        protos = []
        paths = cluster.paths("idle", n, same_user)
        t0 = time.monotonic()
        for i in range(n):
            p = await connect("127.0.0.1", node.port, paths[i], on_frame)
            p.send_text(b'{"type":"join","room":"idle.%d"}' % (i % 10))
            protos.append(p)
        while joined < n and time.monotonic() - t0 < 120:  # noqa: ASYNC110 - counter from callbacks
            await asyncio.sleep(0.1)
        lag0 = cluster.loop_lag()
        await asyncio.sleep(hold)
        after = rss_bytes(node.proc.pid)
        lag = lag_summary(lag0, cluster.loop_lag())
        for p in protos:
            p.transport.close()
        await asyncio.sleep(0.5)
        return {"n": n, "joined": joined, "before": before, "after": after,
                "per_conn": (after - before) / n, "lag": lag}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, nargs="+", default=[2000, 5000, 10000])
    ap.add_argument("--hold", type=float, default=2.0,
                    help="seconds the connections stay idle before RSS is read")
    ap.add_argument("--env", nargs="*", default=[], help="NAME=VALUE settings for the node")
    add_user_mode(ap)
    args = ap.parse_args()
    env = dict(e.split("=", 1) for e in args.env)
    import uvloop

    print(f"# idle connections on one node {env or ''}; {machine()}")
    print("| connections | joined | node RSS before MiB | after MiB | KiB per connection | "
          "loop lag samples / over 5 / 25 / 100 ms |")
    print("|---|---|---|---|---|---|")
    for n in args.connections:
        r = uvloop.run(run(n, args.hold, env, args.same_user))
        print(f"| {n} | {r['joined']} | {r['before'] / 2**20:.1f} | {r['after'] / 2**20:.1f} | "
              f"{r['per_conn'] / 1024:.1f} | {r['lag']} |", flush=True)


if __name__ == "__main__":
    main()
