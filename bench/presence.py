"""Presence benchmark: churn and admin query latency.

    python -m bench.presence [--churn-clients 200 --duration 10 --members 1000]

1. Churn: ``--churn-clients`` connections over 2 nodes join and leave rooms (20 shared rooms)
   as fast as the nodes answer, for ``--duration`` seconds; prints completed joins+leaves per
   second and checks that presence settles to empty afterwards.
2. Admin latency: ``--members`` connections (half per node) join one room; then 300
   ``roomcast.admin.presence.<room>`` requests are timed (answer includes all members).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import nats

from bench.harness import Cluster, add_user_mode, machine, percentile
from bench.wsclient import connect


class Churner:
    def __init__(self) -> None:
        self.waiter: asyncio.Future | None = None
        self.done = 0

    def on_frame(self, raw: bytes) -> None:
        if (raw.startswith(b'{"type":"joined"') or raw.startswith(b'{"type":"left"')) and \
                self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


async def churn(cluster: Cluster, clients: int, duration: float, same_user: bool = False) -> dict:
    ports = [n.port for n in cluster.node_procs]
    paths = cluster.paths("churn", clients, same_user)
    loop = asyncio.get_running_loop()
    workers = []
    for i in range(clients):
        ch = Churner()
        p = await connect("127.0.0.1", ports[i % len(ports)], paths[i], ch.on_frame)
        workers.append((ch, p))
    stop_at = time.monotonic() + duration

    async def run(i: int, ch: Churner, p) -> None:
        room = b"churn.%d" % (i % 20)
        while time.monotonic() < stop_at:
            for kind in (b"join", b"leave"):
                ch.waiter = loop.create_future()
                p.send_text(b'{"type":"%s","room":"%s"}' % (kind, room))
                await asyncio.wait_for(ch.waiter, 10)
                ch.done += 1

    t0 = time.monotonic()
    await asyncio.gather(*(run(i, ch, p) for i, (ch, p) in enumerate(workers)))
    elapsed = time.monotonic() - t0
    ops = sum(ch.done for ch, _ in workers)
    nc = await nats.connect(cluster.nats_cluster.urls)
    settled = None
    for _ in range(50):
        rooms = json.loads((await nc.request("roomcast.admin.rooms", b"", timeout=5)).data)
        if not any(r.startswith("churn.") for r in rooms["rooms"]):
            settled = True
            break
        await asyncio.sleep(0.1)
    await nc.close()
    for _, p in workers:
        p.transport.close()
    return {"ops_per_s": ops / elapsed, "ops": ops, "settled_empty": bool(settled)}


async def admin_latency(cluster: Cluster, members: int, queries: int = 300) -> dict:
    ports = [n.port for n in cluster.node_procs]
    protos = []
    joined = 0

    def on_frame(raw: bytes) -> None:
        nonlocal joined
        if raw.startswith(b'{"type":"joined"'):
            joined += 1

    for i in range(members):
        p = await connect("127.0.0.1", ports[i % len(ports)],
                          f"/ws?token={cluster.token(f'member{i}')}", on_frame)
        p.send_text(b'{"type":"join","room":"big.room"}')
        protos.append(p)
    while joined < members:  # noqa: ASYNC110 - counter fed by protocol callbacks
        await asyncio.sleep(0.05)
    nc = await nats.connect(cluster.nats_cluster.urls)
    for _ in range(100):  # wait until every node's view has all members
        r = json.loads((await nc.request("roomcast.admin.presence.big.room", b"", timeout=5)).data)
        if r["users"] == members:
            break
        await asyncio.sleep(0.1)
    lat = []
    size = 0
    for _ in range(queries):
        t = time.perf_counter()
        msg = await nc.request("roomcast.admin.presence.big.room", b"", timeout=5)
        lat.append((time.perf_counter() - t) * 1000)
        size = len(msg.data)
        assert json.loads(msg.data)["users"] == members
    rooms_lat = []
    for _ in range(queries):
        t = time.perf_counter()
        await nc.request("roomcast.admin.rooms", b"", timeout=5)
        rooms_lat.append((time.perf_counter() - t) * 1000)
    await nc.close()
    for p in protos:
        p.transport.close()
    lat.sort()
    rooms_lat.sort()
    return {"members": members, "p50": percentile(lat, .5), "p99": percentile(lat, .99),
            "bytes": size, "rooms_p50": percentile(rooms_lat, .5),
            "rooms_p99": percentile(rooms_lat, .99)}


async def run(args) -> None:
    print(f"# presence, 2 nodes, NATS 3 servers; {machine()}")
    with Cluster(nodes=2, nats=3) as cluster:
        c = await churn(cluster, args.churn_clients, args.duration, args.same_user)
        print("| churn clients | joins+leaves/s | total | presence empty afterwards |")
        print("|---|---|---|---|")
        print(f"| {args.churn_clients} | {c['ops_per_s']:,.0f} | {c['ops']} | {c['settled_empty']} |")
        a = await admin_latency(cluster, args.members)
        print()
        print("| room members | presence.<room> p50 ms | p99 ms | reply bytes | rooms p50 ms | rooms p99 ms |")
        print("|---|---|---|---|---|---|")
        print(f"| {a['members']} | {a['p50']:.2f} | {a['p99']:.2f} | {a['bytes']:,} | "
              f"{a['rooms_p50']:.2f} | {a['rooms_p99']:.2f} |")
        await asyncio.sleep(0.3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--churn-clients", type=int, default=200)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--members", type=int, default=1000)
    add_user_mode(ap)
    args = ap.parse_args()
    import uvloop

    uvloop.run(run(args))


if __name__ == "__main__":
    main()
