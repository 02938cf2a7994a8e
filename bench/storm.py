"""Reconnect storm: N clients lose their node at once (kill -9) and resume on the others.

    python -m bench.storm [--clients 2000 --rooms 20 --rate 10]

Starts a 3-server JetStream cluster and 3 edge nodes on 127.0.0.1. All clients (the real
``roomcast.client`` library, in this process) connect to node 1, half listing node 2 next and
half node 3. One publisher per room (on node 2) publishes ``--rate`` messages per second. Node 1
is killed with SIGKILL; the benchmark reports the time until every client has resumed, the time
until every client has received a message published after the kill ("delivering again"), and,
after the publishers stop, messages lost and duplicated (both must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time

from bench.harness import Cluster, add_user_mode, machine, percentile
from roomcast.client import State, connect


async def run(args) -> dict:
    env = {"ROOMCAST_LOG_LEVEL": "error", **dict(e.split("=", 1) for e in args.env)}
    with Cluster(nodes=3, nats=3, env=env) as cluster:
        n1, n2, n3 = cluster.node_procs
        urls = [[n1.url, n2.url, n3.url], [n1.url, n3.url, n2.url]]
        toks = ([cluster.token("storm")] * args.clients if args.same_user else
                [cluster.token(f"storm-{i}") for i in range(args.clients)])
        clients, received = [], []
        connected_at: list[list[float]] = [[] for _ in range(args.clients)]
        t0 = time.monotonic()
        for i in range(args.clients):
            def on_state(state, info, i=i):
                if state is State.CONNECTED:
                    connected_at[i].append(time.monotonic())

            c = connect(urls[i % 2], toks[i], shuffle_urls=False, max_buffered_messages=100_000,
                        on_state=on_state)
            await c.start()
            clients.append(c)
        setup = time.monotonic() - t0
        rooms = [f"storm.{r}" for r in range(args.rooms)]
        await asyncio.gather(*(c.join(rooms[i % args.rooms]) for i, c in enumerate(clients)))
        for _ in clients:
            received.append([])

        async def drain(i: int, c) -> None:
            async for m in c:
                received[i].append((m.seq, time.monotonic()))

        readers = [asyncio.create_task(drain(i, c)) for i, c in enumerate(clients)]
        acked: dict[str, list[int]] = {r: [] for r in rooms}
        stop = asyncio.Event()
        pubs = [connect(n2.url, cluster.token(f"publisher-{r}")) for r in rooms]
        for p in pubs:
            await p.start()

        async def publisher(room: str, p) -> None:
            period = 1.0 / args.rate
            while not stop.is_set():
                acked[room].append(await p.publish(room, {"t": time.time()}))
                await asyncio.sleep(period)

        ptasks = [asyncio.create_task(publisher(r, p)) for r, p in zip(rooms, pubs, strict=True)]
        await asyncio.sleep(2.0)
        sessions_before = [c.sessions for c in clients]
        kill_at = time.monotonic()
        n1.proc.send_signal(signal.SIGKILL)
        seq_at_kill = {r: (acked[r][-1] if acked[r] else 0) for r in rooms}
        resumed_at: list[float | None] = [None] * len(clients)
        delivering_at: list[float | None] = [None] * len(clients)
        deadline = kill_at + args.timeout
        while time.monotonic() < deadline:
            for i, c in enumerate(clients):
                if resumed_at[i] is None and c.sessions > sessions_before[i]:
                    resumed_at[i] = connected_at[i][-1]
                if delivering_at[i] is None and received[i]:
                    room = rooms[i % args.rooms]
                    for seq, t in reversed(received[i]):
                        if seq > seq_at_kill[room] and t >= kill_at:
                            delivering_at[i] = t
                            break
            if all(resumed_at) and all(delivering_at):
                break
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.gather(*ptasks)
        await asyncio.sleep(3.0)
        lost = dups = 0
        for i in range(len(clients)):
            seqs = [s for s, _ in received[i]]
            want = set(acked[rooms[i % args.rooms]])
            got = set(seqs)
            dups += len(seqs) - len(got)
            lost += len(want - got)
        for t in readers:
            t.cancel()
        for c in clients + pubs:
            await c.close()
        res = sorted(t - kill_at for t in resumed_at if t is not None)
        dlv = sorted(t - kill_at for t in delivering_at if t is not None)
        return {"clients": args.clients, "setup_s": setup,
                "resumed": len(res), "resume_p50": percentile(res, .5),
                "resume_max": res[-1] if res else float("nan"),
                "delivering": len(dlv), "deliver_p50": percentile(dlv, .5),
                "deliver_max": dlv[-1] if dlv else float("nan"),
                "published": sum(len(v) for v in acked.values()), "lost": lost, "dups": dups}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=2000)
    ap.add_argument("--rooms", type=int, default=20)
    ap.add_argument("--rate", type=float, default=10.0, help="messages/s per room")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--env", nargs="*", default=[], help="NAME=VALUE settings for the nodes")
    add_user_mode(ap)
    args = ap.parse_args()
    import uvloop

    r = uvloop.run(run(args))
    print(f"# reconnect storm: {r['clients']} clients on the killed node, {args.rooms} rooms, "
          f"{args.rate:g} msg/s per room {args.env or ''}; {machine()}")
    print("| clients | resumed | resume p50 s | all resumed s | delivering again | "
          "delivering p50 s | all delivering s | published | lost | duplicates |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {r['clients']} | {r['resumed']} | {r['resume_p50']:.2f} | {r['resume_max']:.2f} | "
          f"{r['delivering']} | {r['deliver_p50']:.2f} | {r['deliver_max']:.2f} | "
          f"{r['published']} | {r['lost']} | {r['dups']} |")


if __name__ == "__main__":
    main()
