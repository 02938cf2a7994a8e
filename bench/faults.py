"""Fault drills: what clients and members see when part of the cluster fails.

    python -m bench.faults [--clients 60 --rooms 6 --rate 20 --only kill-node,drain,...]

Each drill starts its own 3-server JetStream cluster (R3) and three edge nodes (processes),
connects ``--clients`` distinct users (the real client library, each in one room, spread over
the nodes, each knowing every node's URL), an observer on the third node that is in every room
(it sees every presence event), and one publisher per room publishing ``--rate`` messages/s.
Then one fault:

* ``kill-node``: ``kill -9`` of node 1 (its clients resume on the others);
* ``drain``: SIGTERM of node 1 (a paced drain; its clients resume on the others);
* ``kill-leader``: ``kill -9`` of the NATS server leading the ``ROOMS`` stream, restarted 5 s later;
* ``nats-outage``: all three NATS servers stopped (``kill -9``) for 5 s, then restarted.

Measured per drill: publishes acknowledged, acknowledged messages lost and delivered twice
(over every client, from its first message on), the affected clients' resume time (fault to
their session restored elsewhere: p50 / max), the longest publish (call to ack, which is the
recovery time of the message path), and presence events the observer saw after the fault —
every one of them false, since every user stays connected somewhere throughout.
Talks to 127.0.0.1 only, stops every process it started by PID, bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from dataclasses import dataclass, field

import websockets

from bench.harness import machine, percentile
from roomcast.auth import mint_token
from roomcast.client import State, connect
from roomcast.client.presence import RoomPresence
from roomcast.dev import NodeProcess
from roomcast.natsserver import NatsCluster, free_port

KEY = "faults-secret-" + "f" * 32
DRILLS = ("kill-node", "drain", "kill-leader", "nats-outage")
OUTAGE = 5.0  # seconds a NATS fault lasts before the servers are restarted


@dataclass
class DrillResult:
    drill: str
    acked: int = 0
    lost: int = 0
    duplicates: int = 0
    affected: int = 0
    resumed: int = 0
    resume_p50: float = float("nan")
    resume_max: float = float("nan")
    publish_max: float = 0.0
    false_presence: int = 0
    notes: list[str] = field(default_factory=list)


class Observer:
    """A raw connection in every room, on a node no drill touches: records presence frames."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, str]] = []

    async def run(self, url: str, tok: str, rooms: list[str], ready: asyncio.Event) -> None:
        async with websockets.connect(f"{url}?token={tok}", max_size=None) as ws:
            await ws.recv()  # welcome
            for i, r in enumerate(rooms):
                await ws.send(json.dumps({"type": "join", "room": r, "rid": i}))
            joined = 0
            views: dict[str, RoomPresence] = {}
            async for raw in ws:
                f = json.loads(raw)
                if f["type"] == "joined":
                    joined += 1
                    if "presence" in f:
                        views[f["room"]] = RoomPresence.of(f["presence"])
                    if joined == len(rooms):
                        ready.set()
                elif f["type"].startswith("presence_") and f["room"] in views:
                    came, went = views[f["room"]].apply(f)
                    now = time.monotonic()
                    self.events += [(now, "join", u) for u in came]
                    self.events += [(now, "leave", u) for u in went]


async def drill(name: str, *, clients: int, rooms: int, rate: float) -> DrillResult:
    res = DrillResult(name)
    env = {"ROOMCAST_LOG_LEVEL": "error", "ROOMCAST_DRAIN_WINDOW": "2",
           "ROOMCAST_RATE_LIMIT": "10000", "ROOMCAST_RATE_BURST": "10000"}
    room_names = [f"drill.{i}" for i in range(rooms)]
    with NatsCluster(3) as nats_cluster:
        nodes = [NodeProcess(f"fault-{i + 1}", "127.0.0.1", free_port(), nats_cluster.urls, KEY,
                             3, env) for i in range(3)]
        conns: list = []
        tasks: list[asyncio.Task] = []
        try:
            for n in nodes:
                await asyncio.to_thread(n.wait_ready)
            urls = [n.url for n in nodes]
            observer = Observer()
            ready = asyncio.Event()
            tasks.append(asyncio.create_task(observer.run(
                nodes[2].url, mint_token(KEY, "observer", ttl=3600), room_names, ready)))
            await asyncio.wait_for(ready.wait(), 20)
            got: list[list[int]] = []
            restored: list[list[float]] = []
            for i in range(clients):
                home = i % 3
                order = urls[home:] + urls[:home]
                times: list[float] = []
                restored.append(times)

                def on_state(state, info, times=times) -> None:
                    if state is State.CONNECTED:
                        times.append(time.monotonic())

                c = connect(order, mint_token(KEY, f"user-{i}", ttl=3600), shuffle_urls=False,
                            backoff_base=0.1, backoff_cap=2.0, on_state=on_state)
                await c.start()
                await c.join(room_names[i % rooms])
                conns.append(c)
                mine: list[int] = []
                got.append(mine)

                async def reader(c=c, mine=mine) -> None:
                    async for m in c:
                        mine.append(m.seq)

                tasks.append(asyncio.create_task(reader()))
            acked: dict[str, list[int]] = {r: [] for r in room_names}
            latencies: list[float] = []
            stop = asyncio.Event()
            publishers = []
            for k, r in enumerate(room_names):
                # Publishers live on node 2 (node 3 as fallback): faults of node 1 spare them.
                pub = connect([urls[1], urls[2]], mint_token(KEY, f"publisher-{k}", ttl=3600),
                              shuffle_urls=False, backoff_base=0.1, backoff_cap=2.0)
                await pub.start()
                publishers.append(pub)

                async def publish(pub=pub, r=r) -> None:
                    while not stop.is_set():
                        t0 = time.monotonic()
                        acked[r].append(await pub.publish(r, {"t": time.time()}))
                        latencies.append(time.monotonic() - t0)
                        await asyncio.sleep(1.0 / rate)

                tasks.append(asyncio.create_task(publish()))
            await asyncio.sleep(2.0)
            before = len(observer.events)
            affected = [i for i, c in enumerate(conns) if c.node == "fault-1"]
            t_fault = time.monotonic()
            await _fault(name, nodes, nats_cluster)
            if name in ("kill-node", "drain"):
                res.affected = len(affected)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not all(  # noqa: ASYNC110 - polling clients
                        conns[i].connected and conns[i].node != "fault-1"
                        and restored[i] and restored[i][-1] > t_fault for i in affected):
                    await asyncio.sleep(0.05)
                waits = sorted(restored[i][-1] - t_fault for i in affected
                               if restored[i] and restored[i][-1] > t_fault)
                res.resumed = len(waits)
                res.resume_p50, res.resume_max = percentile(waits, 0.5), percentile(waits, 1.0)
            # Long enough for a crashed node's presence timeout (5 s + 1 s) to pass.
            await asyncio.sleep(8.0)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks[-rooms:]), 60)
            await asyncio.sleep(2.0)  # the last acked messages reach every client
            res.acked = sum(len(v) for v in acked.values())
            res.publish_max = max(latencies, default=0.0)
            for i, mine in enumerate(got):
                want = acked[room_names[i % rooms]]
                start = want.index(mine[0]) if mine and mine[0] in want else 0
                res.lost += len(set(want[start:]) - set(mine))
                res.duplicates += len(mine) - len(set(mine))
            res.false_presence = len(observer.events) - before
            if res.false_presence:
                res.notes.append(f"events: {observer.events[before:before + 6]}")
            for c in conns + publishers:
                await c.close()
        finally:
            for t in tasks:
                t.cancel()
            for n in nodes:
                n.stop()
    return res


async def _fault(name: str, nodes: list[NodeProcess], cluster: NatsCluster) -> None:
    if name == "kill-node":
        nodes[0].proc.send_signal(signal.SIGKILL)
    elif name == "drain":
        nodes[0].proc.send_signal(signal.SIGTERM)
    elif name == "kill-leader":
        import nats

        nc = await nats.connect(cluster.urls)
        try:
            leader = (await nc.jetstream().stream_info("ROOMS")).cluster.leader
        finally:
            await nc.close()
        victim = next(s for s in cluster.servers if s.name == leader)
        victim.kill()
        await asyncio.sleep(OUTAGE)
        victim.start()
        await asyncio.to_thread(victim.wait_ready)
    elif name == "nats-outage":
        for s in cluster.servers:
            s.kill()
        await asyncio.sleep(OUTAGE)
        for s in cluster.servers:
            s.start()
        for s in cluster.servers:
            await asyncio.to_thread(s.wait_ready)
    else:
        raise ValueError(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=60)
    ap.add_argument("--rooms", type=int, default=6)
    ap.add_argument("--rate", type=float, default=20.0, help="messages/s per room")
    ap.add_argument("--only", default=",".join(DRILLS), help="comma-separated drills")
    args = ap.parse_args()
    import uvloop

    print(f"# faults: {args.clients} clients (distinct users), {args.rooms} rooms, "
          f"{args.rate:g} msg/s per room, 3 nodes, 3 NATS servers (R3); {machine()}")
    print("| drill | acked | lost | duplicated | clients to resume | resumed | resume p50 / max "
          "| longest publish | false presence events |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.only.split(","):
        r = uvloop.run(drill(name, clients=args.clients, rooms=args.rooms, rate=args.rate))
        resume = (f"{r.resume_p50:.2f} / {r.resume_max:.2f} s" if r.affected else "—")
        print(f"| {r.drill} | {r.acked} | {r.lost} | {r.duplicates} | {r.affected or '—'} | "
              f"{r.resumed if r.affected else '—'} | {resume} | {r.publish_max:.2f} s | "
              f"{r.false_presence} |", flush=True)
        for note in r.notes:
            print(f"  {r.drill}: {note}")


if __name__ == "__main__":
    main()
