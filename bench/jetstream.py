"""What a stored message costs NATS: CPU of the JetStream servers per message, and latency.

    python -m bench.jetstream [--rates 100 500 1000 3000] [--replicas 3]

Publishes through :class:`roomcast.backplane.nats.NatsBackplane` (JetStream, RePublish) at fixed
rates for 3 s each, one publisher on server 1 and the live subscriber on server 2, and prints
the servers' CPU per stored message, publish-ack latency and the latency until the re-published
copy arrives on the other server.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench.harness import cpu_seconds, machine, percentile
from roomcast.backplane.nats import NatsBackplane, NatsConfig
from roomcast.natsserver import NatsCluster


async def run(rates: list[int], replicas: int) -> None:
    size = 3 if replicas > 1 else 1
    with NatsCluster(size) as cluster:
        pub = NatsBackplane(NatsConfig(urls=(cluster.urls[0],), replicas=replicas))
        sub = NatsBackplane(NatsConfig(urls=(cluster.urls[-1],), replicas=replicas))
        await pub.start()
        await sub.start()
        arrived: dict[int, float] = {}
        await sub.subscribe("js-bench", lambda m: arrived.__setitem__(m.seq, time.perf_counter()))
        print(f"# JetStream R{replicas} on {size} server(s); {machine()}")
        print("| msgs/s | NATS CPU % | NATS CPU µs per message | ack p50 ms | ack p99 ms | "
              "re-published arrival p50 ms | p99 ms |")
        print("|---|---|---|---|---|---|---|")
        for rate in rates:
            acks: list[float] = []

            async def one(i: int, rate: int = rate, acks: list[float] = acks) -> tuple[int, float]:
                t = time.perf_counter()
                r = await pub.publish("js-bench", b'{"x":1}', f"{rate}-{i}")
                acks.append(time.perf_counter() - t)
                return r.seq, t

            n = rate * 3
            cpu0 = sum(cpu_seconds(s.proc.pid) for s in cluster.servers)
            t0 = time.perf_counter()
            tasks = []
            for i in range(n):
                tasks.append(asyncio.create_task(one(i)))
                await asyncio.sleep(max(0.0, t0 + (i + 1) / rate - time.perf_counter()))
            done = await asyncio.gather(*tasks)
            elapsed = time.perf_counter() - t0
            cpu = sum(cpu_seconds(s.proc.pid) for s in cluster.servers) - cpu0
            await asyncio.sleep(0.5)
            e2e = sorted(arrived[seq] - t for seq, t in done if seq in arrived)
            acks.sort()
            print(f"| {rate} | {cpu / elapsed * 100:.0f} | {cpu / n * 1e6:.0f} | "
                  f"{percentile(acks, .5) * 1e3:.2f} | {percentile(acks, .99) * 1e3:.2f} | "
                  f"{percentile(e2e, .5) * 1e3:.2f} | {percentile(e2e, .99) * 1e3:.2f} |",
                  flush=True)
        await pub.close()
        await sub.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", type=int, nargs="+", default=[100, 500, 1000, 3000])
    ap.add_argument("--replicas", type=int, default=3)
    args = ap.parse_args()
    import uvloop

    uvloop.run(run(args.rates, args.replicas))


if __name__ == "__main__":
    main()
