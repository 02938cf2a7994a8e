"""Backend publishes through the server API (docs/api.md): publishes/s through one node.

    python -m bench.api [--count 20000 --window 64 512] [--transport nats http]

One edge node on a 3-server JetStream cluster (R3). Over NATS, a backend (nats-py, in this
process) sends ``roomcast.api.publish`` requests with ``--window`` of them in flight, each with
its own id, and counts the replies (each one only after JetStream stored the message). Over
HTTP, ``--window`` keep-alive HTTP/1.1 connections to the node's internal port each send
``POST /api/publish`` (with ``X-API-Key``) one after another: as many in flight as connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import tempfile
import time

import h11
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


class HttpConn:
    """One keep-alive HTTP/1.1 connection (h11), one request at a time."""

    def __init__(self, host: str, port: int, key: str) -> None:
        self.host, self.port, self.key = host, port, key

    async def open(self) -> HttpConn:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.conn = h11.Connection(h11.CLIENT)
        return self

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        c = self.conn
        headers = [("Host", self.host), ("Content-Type", "application/json"),
                   ("Content-Length", str(len(body))), ("X-API-Key", self.key)]
        self.writer.write(c.send(h11.Request(method="POST", target=path, headers=headers)))
        self.writer.write(c.send(h11.Data(data=body)) + c.send(h11.EndOfMessage()))
        status, chunks = 0, []
        while True:
            event = c.next_event()
            if event is h11.NEED_DATA:
                c.receive_data(await self.reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                c.start_next_cycle()
                return status, b"".join(chunks)

    def close(self) -> None:
        self.writer.close()


async def run_http(cluster: Cluster, key: str, count: int, window: int, rooms: int) -> dict:
    node = cluster.node_procs[0]
    conns = [await HttpConn(node.host, node.internal_port, key).open() for _ in range(window)]
    latencies: list[float] = []
    errors = 0
    next_i = 0

    async def worker(conn: HttpConn, end: int) -> None:
        nonlocal errors, next_i
        while next_i < end:
            i, next_i = next_i, next_i + 1
            body = json.dumps({"room": f"bench.api.{i % rooms}", "data": {"n": i},
                               "id": f"http-{window}-{i}"}).encode()
            t0 = time.perf_counter()
            status, reply = await conn.post("/api/publish", body)
            latencies.append(time.perf_counter() - t0)
            if status != 200 or b'"seq"' not in reply:
                errors += 1

    try:
        warm = min(500, count)
        await asyncio.gather(*(worker(c, warm) for c in conns))
        latencies.clear()
        node_cpu0, gen_cpu0, nats_cpu0 = cluster.node_cpu(), self_cpu(), cluster.nats_cpu()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c, count) for c in conns))
        elapsed = time.perf_counter() - t0
    finally:
        for c in conns:
            c.close()
    n = count - warm
    lat = sorted(latencies)
    return {"publishes": n, "per_s": n / elapsed, "errors": errors,
            "p50_ms": percentile(lat, 0.5) * 1000, "p99_ms": percentile(lat, 0.99) * 1000,
            "node_cpu_us": (cluster.node_cpu() - node_cpu0) / n * 1e6,
            "nats_cpu_s": cluster.nats_cpu() - nats_cpu0, "gen_cpu_s": self_cpu() - gen_cpu0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--window", type=int, nargs="+", default=[64, 512])
    ap.add_argument("--rooms", type=int, default=10)
    ap.add_argument("--transport", nargs="+", choices=["nats", "http"], default=["nats", "http"])
    args = ap.parse_args()
    import uvloop

    key = secrets.token_urlsafe(24)
    with tempfile.NamedTemporaryFile("w", suffix=".keys", delete=False) as f:
        f.write(key + "\n")
    print(f"# server API publish: 1 node, 3 NATS servers (R3), {args.rooms} rooms; {machine()}")
    print("| transport | in flight | publishes | publishes/s | p50 ms | p99 ms "
          "| node CPU µs/publish | errors |")
    print("|---|---|---|---|---|---|---|---|")
    try:
        with Cluster(nodes=1, nats=3, env={"ROOMCAST_API_KEY_FILE": f.name}) as cluster:
            for transport in args.transport:
                for window in args.window:
                    r = uvloop.run(run(cluster, args.count, window, args.rooms)
                                   if transport == "nats"
                                   else run_http(cluster, key, args.count, window, args.rooms))
                    print(f"| {transport} | {window} | {r['publishes']} | {r['per_s']:,.0f} | "
                          f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['node_cpu_us']:.0f} | "
                          f"{r['errors']} |", flush=True)
    finally:
        os.unlink(f.name)


if __name__ == "__main__":
    main()
