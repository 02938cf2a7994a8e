"""Cluster-size model: what presence costs each node as the node count grows.

    python -m bench.clustersize [--nodes 2 4 6 8] [--per-node 250] [--churn 100 --duration 10]
                                [--presence-scope cluster|rooms] [--spread S]

For each node count K: K edge nodes on a 3-server JetStream cluster, plus one **observer**
node that holds no client (what a node pays for the rest of the cluster). ``--per-node``
distinct users per edge node each join one room (10 members a room, members spread over the
nodes). Then, for ``--duration`` seconds, ``--churn`` joins+leaves per second in total (a
member leaves its room and joins it again). Measured:

* the observer's RSS growth from before the clients connected to after: the presence map of
  K × per-node connections held by a node that serves none of them, per connection;
* presence delta messages and bytes per second that every node receives (a subscriber on
  ``roomcast.presence.delta`` sees what each node sees), and heartbeats;
* CPU of the observer and of an edge node during the churn, per second;
* from the nodes' /metrics: the presence entries the observer and an edge node hold, and the
  presence changes from other nodes each received per second during the churn.

``--spread S`` puts each room's 10 members on S consecutive nodes (default: all K, the worst
case for ``--presence-scope rooms``, where a node follows every room it has a member in).

docs/performance.md extrapolates these to 100 nodes and 1,000,000 connections.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
import urllib.request

import nats

from bench.harness import Cluster, cpu_seconds, machine, rss_bytes
from bench.wsclient import connect
from roomcast.backplane import subjects


class Member:
    def __init__(self) -> None:
        self.waiter: asyncio.Future | None = None

    def on_frame(self, raw: bytes) -> None:
        if (raw.startswith(b'{"type":"joined"') or raw.startswith(b'{"type":"left"')) and \
                self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


async def request(m: Member, p, frame: bytes) -> None:
    m.waiter = asyncio.get_running_loop().create_future()
    p.send_text(frame)
    await asyncio.wait_for(m.waiter, 30)


def presence_metrics(node) -> tuple[float, float]:
    """(entries held, changes from other nodes received so far) from a node's /metrics."""
    with urllib.request.urlopen(f"{node.internal}/metrics", timeout=5) as r:
        text = r.read().decode()

    def value(name: str) -> float:
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    return value("roomcast_presence_entries"), value("roomcast_presence_remote_changes_total")


async def run(k: int, per_node: int, churn: float, duration: float, scope: str = "cluster",
              spread: int | None = None) -> dict:
    spread = min(spread or k, k)
    with Cluster(nodes=k + 1, nats=3, env={"ROOMCAST_PRESENCE_SCOPE": scope}) as cluster:
        observer, edges = cluster.node_procs[0], cluster.node_procs[1:]
        nc = await nats.connect(cluster.nats_cluster.urls)
        counts = {"delta": [0, 0], "hb": [0, 0]}

        def counter(kind: str):
            async def on(msg) -> None:
                counts[kind][0] += 1
                counts[kind][1] += len(msg.data) + len(msg.subject)
            return on

        await nc.subscribe(subjects.PRESENCE_DELTA + ".>", cb=counter("delta"))
        await nc.subscribe(subjects.PRESENCE_DELTA, cb=counter("delta"))
        await nc.subscribe(subjects.PRESENCE_STATE_PREFIX + ">", cb=counter("delta"))
        await nc.subscribe(subjects.PRESENCE_HEARTBEAT + ".>", cb=counter("hb"))
        await nc.subscribe(subjects.PRESENCE_HEARTBEAT, cb=counter("hb"))
        await asyncio.sleep(2.0)
        rss0 = rss_bytes(observer.proc.pid)
        n = k * per_node
        paths = cluster.paths("member", n)
        members = []
        for i in range(n):
            m = Member()
            # Room i // 10; its members on `spread` consecutive nodes from the room's own.
            node = edges[(i // 10 + (i % 10) % spread) % k]
            p = await connect("127.0.0.1", node.port, paths[i], m.on_frame)
            members.append((m, p, b"size.%d" % (i // 10)))
        await asyncio.gather(*(request(m, p, b'{"type":"join","room":"%s"}' % room)
                               for m, p, room in members))
        await asyncio.sleep(3.0)  # every node has applied every delta
        rss1 = rss_bytes(observer.proc.pid)
        for c in counts.values():
            c[0] = c[1] = 0
        cpu_obs0, cpu_edge0 = cpu_seconds(observer.proc.pid), cpu_seconds(edges[0].proc.pid)
        (obs_entries, obs_heard0), (edge_entries, edge_heard0) = (
            presence_metrics(observer), presence_metrics(edges[0]))
        t0 = time.monotonic()
        ops, i = 0, 0
        while churn > 0 and time.monotonic() - t0 < duration:
            m, p, room = members[i % n]
            i += 1
            await request(m, p, b'{"type":"leave","room":"%s"}' % room)
            await request(m, p, b'{"type":"join","room":"%s"}' % room)
            ops += 2
            ahead = ops / churn - (time.monotonic() - t0)
            if ahead > 0:
                await asyncio.sleep(ahead)
        if churn <= 0:  # the idle cost: heartbeats, sweeps, probes
            await asyncio.sleep(duration)
        elapsed = time.monotonic() - t0
        obs_heard, edge_heard = presence_metrics(observer)[1], presence_metrics(edges[0])[1]
        await asyncio.sleep(0.5)
        result = {
            "obs_entries": obs_entries, "edge_entries": edge_entries,
            "obs_heard_s": (obs_heard - obs_heard0) / elapsed,
            "edge_heard_s": (edge_heard - edge_heard0) / elapsed,
            "k": k, "connections": n,
            "obs_kib_per_conn": (rss1 - rss0) / 1024 / n,
            "ops_s": ops / elapsed,
            "delta_msgs_s": counts["delta"][0] / elapsed,
            "delta_kib_s": counts["delta"][1] / 1024 / elapsed,
            "hb_msgs_s": counts["hb"][0] / elapsed,
            "obs_cpu_pct": (cpu_seconds(observer.proc.pid) - cpu_obs0) / elapsed * 100,
            "edge_cpu_pct": (cpu_seconds(edges[0].proc.pid) - cpu_edge0) / elapsed * 100,
        }
        for _, p, _ in members:
            p.transport.close()
        await nc.close()
        return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[2, 4, 6])
    ap.add_argument("--per-node", type=int, default=250)
    ap.add_argument("--churn", type=float, default=100.0, help="joins+leaves per second, total")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--presence-scope", choices=["cluster", "rooms"], default="cluster")
    ap.add_argument("--spread", type=int, default=None,
                    help="nodes each room's members are on (default: all)")
    args = ap.parse_args()
    import uvloop

    print(f"# cluster size: K edge nodes + 1 observer, 3 NATS servers, {args.per_node} distinct "
          f"users per edge node, {args.churn:g} joins+leaves/s, --presence-scope "
          f"{args.presence_scope}, rooms on {args.spread or 'all'} nodes; {machine()}")
    print("| K nodes | connections | observer KiB per cluster connection | joins+leaves/s "
          "| presence msgs/s (all) | KiB/s | heartbeats/s | entries held: observer / edge "
          "| changes received/s: observer / edge | observer CPU % | edge node CPU % |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for k in args.nodes:
        r = uvloop.run(run(k, args.per_node, args.churn, args.duration, args.presence_scope,
                           args.spread))
        print(f"| {r['k']} | {r['connections']} | {r['obs_kib_per_conn']:.2f} | "
              f"{r['ops_s']:.0f} | {r['delta_msgs_s']:.0f} | {r['delta_kib_s']:.1f} | "
              f"{r['hb_msgs_s']:.1f} | {r['obs_entries']:.0f} / {r['edge_entries']:.0f} | "
              f"{r['obs_heard_s']:.0f} / {r['edge_heard_s']:.0f} | "
              f"{r['obs_cpu_pct']:.1f} | {r['edge_cpu_pct']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
