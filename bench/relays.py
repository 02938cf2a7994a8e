"""Plain WebSocket + NATS relays for :mod:`bench.connects`: the floor a Python edge pays per
connect, written three ways (docs/performance.md, "The cost of a connect").

    python -m bench.relays KIND PORT NATS_URLS     (bench.connects starts them)

Each relay does the same: upgrade (no auth), on ``join`` subscribe the room's NATS subject once
per process and answer ``joined``, relay ``publish`` frames. No presence, no storage.

* ``relay``: websockets' asyncio server (``websockets.asyncio.server.serve``), as one would
  write such a relay;
* ``relay-wsconn``: the same on roomcast's own server (``node/wsconn.py``: websockets'
  Sans-I/O protocol, one task per connection);
* ``relay-callbacks``: websockets' Sans-I/O protocol in plain ``asyncio.Protocol`` callbacks,
  no task at all (what a connection costs with nothing above the protocol).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys

KINDS = ("relay", "relay-wsconn", "relay-callbacks")


def _joined(room: str) -> bytes:
    return json.dumps({"type": "joined", "room": room, "seq": 0},
                      separators=(",", ":")).encode()


class _Rooms:
    """Members per room; a room's NATS subscription is made at its first join."""

    def __init__(self, nc) -> None:
        self.nc = nc
        self.members: dict[str, set] = {}

    async def join(self, room: str, member) -> None:
        from roomcast.node.wire import text_frame

        members = self.members.get(room)
        if members is None:
            members = self.members[room] = set()

            async def deliver(msg, members=members) -> None:
                frame = text_frame(msg.data)  # framed once, written to each
                for m in list(members):
                    m.transport.write(frame)

            await self.nc.subscribe(f"relay.{room}", cb=deliver)
        members.add(member)

    async def frame(self, raw: str | bytes, member, joined: list[str]) -> bytes | None:
        """Act on one client frame; the ``joined`` reply to send, if it was a join."""
        f = json.loads(raw)
        if f.get("type") == "join":
            await self.join(f["room"], member)
            joined.append(f["room"])
            return _joined(f["room"])
        if f.get("type") == "publish":
            await self.nc.publish(f"relay.{f['room']}",
                                  raw.encode() if isinstance(raw, str) else raw)
        return None

    def leave(self, rooms: list[str], member) -> None:
        for room in rooms:
            self.members.get(room, set()).discard(member)


async def serve_asyncio(port: int, rooms: _Rooms) -> None:
    from websockets.asyncio.server import serve

    async def handler(ws) -> None:
        joined: list[str] = []
        try:
            async for raw in ws:
                if (reply := await rooms.frame(raw, ws, joined)) is not None:
                    await ws.send(reply.decode())
        except Exception:  # noqa: BLE001 - the client went away
            pass
        finally:
            rooms.leave(joined, ws)

    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=16,
                     ping_interval=None):
        await asyncio.Future()


async def serve_wsconn(port: int, rooms: _Rooms) -> None:
    from roomcast.node.wsserver import WsServer

    async def handler(ws) -> None:
        joined: list[str] = []
        try:
            while True:
                if (reply := await rooms.frame(await ws.recv(), ws, joined)) is not None:
                    ws.protocol.send_text(reply)
                    ws.send_data()
        except Exception:  # noqa: BLE001 - the client went away
            pass
        finally:
            rooms.leave(joined, ws)

    async def accept(conn, request):
        return None

    server = WsServer(handler, accept, max_size=65536, compression=False)
    await server.start("127.0.0.1", port)
    await asyncio.Future()


async def serve_callbacks(port: int, rooms: _Rooms) -> None:
    from websockets.frames import Opcode
    from websockets.http11 import Request
    from websockets.server import ServerProtocol

    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task] = set()

    def spawn(coro) -> None:
        task = loop.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    class Conn(asyncio.Protocol):
        def connection_made(self, transport) -> None:
            self.transport = transport
            self.protocol = ServerProtocol(max_size=65536)
            self.joined: list[str] = []

        def data_received(self, data: bytes) -> None:
            p = self.protocol
            p.receive_data(data)
            for event in p.events_received():
                if isinstance(event, Request):
                    p.send_response(p.accept(event))
                elif event.opcode is Opcode.TEXT:
                    f = json.loads(event.data)
                    if f.get("type") == "join":
                        room = f["room"]
                        if room in rooms.members:
                            rooms.members[room].add(self)
                        else:
                            spawn(rooms.join(room, self))
                        self.joined.append(room)
                        p.send_text(_joined(room))
                    elif f.get("type") == "publish":
                        spawn(rooms.nc.publish(f"relay.{f['room']}", bytes(event.data)))
            for out in p.data_to_send():
                if out:
                    self.transport.write(out)
                else:
                    self.transport.close()

        def connection_lost(self, exc) -> None:
            rooms.leave(self.joined, self)

    await loop.create_server(Conn, "127.0.0.1", port)
    await asyncio.Future()


@contextlib.contextmanager
def started(kind: str, executables: list[str], timeout: float):
    """A fresh 3-server NATS cluster and one ``kind`` relay process per executable (each on a
    free port, listening before this yields), all stopped by their PID on exit. Yields
    ``(nats_cluster, processes, ports)``."""
    from bench.harness import wait_listening
    from roomcast.natsserver import NatsCluster, free_port

    nats_cluster = NatsCluster(3)
    nats_cluster.start()
    procs: list[subprocess.Popen] = []
    try:
        ports = [free_port() for _ in executables]
        procs = [subprocess.Popen([exe, "-m", "bench.relays", kind, str(port),
                                   ",".join(nats_cluster.urls)], start_new_session=True)
                 for exe, port in zip(executables, ports, strict=True)]
        for port in ports:
            wait_listening(port, timeout)
        yield nats_cluster, procs, ports
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout)
        nats_cluster.stop()


async def main(kind: str, port: int, urls: str) -> None:
    import nats

    rooms = _Rooms(await nats.connect(urls.split(",")))
    serve = {"relay": serve_asyncio, "relay-wsconn": serve_wsconn,
             "relay-callbacks": serve_callbacks}[kind]
    await serve(port, rooms)


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
