"""Message latency in a big room while users join and leave it.

    python -m bench.bigroom [--members 1000 --rate 10 --churners 1000 --duration 20]

Two edge nodes on a 3-server cluster. ``--members`` distinct users join one room (half per
node) and stay; one more publishes ``--rate`` messages a second into it (so members x rate
deliveries a second), each carrying its send time. Meanwhile ``--churners`` other distinct
users connect, join the same room, close and come back (``--churn-concurrency`` at a time) for
``--duration`` seconds: every arrival and departure is a presence change of the room. Printed:
deliveries/s, the latency from publish to each delivery (p50/p99/max) during the churn, the
churn's joins/s, and the presence frames a member received per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from bench.harness import Cluster, machine, percentile
from bench.wsclient import connect

ROOM = "big.room"


async def run(args) -> dict:
    env = {"ROOMCAST_MAX_CONNECTIONS": str((args.members + args.churners) * 2)}
    with Cluster(nodes=2, nats=3, env=env) as cluster:
        ports = [n.port for n in cluster.node_procs]
        latencies: list[float] = []
        presence_frames = 0
        joined = 0
        measuring = False
        join = b'{"type":"join","room":"%s"}' % ROOM.encode()

        def on_member(raw: bytes) -> None:
            nonlocal joined, presence_frames
            if raw.startswith(b'{"type":"message"'):
                if measuring:
                    sent = json.loads(raw)["data"]["t"]
                    latencies.append(time.monotonic() - sent)
            elif raw.startswith(b'{"type":"joined"'):
                joined += 1
            elif raw.startswith(b'{"type":"presence_'):
                presence_frames += 1

        members = []
        paths = cluster.paths("m", args.members)
        for i, path in enumerate(paths):
            p = await connect("127.0.0.1", ports[i % 2], path, on_member)
            p.send_text(join)
            members.append(p)
        while joined < args.members:  # noqa: ASYNC110 - counter from callbacks
            await asyncio.sleep(0.05)
        pub = await connect("127.0.0.1", ports[0], cluster.paths("pub", 1)[0], lambda raw: None)

        churn_paths = cluster.paths("c", args.churners)
        churn_joins = 0
        stop = asyncio.Event()

        async def churner(k: int) -> None:
            nonlocal churn_joins
            i = k
            while not stop.is_set():
                done = asyncio.get_running_loop().create_future()

                def on_frame(raw: bytes, done=done) -> None:
                    if raw.startswith(b'{"type":"joined"') and not done.done():
                        done.set_result(None)

                p = await connect("127.0.0.1", ports[i % 2], churn_paths[i % args.churners],
                                  on_frame)
                p.send_text(join)
                await done
                churn_joins += 1
                p.transport.close()
                i += args.churn_concurrency

        measuring = True
        pframes0 = presence_frames
        t0 = time.monotonic()
        tasks = [asyncio.get_running_loop().create_task(churner(k))
                 for k in range(args.churn_concurrency)]
        sent = 0
        while time.monotonic() - t0 < args.duration:
            pub.send_text(b'{"type":"publish","room":"%s","data":{"t":%r}}'
                          % (ROOM.encode(), time.monotonic()))
            sent += 1
            await asyncio.sleep(max(0.0, t0 + sent / args.rate - time.monotonic()))
        stop.set()
        await asyncio.sleep(1.0)  # the last messages arrive
        measuring = False
        elapsed = time.monotonic() - t0
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for p in (*members, pub):
            p.transport.close()
        lat = sorted(latencies)
        return {"sent": sent, "deliveries": len(lat), "per_s": len(lat) / args.duration,
                "p50": percentile(lat, 0.5) * 1000, "p99": percentile(lat, 0.99) * 1000,
                "max": lat[-1] * 1000 if lat else float("nan"),
                "expected": sent * args.members, "churn_per_s": churn_joins / args.duration,
                "presence_per_member_s": (presence_frames - pframes0) / args.members / elapsed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=10.0, help="messages per second")
    ap.add_argument("--churners", type=int, default=1000)
    ap.add_argument("--churn-concurrency", type=int, default=20)
    ap.add_argument("--duration", type=float, default=20.0)
    args = ap.parse_args()
    out = asyncio.run(run(args))
    print(f"# {machine()}; {args.members} members, {args.rate:g} msg/s, {args.churners} "
          f"churning users ({args.churn_concurrency} at a time), {args.duration:g} s")
    print("| deliveries/s | delivered / expected | p50 ms | p99 ms | max ms | churn joins/s "
          "| presence frames per member per s |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {out['per_s']:,.0f} | {out['deliveries']:,} / {out['expected']:,} | "
          f"{out['p50']:.1f} | {out['p99']:.1f} | {out['max']:.1f} | {out['churn_per_s']:,.0f} | "
          f"{out['presence_per_member_s']:.2f} |")


if __name__ == "__main__":
    main()
