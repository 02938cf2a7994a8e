"""Scale-out / scale-in drill on one machine (what the autoscaler does in Kubernetes).

    python -m bench.drill [--clients 300 --rooms 10 --rate 20]

Two edge nodes and ``--clients`` clients (the real client library) receive a steady stream;
a third node is added and new clients land on it; then one of the first two nodes gets SIGTERM
(as a scaled-in pod does). Its clients must resume elsewhere with nothing lost and nothing
doubled, the node must exit 0, and its /metrics must show the drain while it happens.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
import urllib.request
from dataclasses import dataclass, field

from bench.harness import machine
from roomcast.auth import mint_token
from roomcast.client import connect
from roomcast.dev import NodeProcess
from roomcast.natsserver import NatsCluster, free_port

KEY = "drill-secret-" + "d" * 32


@dataclass
class DrillResult:
    clients: int = 0
    on_new_node: int = 0
    drained_clients: int = 0
    resumed_elsewhere: int = 0
    exit_code: int | None = None
    drain_seconds: float = 0.0
    published: int = 0
    lost: int = 0
    duplicates: int = 0
    metrics_draining_seen: bool = False
    metrics_1012_closes: float = 0.0
    notes: list[str] = field(default_factory=list)


def _scrape(node: NodeProcess) -> str:
    try:
        with urllib.request.urlopen(node.internal + "/metrics", timeout=1) as r:
            return r.read().decode()
    except OSError:
        return ""


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


async def run_drill(*, clients: int = 300, rooms: int = 10, rate: float = 20.0,
                    drain_window: float = 2.0) -> DrillResult:
    res = DrillResult()
    env = {"ROOMCAST_LOG_LEVEL": "warning", "ROOMCAST_DRAIN_WINDOW": str(drain_window),
           "ROOMCAST_DRAIN_TIMEOUT": "5", "ROOMCAST_RATE_LIMIT": "10000",
           "ROOMCAST_RATE_BURST": "10000"}
    with NatsCluster(3) as nats_cluster:
        def start(name: str) -> NodeProcess:
            return NodeProcess(name, "127.0.0.1", free_port(), nats_cluster.urls, KEY, 3, env)

        n1, n2 = start("drill-1"), start("drill-2")
        nodes = [n1, n2]
        try:
            for n in nodes:
                await asyncio.to_thread(n.wait_ready)
            tok = mint_token(KEY, "drill", ttl=3600)
            room_names = [f"drill.{i}" for i in range(rooms)]
            conns, got = [], []

            async def add_client(urls: list[str], i: int) -> None:
                c = connect(urls, tok, shuffle_urls=False, backoff_base=0.1, backoff_cap=2.0)
                await c.start()
                await c.join(room_names[i % rooms])
                mine: list[int] = []
                got.append(mine)
                conns.append(c)

                async def reader() -> None:
                    async for m in c:
                        mine.append(m.seq)

                asyncio.get_running_loop().create_task(reader())

            half = clients * 2 // 3
            for i in range(half):
                first, second = (n1, n2) if i % 2 == 0 else (n2, n1)
                await add_client([first.url, second.url], i)
            acked: dict[str, list[int]] = {r: [] for r in room_names}
            stop = asyncio.Event()
            pub = connect(n2.url, tok)
            await pub.start()

            async def publisher() -> None:
                while not stop.is_set():
                    for r in room_names:
                        acked[r].append(await pub.publish(r, {"t": time.time()}))
                    await asyncio.sleep(1.0 / rate)

            ptask = asyncio.create_task(publisher())
            await asyncio.sleep(1.0)
            # Scale out: a third node; new clients land on it.
            n3 = start("drill-3")
            nodes.append(n3)
            await asyncio.to_thread(n3.wait_ready)
            for i in range(half, clients):
                await add_client([n3.url, n2.url], i)
            res.on_new_node = sum(1 for c in conns if c.node == "drill-3")
            await asyncio.sleep(1.0)
            # Scale in: SIGTERM one of the original nodes, watch its metrics while it drains.
            drained = [i for i, c in enumerate(conns) if c.node == "drill-1"]
            res.drained_clients = len(drained)
            t0 = time.monotonic()
            n1.proc.send_signal(signal.SIGTERM)
            while n1.proc.poll() is None and time.monotonic() - t0 < 60:
                text = await asyncio.to_thread(_scrape, n1)
                if _metric(text, "roomcast_draining") == 1.0:
                    res.metrics_draining_seen = True
                closes = _metric(text, 'roomcast_closes_total{code="1012"}')
                if closes is not None:
                    res.metrics_1012_closes = max(res.metrics_1012_closes, closes)
                await asyncio.sleep(0.1)
            res.exit_code = n1.proc.wait(30)
            res.drain_seconds = time.monotonic() - t0
            await asyncio.sleep(2.0)
            stop.set()
            await ptask
            await asyncio.sleep(2.0)
            res.clients = len(conns)
            res.resumed_elsewhere = sum(1 for i in drained if conns[i].node in ("drill-2",
                                                                                "drill-3"))
            res.published = sum(len(v) for v in acked.values())
            for i, mine in enumerate(got):
                want = acked[room_names[i % rooms]]
                start_at = want.index(mine[0]) if mine and mine[0] in want else 0
                expected = want[start_at:]
                res.duplicates += len(mine) - len(set(mine))
                res.lost += len(set(expected) - set(mine))
            for c in conns + [pub]:
                await c.close()
        finally:
            for n in nodes:
                n.stop()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=300)
    ap.add_argument("--rooms", type=int, default=10)
    ap.add_argument("--rate", type=float, default=20.0, help="messages/s per room")
    args = ap.parse_args()
    import uvloop

    r = uvloop.run(run_drill(clients=args.clients, rooms=args.rooms, rate=args.rate))
    print(f"# drill: {args.clients} clients, {args.rooms} rooms, {args.rate:g} msg/s per room; "
          f"{machine()}")
    for k, v in vars(r).items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
