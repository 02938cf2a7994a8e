"""Connect rate: new authenticated connections per second, each joining one shared room.

    python -m bench.connects [--users 5000] [--nodes 2]
                             [--systems roomcast nopresence scoped tokenrooms relay
                                        relay-wsconn relay-callbacks] [--rounds 1]

Each system gets a fresh 3-server NATS cluster and ``--nodes`` edge processes; ``--users``
distinct users then connect (``--concurrency`` upgrades in flight, spread over the nodes),
each sends one ``join`` of the same room and waits for its ``joined``; the connections stay
open, so the room fills to ``--users`` members. Printed: connects/s (first upgrade to last
``joined``), the error frames received instead of a ``joined`` (not retried), edge CPU per connect (including closing the connections afterwards, and for the
connect phase alone: read at the last ``joined``), the three NATS servers' CPU per connect in
the connect phase, the load generator's own CPU per connect in the connect phase, and the frames
it received per connect. ``--rounds N`` runs the systems N times interleaved and ends with each
system's median and its share of the relay's rate round by round (of ``nopresence``'s without a
relay; one round of ~1 s per system moves ±10 % on a shared VM: compare medians).

* ``roomcast``: the edge node as shipped (JWT at the upgrade, presence on: the room's members
  are told of the newcomers, ``docs/protocol.md`` §4.10);
* ``nopresence``: the same with ``--presence false``;
* ``scoped``: the same with ``--presence-scope rooms`` (docs/presence.md);
* ``tokenrooms``: ``roomcast``, but each client joins at the handshake, the room named in its
  token (``roomcast.rooms``, docs/protocol.md §1): its ``welcome`` carries the join's result,
  so there is no ``join`` frame and no ``joined`` frame;
* ``relay``: a plain websockets + NATS relay on uvloop (no auth, no presence, no storage): a
  ``join`` subscribes the room's subject once per process and answers ``joined``. The floor any
  Python edge pays for an upgrade, a frame each way and a NATS subscription;
* ``relay-wsconn``, ``relay-callbacks``: the same relay on roomcast's own WebSocket server
  (``node/wsconn.py``), and on websockets' Sans-I/O protocol with no task at all
  (:mod:`bench.relays`).

The load generator (:mod:`bench.wsclient`, this process) shares the machine's cores with the
servers; it is the same for every system.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from bench import relays
from bench.harness import Cluster, cpu_seconds, machine, self_cpu
from bench.relays import KINDS as RELAYS
from bench.wsclient import connect

ROOM = "big.room"


# -- the load ------------------------------------------------------------------------------

async def connect_all(ports: list[int], paths: list[str], concurrency: int,
                      edge_cpu=None, at_handshake: bool = False, nats_cpu=None) -> dict:
    """Connect and join (``at_handshake``: the token's rooms, done at ``welcome``);
    ``edge_cpu()`` (the servers' CPU seconds so far) is read once more at the last join,
    before the closes, for the connect phase alone; ``nats_cpu()`` (the NATS servers') at the
    first upgrade and at the last join."""
    done_prefix = b'{"type":"welcome"' if at_handshake else b'{"type":"joined"'
    frames = 0
    joined = 0
    errors = 0
    done = asyncio.Event()
    n = len(paths)

    def on_frame(raw: bytes) -> None:
        nonlocal frames, joined, errors
        frames += 1
        if raw.startswith(done_prefix):
            joined += 1
        elif raw.startswith(b'{"type":"error"'):
            errors += 1  # e.g. a join refused "unavailable" (NATS too slow): not retried here
        else:
            return
        if joined + errors == n:
            done.set()

    protos = []
    seen: dict[int, list[bytes]] = {}  # per client: the starts of the frames it received
    sem = asyncio.Semaphore(concurrency)
    join = b'{"type":"join","room":"%s"}' % ROOM.encode()

    def frame_of(i: int):
        def on(raw: bytes) -> None:
            seen.setdefault(i, []).append(raw[:24])
            on_frame(raw)
        return on

    async def one(i: int) -> None:
        async with sem:
            p = await connect("127.0.0.1", ports[i % len(ports)], paths[i], frame_of(i))
            if not at_handshake:
                p.send_text(join)
            p.index = i
            protos.append(p)

    nats0 = nats_cpu() if nats_cpu is not None else 0.0
    gen0 = self_cpu()
    t0 = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(n)))
    try:
        await asyncio.wait_for(done.wait(), 120)
    except TimeoutError:
        pass
    elapsed = time.monotonic() - t0
    gen = self_cpu() - gen0
    at_joined = edge_cpu() if edge_cpu is not None else None
    nats = nats_cpu() - nats0 if nats_cpu is not None else 0.0
    if joined + errors < n:  # say what the clients left waiting got
        import sys

        for p in protos:
            got = seen.get(p.index, [])
            if not any(g.startswith(done_prefix) for g in got):
                print(f"  client {p.index} (port {ports[p.index % len(ports)]}): frames {got}, "
                      f"close code {p.close_code}, closing {p.transport.is_closing()}",
                      file=sys.stderr)
    for p in protos:
        p.transport.close()
    await asyncio.sleep(0.5)
    return {"joined": joined, "elapsed": elapsed, "frames": frames, "cpu_at_joined": at_joined,
            "errors": errors, "nats_cpu": nats,
            "gen_cpu": gen}


def run_roomcast(args, system: str) -> dict:
    env = {"ROOMCAST_MAX_CONNECTIONS": str(args.users * 2)}
    if system == "nopresence":
        env["ROOMCAST_PRESENCE"] = "false"
    if system == "scoped":
        env["ROOMCAST_PRESENCE_SCOPE"] = "rooms"
    with Cluster(nodes=args.nodes, nats=3, env=env) as cluster:
        at_handshake = system == "tokenrooms"
        if at_handshake:
            from roomcast.auth import mint_token

            paths = [f"/ws?token={mint_token(cluster.key, f'u-{i}', ttl=3600, rooms=[ROOM])}"
                     for i in range(args.users)]
        else:
            paths = cluster.paths("u", args.users)
        cpu0 = cluster.node_cpu()
        out = asyncio.run(connect_all([n.port for n in cluster.node_procs], paths,
                                      args.concurrency, cluster.node_cpu, at_handshake,
                                      cluster.nats_cpu))
        out["cpu"] = cluster.node_cpu() - cpu0
        out["cpu_at_joined"] -= cpu0
    return out


def run_relay(args, kind: str) -> dict:
    with relays.started(kind, [sys.executable] * args.nodes, 20) as (nats_cluster, procs, ports):
        paths = [f"/ws?u={i}" for i in range(args.users)]

        def edge_cpu() -> float:
            return sum(cpu_seconds(p.pid) for p in procs)

        def nats_cpu() -> float:
            return sum(cpu_seconds(s.proc.pid) for s in nats_cluster.servers)

        cpu0 = edge_cpu()
        out = asyncio.run(connect_all(ports, paths, args.concurrency, edge_cpu,
                                      nats_cpu=nats_cpu))
        out["cpu"] = edge_cpu() - cpu0
        out["cpu_at_joined"] -= cpu0
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=100, help="upgrades in flight")
    ap.add_argument("--systems", nargs="+", default=["roomcast", "nopresence", "relay"],
                    choices=["roomcast", "nopresence", "scoped", "tokenrooms", *RELAYS])
    ap.add_argument("--rounds", type=int, default=1,
                    help="run the systems this many times, interleaved (A, B, A, B, ...); "
                         "then print each system's median and each round's rate as a share "
                         "of that round's relay (or of nopresence, without a relay)")
    args = ap.parse_args()
    print(f"# {machine()}; {args.users} distinct users into one room over {args.nodes} nodes, "
          f"{args.concurrency} upgrades in flight")
    print("| round | system | joined | error frames | connects/s | edge CPU per connect "
          "| (connect phase only) | NATS CPU per connect (connect phase) "
          "| load generator CPU per connect (connect phase) | frames received per connect |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rates: dict[str, list[float]] = {s: [] for s in args.systems}
    for r in range(1, args.rounds + 1):
        for system in args.systems:
            out = run_relay(args, system) if system in RELAYS else run_roomcast(args, system)
            rate = out["joined"] / out["elapsed"]
            rates[system].append(rate)
            print(f"| {r} | {system} | {out['joined']} | {out['errors']} | {rate:,.0f} | "
                  f"{out['cpu'] / max(1, out['joined']) * 1e6:,.0f} µs | "
                  f"{out['cpu_at_joined'] / max(1, out['joined']) * 1e6:,.0f} µs | "
                  f"{out['nats_cpu'] / max(1, out['joined']) * 1e6:,.0f} µs | "
                  f"{out['gen_cpu'] / max(1, out['joined']) * 1e6:,.0f} µs | "
                  f"{out['frames'] / max(1, out['joined']):,.1f} |", flush=True)
    if args.rounds > 1:
        print(summary(rates))


def summary(rates: dict[str, list[float]]) -> str:
    """Each system's median rate over the rounds, and every other system's rate in each round
    as a share of that round's rate of the base: the first relay among the systems, else
    ``nopresence`` (the rounds ran interleaved, so a slow spell of the machine weighs on both)."""
    base = next((s for s in rates if s in RELAYS), "nopresence" if "nopresence" in rates else None)
    lines = ["", f"| system | median connects/s | min | max | share of {base or '—'} in each "
             f"round (sorted) | median share |", "|---|---|---|---|---|---|"]
    for system, got in rates.items():
        share = "— | —"
        if base is not None and system != base:
            shares = sorted(a / b for a, b in zip(got, rates[base], strict=True))
            share = (f"{', '.join(f'{x:.0%}' for x in shares)} | "
                     f"{statistics.median(shares):.0%}")
        lines.append(f"| {system} | {statistics.median(got):,.0f} | {min(got):,.0f} | "
                     f"{max(got):,.0f} | {share} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
