"""Reconnect storm with light protocol clients: the server side of a resume storm.

    python -m bench.storm_raw [--clients 2000 --rooms 20 --rate 10]

Like ``bench.storm`` but each client is a minimal WebSocket client (``bench.wsclient``) that
speaks the resume protocol itself: it keeps its resume token and last ``seq`` per room and,
when its node dies, reconnects to another node after a random 0-250 ms delay and sends
``resume``. This takes the Python client library's own cost out of the load generator, which
shares the machine with the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import time

import msgspec
import nats
import nats.js.errors

from bench.harness import (
    Cluster,
    add_gen_gc_flag,
    add_user_mode,
    cpu_seconds,
    machine,
    percentile,
    self_cpu,
    tune_generator_gc,
)
from bench.wsclient import connect
from roomcast.client.model import Verdict, judge


class Frame(msgspec.Struct):
    type: str
    room: str = ""
    seq: int = 0
    prev: int | None = 0
    resume_token: str | None = None


decode = msgspec.json.Decoder(Frame).decode


class RawClient:
    def __init__(self, room: str, urls: list[tuple[int, str]], path: str) -> None:
        self.room = room
        self.urls = urls
        self.path = path
        self.token: str | None = None
        self.position: int | None = None
        self.seqs: list[int] = []
        self.gaps = 0
        self.resumed_at: float | None = None
        self.delivering_at: float | None = None
        self.errors = 0
        self.kill_at: float | None = None
        self.proto = None
        self.joined = asyncio.Event()

    def on_frame(self, raw: bytes) -> None:
        f = decode(raw)
        if f.resume_token:
            self.token = f.resume_token
        if f.type == "message":
            verdict = judge(self.position, f.seq, f.prev)  # the clients' rule; gaps counted
            if verdict is Verdict.DUPLICATE:
                return
            if verdict is Verdict.GAP:
                self.gaps += 1
            self.position = f.seq
            self.seqs.append(f.seq)
            if self.kill_at is not None and self.delivering_at is None and self.resumed_at:
                self.delivering_at = time.monotonic()
        elif f.type == "joined":
            self.position = max(self.position or 0, f.seq)
            self.joined.set()
        elif f.type == "resumed":
            self.resumed_at = time.monotonic()
            if b'"error"' in raw:
                self.errors += 1

    async def open(self, port: int, resume: bool) -> None:
        # Resume with the token of the *previous* connection: the new connection's welcome
        # (which may arrive with the handshake) carries a fresh token naming no rooms yet.
        token = self.token
        self.proto = await connect("127.0.0.1", port, self.path, self.on_frame)
        if resume:
            rooms = {self.room: self.position} if self.position is not None else {}
            self.proto.send_text(json.dumps({"type": "resume", "token": token,
                                             "rooms": rooms}).encode())
        else:
            self.proto.send_text(json.dumps({"type": "join", "room": self.room}).encode())

    async def reconnect(self, port: int) -> None:
        await asyncio.sleep(random.uniform(0, 0.25))
        for _ in range(50):
            try:
                await self.open(port, resume=True)
                return
            except (OSError, ConnectionError):
                await asyncio.sleep(random.uniform(0, 0.25))


async def _presence_stored(cluster) -> tuple[int, int]:
    """(messages, bytes) in the PRESENCE stream, (0, 0) without presence."""
    nc = await nats.connect(cluster.nats_cluster.urls)
    try:
        info = await nc.jetstream().stream_info("PRESENCE")
        return info.state.messages, info.state.bytes
    except nats.js.errors.NotFoundError:
        return 0, 0
    finally:
        await nc.close()


def _cpus(cluster, survivors) -> tuple[float, float, float]:
    """CPU seconds so far of the surviving nodes, the NATS servers and this load generator."""
    return (sum(cpu_seconds(n.proc.pid) for n in survivors), cluster.nats_cpu(), self_cpu())


async def run(args) -> dict:
    env = {"ROOMCAST_LOG_LEVEL": "error", **dict(e.split("=", 1) for e in args.env)}
    with Cluster(nodes=3, nats=3, env=env) as cluster:
        n1, n2, n3 = cluster.node_procs
        path = f"/ws?token={cluster.token('storm')}"
        rooms = [f"storm.{r}" for r in range(args.rooms)]
        if not args.same_user:  # one user per client (the default), or one user for all
            clients = [RawClient(rooms[i % args.rooms], [],
                                 f"/ws?token={cluster.token(f'storm{i}')}")
                       for i in range(args.clients)]
        else:
            clients = [RawClient(rooms[i % args.rooms], [], path) for i in range(args.clients)]
        for c in clients:
            await c.open(n1.port, resume=False)
        await asyncio.wait_for(asyncio.gather(*(c.joined.wait() for c in clients)), 60)
        tune_generator_gc(args)
        pub = None
        acked: dict[str, list[int]] = {r: [] for r in rooms}
        stop = asyncio.Event()
        waiters: dict[int, tuple[str, asyncio.Future]] = {}

        def on_pub(raw: bytes) -> None:
            if raw.startswith(b'{"type":"ack"'):
                f = json.loads(raw)
                room, fut = waiters.pop(f["rid"])
                acked[room].append(f["seq"])
                fut.set_result(None)

        pub = await connect("127.0.0.1", n2.port, path, on_pub)
        rid = 0

        async def publisher(room: str) -> None:
            nonlocal rid
            while not stop.is_set():
                rid += 1
                fut = asyncio.get_running_loop().create_future()
                waiters[rid] = (room, fut)
                try:
                    pub.send_text(json.dumps({"type": "publish", "room": room, "rid": rid,
                                              "data": {"t": time.time()}}).encode())
                except RuntimeError:
                    return  # the publisher's connection closed at the end of the run
                await fut
                await asyncio.sleep(1.0 / args.rate)

        ptasks = [asyncio.create_task(publisher(r)) for r in rooms]
        await asyncio.sleep(2.0)
        stored0 = await _presence_stored(cluster)
        kill_at = time.monotonic()
        cpu0 = _cpus(cluster, (n2, n3))
        n1.proc.send_signal(signal.SIGKILL)
        for c in clients:
            c.kill_at = kill_at
        await asyncio.gather(*(c.proto.closed for c in clients))
        await asyncio.gather(*(c.reconnect((n2 if i % 2 else n3).port)
                               for i, c in enumerate(clients)))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(  # noqa: ASYNC110 - polled bench state
                c.delivering_at for c in clients):
            await asyncio.sleep(0.05)
        cpu1 = _cpus(cluster, (n2, n3))
        storm_cpu = [round(b - a, 2) for a, b in zip(cpu0, cpu1, strict=True)]
        stored1 = await _presence_stored(cluster)
        stop.set()
        await asyncio.gather(*ptasks)
        await asyncio.sleep(2.0)
        lost = sum(len(set(acked[c.room]) - set(c.seqs)) for c in clients)
        dups = sum(len(c.seqs) - len(set(c.seqs)) for c in clients)
        res = sorted(c.resumed_at - kill_at for c in clients if c.resumed_at)
        dlv = sorted(c.delivering_at - kill_at for c in clients if c.delivering_at)
        for c in clients:
            c.proto.transport.close()
        pub.transport.close()
        await asyncio.sleep(0.5)
        return {"clients": args.clients, "resumed": len(res), "resume_p50": percentile(res, .5),
                "resume_max": res[-1] if res else float("nan"), "delivering": len(dlv),
                "deliver_max": dlv[-1] if dlv else float("nan"),
                "published": sum(len(v) for v in acked.values()), "lost": lost, "dups": dups,
                "gaps": sum(c.gaps for c in clients),
                "room_errors": sum(c.errors for c in clients), "storm_cpu": storm_cpu,
                "presence_stored": [b - a for a, b in zip(stored0, stored1, strict=True)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=2000)
    ap.add_argument("--rooms", type=int, default=20)
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--env", nargs="*", default=[])
    add_gen_gc_flag(ap)
    add_user_mode(ap)
    args = ap.parse_args()
    import uvloop

    r = uvloop.run(run(args))
    print(f"# reconnect storm (light clients): {r['clients']} clients on the killed node, "
          f"{args.rooms} rooms, {args.rate:g} msg/s per room {args.env or ''}; {machine()}")
    print("| clients | resumed | resume p50 s | all resumed s | all delivering again s | "
          "published | lost | duplicates | gaps seen | rooms refused |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {r['clients']} | {r['resumed']} | {r['resume_p50']:.2f} | {r['resume_max']:.2f} | "
          f"{r['deliver_max']:.2f} | {r['published']} | {r['lost']} | {r['dups']} | {r['gaps']} | "
          f"{r['room_errors']} |")
    nodes, nats_cpu, gen = r["storm_cpu"]
    print(f"\nCPU seconds from the kill until all delivered again: surviving nodes {nodes}, "
          f"NATS servers {nats_cpu}, load generator {gen}")
    msgs, size = r["presence_stored"]
    print(f"Presence events stored meanwhile: {msgs} messages, {size} bytes")


if __name__ == "__main__":
    main()
