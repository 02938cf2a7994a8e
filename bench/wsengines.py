"""websockets against picows on the edge's per-client costs: the handshake and a received frame.

    python -m bench.wsengines [--connections 2000 --clients 50 --window 64 --duration 6]

The issue asks to compare picows behind the node's send seam if `websockets` cannot reach the
targets. Fan-out already writes pre-framed bytes, so what an engine still decides is the work
*per client*: the upgrade (a reconnect storm is 2,000 of them) and each received frame (the
publish path). This bench measures exactly those, engine against engine, with nothing else
in the server process:

* one server process per engine on 127.0.0.1, configured like the node (websockets: no
  compression, ``max_queue=16``, no per-connection ping task, the node's ``recv()`` loop;
  picows: its callback listener), reading the ``token`` from the request's query string and
  writing a small pre-framed reply (an ``ack``-sized text frame) for every text frame
  received, straight to the socket in both;
* the load generator is :mod:`bench.wsclient` in this process, the same for both engines.

Prints the server's CPU per handshake (``--connections`` upgrades, 200 at a time), its RSS per
open connection (the engine's own objects: nothing joined, no presence) and its CPU per
received frame (``--clients`` connections each keeping ``--window`` frames in flight for
``--duration`` seconds). JWT verification, JSON and NATS are the same whatever the engine and
are left out on purpose: the node's own figures are in ``bench.publish`` and ``bench.storm_raw``.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import urllib.parse

from bench.harness import (
    add_gen_gc_flag,
    cpu_seconds,
    machine,
    rss_bytes,
    tune_generator_gc,
    wait_listening,
)
from bench.wsclient import connect
from roomcast.natsserver import free_port

REPLY = b'{"type":"ack","room":"r","rid":1,"seq":1}'
FRAME = bytes([0x81, len(REPLY)]) + REPLY  # server frames are unmasked: the same bytes for all
ENGINES = ("websockets", "picows")


# -- servers (run in their own process: `python -m bench.wsengines --serve <engine> <port>`) --

async def serve_websockets(port: int) -> None:
    from websockets.asyncio.server import serve

    async def handler(ws) -> None:
        write = ws.transport.write
        recv = ws.recv
        try:
            while True:
                await recv(decode=False)
                write(FRAME)
        except Exception:  # noqa: BLE001 - the client closed
            pass

    def process_request(connection, request):
        urllib.parse.parse_qs(urllib.parse.urlsplit(request.path).query).get("token")
        return None

    async with serve(handler, "127.0.0.1", port, process_request=process_request,
                     compression=None, ping_interval=None, ping_timeout=None, max_queue=16,
                     backlog=4096):
        await asyncio.Future()


async def serve_picows(port: int) -> None:
    from picows import WSListener, WSMsgType, ws_create_server

    class Listener(WSListener):
        def on_ws_connected(self, transport) -> None:
            self.write = transport.underlying_transport.write

        def on_ws_frame(self, transport, frame) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                frame.get_payload_as_bytes()  # what the node would hand to its decoder
                self.write(FRAME)
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    def factory(request) -> Listener:
        urllib.parse.parse_qs(urllib.parse.urlsplit(request.path.decode()).query).get("token")
        return Listener()

    # picows allocates a 16 KiB read buffer per connection by default; 1 KiB (it grows on
    # demand) is what an edge with thousands of idle connections would configure.
    server = await ws_create_server(factory, "127.0.0.1", port, backlog=4096,
                                    read_buffer_init_size=1024)
    async with server:
        await server.serve_forever()


# -- the load generator --------------------------------------------------------------------

async def handshakes(port: int, pid: int, n: int) -> tuple[float, float, list]:
    path = "/ws?token=" + "x" * 180  # a JWT-sized query string
    sem = asyncio.Semaphore(200)
    protos: list = []

    async def one() -> None:
        async with sem:
            protos.append(await connect("127.0.0.1", port, path, lambda raw: None))

    cpu0, rss0 = cpu_seconds(pid), rss_bytes(pid)
    await asyncio.gather(*(one() for _ in range(n)))
    await asyncio.sleep(0.3)  # let the server finish what the last upgrades started
    return (cpu_seconds(pid) - cpu0) / n * 1e6, (rss_bytes(pid) - rss0) / n / 1024, protos


async def frames(port: int, pid: int, clients: int, window: int, duration: float
                 ) -> tuple[float, float]:
    state = {"count": 0, "stop": False}
    protos = []
    for _ in range(clients):
        box: list = []

        def on_frame(raw: bytes, box: list = box) -> None:
            state["count"] += 1
            if not state["stop"]:
                box[0].send_text(b'{"type":"publish","room":"r","rid":1,"data":{"p":"%s"}}'
                                 % (b"x" * 60))

        box.append(await connect("127.0.0.1", port, "/ws?token=t", on_frame))
        protos.append(box[0])
    for proto in protos:
        for _ in range(window):
            proto.send_text(b'{"type":"publish","room":"r","rid":1,"data":{}}')
    await asyncio.sleep(1.0)  # warm up
    n0, cpu0, t0 = state["count"], cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(duration)
    n1, cpu1, t1 = state["count"], cpu_seconds(pid), time.monotonic()
    state["stop"] = True
    await asyncio.sleep(0.5)
    for proto in protos:
        proto.transport.close()
    got = n1 - n0
    return got / (t1 - t0), (cpu1 - cpu0) / got * 1e6 if got else float("nan")


async def measure(port: int, pid: int, args) -> dict:
    hs_us, kib, protos = await handshakes(port, pid, args.connections)
    for p in protos:
        p.transport.close()
    await asyncio.sleep(1.0)
    tune_generator_gc(args)
    rate, frame_us = await frames(port, pid, args.clients, args.window, args.duration)
    return {"handshake_us": hs_us, "kib": kib, "frames_per_s": rate, "frame_us": frame_us}


def measure_engine(engine: str, args) -> dict:
    """Start ``engine``'s server process, measure it, stop it (by its PID)."""
    import uvloop

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.wsengines", "--serve", engine,
                             str(port)], stdin=subprocess.DEVNULL)
    try:
        wait_listening(port)
        return uvloop.run(measure(port, proc.pid, args))
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serve", nargs=2, metavar=("ENGINE", "PORT"), help=argparse.SUPPRESS)
    ap.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    ap.add_argument("--connections", type=int, default=2000, help="upgrades measured")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--window", type=int, default=64, help="frames in flight per client")
    ap.add_argument("--duration", type=float, default=6.0)
    ap.add_argument("--runs", type=int, default=2, help="runs per engine, alternating")
    add_gen_gc_flag(ap)
    args = ap.parse_args()
    import uvloop

    if args.serve:
        engine, port = args.serve
        uvloop.run((serve_websockets if engine == "websockets" else serve_picows)(int(port)))
        return
    print(f"# WebSocket engines, server process alone on 127.0.0.1; {machine()}")
    print("| engine | server CPU µs per handshake | KiB per open connection | frames/s received | "
          "server CPU µs per frame |")
    print("|---|---|---|---|---|")
    for _ in range(args.runs):
        for engine in args.engines:
            r = measure_engine(engine, args)
            print(f"| {engine} | {r['handshake_us']:.0f} | {r['kib']:.1f} | {r['frames_per_s']:,.0f} | "
                  f"{r['frame_us']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
