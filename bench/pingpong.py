"""Cross-node round trip: client A on node 1 publishes, client B on node 2 echoes.

    python -m bench.pingpong [--count 2000 --rate 500]

A publishes ``{"t": ns}`` to room ``ping``; B (joined to ``ping`` on the other node) publishes
the same data to room ``pong``, which A has joined. The round trip is from A's send to A's
receipt of the echo: two JetStream-stored publishes (R3 in the 3-server cluster) and two
cross-node deliveries. ``--rate`` paces the pings (0: one at a time, each after the last echo).
"""

from __future__ import annotations

import argparse
import asyncio
import time

import msgspec

from bench.harness import Cluster, machine, percentile, pin_split
from bench.wsclient import connect


class Data(msgspec.Struct):
    t: int
    i: int


class Msg(msgspec.Struct):
    type: str
    room: str = ""
    data: Data | None = None


decode = msgspec.json.Decoder(Msg).decode


async def run(args) -> dict:
    with Cluster(nodes=2, nats=args.nats) as cluster:
        if args.pin:
            pin_split(cluster)
        p1, p2 = (n.port for n in cluster.node_procs)
        path = f"/ws?token={cluster.token('pp')}"
        rtts: list[int] = []
        got = asyncio.Event()
        b_proto = None

        def on_b(raw: bytes) -> None:
            if raw.startswith(b'{"type":"message"'):
                m = decode(raw)
                b_proto.send_text(b'{"type":"publish","room":"pp.pong","data":{"t":%d,"i":%d}}'
                                  % (m.data.t, m.data.i))

        def on_a(raw: bytes) -> None:
            if raw.startswith(b'{"type":"message"'):
                m = decode(raw)
                if m.data.i >= 0:
                    rtts.append(time.perf_counter_ns() - m.data.t)
                got.set()

        a = await connect("127.0.0.1", p1, path, on_a)
        b_proto = await connect("127.0.0.1", p2, path, on_b)
        a.send_text(b'{"type":"join","room":"pp.pong"}')
        b_proto.send_text(b'{"type":"join","room":"pp.ping"}')
        await asyncio.sleep(0.5)
        # Warm up.
        for _ in range(50):
            got.clear()
            a.send_text(b'{"type":"publish","room":"pp.ping","data":{"t":%d,"i":-1}}'
                        % time.perf_counter_ns())
            await asyncio.wait_for(got.wait(), 5)
        t0 = time.monotonic()
        for i in range(args.count):
            if args.rate:
                await asyncio.sleep(max(0.0, t0 + i / args.rate - time.monotonic()))
            else:
                got.clear()
            a.send_text(b'{"type":"publish","room":"pp.ping","data":{"t":%d,"i":%d}}'
                        % (time.perf_counter_ns(), i))
            if not args.rate:
                await asyncio.wait_for(got.wait(), 5)
        deadline = time.monotonic() + 10
        while len(rtts) < args.count and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        a.transport.close()
        b_proto.transport.close()
        await asyncio.sleep(0.2)
        rtts.sort()
        return {"n": len(rtts), "p50": percentile(rtts, .5) / 1e6, "p99": percentile(rtts, .99) / 1e6,
                "max": rtts[-1] / 1e6 if rtts else float("nan"), "lost": args.count - len(rtts)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--rate", type=float, nargs="+", default=[0.0, 500.0],
                    help="pings per second (0: sequential)")
    ap.add_argument("--nats", type=int, default=3)
    ap.add_argument("--pin", action="store_true",
                    help="NATS servers on CPU 0, nodes and load generator on the others")
    args = ap.parse_args()
    print(f"# cross-node round trip, NATS {args.nats} servers"
          f"{', pinned: NATS on CPU 0, the rest on the others' if args.pin else ''}; {machine()}")
    print("| pings/s | round trips | p50 ms | p99 ms | max ms | lost |")
    print("|---|---|---|---|---|---|")
    import uvloop

    for rate in args.rate:
        args.rate = rate
        r = uvloop.run(run(args))
        label = "sequential" if not rate else f"{rate:g}"
        print(f"| {label} | {r['n']} | {r['p50']:.2f} | {r['p99']:.2f} | {r['max']:.2f} | "
              f"{r['lost']} |", flush=True)


if __name__ == "__main__":
    main()
