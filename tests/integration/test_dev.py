"""`roomcast dev` (what `make run` starts): serves, prints URLs and a token, stops cleanly."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import UNIT, WsClient, room_name


def children_of(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def node_pid(pids: list[int], node_id: str) -> int:
    """Which of ``pids`` is the dev node ``node_id`` (from its environment)."""
    want = f"ROOMCAST_NODE_ID={node_id}".encode()
    return next(p for p in pids if want in Path(f"/proc/{p}/environ").read_bytes().split(b"\0"))


def roomcast_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
    return subprocess.run([sys.executable, "-m", "roomcast", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60 * UNIT)


async def test_dev_cluster_serves_and_stops_without_orphans(tmp_path):
    """The dev cluster prints node URLs and a token, relays across nodes, writes
    .roomcast/dev.env that the other commands use with no flags, passes node flags through
    (a namespaces file among them: the dev cluster applies its streams too),
    restarts a node killed with -9, and Ctrl-C stops all."""
    (tmp_path / "ns.toml").write_text("[namespaces.chat]\nstreams = 2\n")
    proc = subprocess.Popen([sys.executable, "-m", "roomcast", "dev", "--port", "0", "--",
                             "--max-rooms", "2", "--namespaces", str(tmp_path / "ns.toml")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=tmp_path,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60 * UNIT
        while not any("Ctrl-C stops everything" in line for line in lines):
            assert time.monotonic() < deadline, "".join(lines)
            line = await asyncio.to_thread(proc.stdout.readline)
            assert line, "dev exited early:\n" + "".join(lines)
            lines.append(line)
        text = "".join(lines)
        urls = re.findall(r"node-\d: ws://127\.0\.0\.1:(\d+)/ws", text)
        assert len(urls) == 2, text
        nats_line = next(line for line in lines if "NATS (3 servers" in line)
        assert len(re.findall(r"nats://127\.0\.0\.1:\d+", nats_line)) == 3
        env_file = tmp_path / ".roomcast" / "dev.env"
        assert f"Written to {Path('.roomcast/dev.env')}" in text
        assert env_file.stat().st_mode & 0o077 == 0  # it holds the JWT secret
        # The other commands find the cluster with no flags at all.
        rooms = await asyncio.to_thread(roomcast_cli, tmp_path, "admin", "rooms")
        assert rooms.returncode == 0 and "rooms" in rooms.stdout, rooms
        published = await asyncio.to_thread(roomcast_cli, tmp_path, "publish", "lobby", '"hi"')
        assert published.returncode == 0 and published.stdout.strip().isdigit(), published
        in_chat = await asyncio.to_thread(roomcast_cli, tmp_path, "publish", "chat.x", '"hi"')
        assert in_chat.returncode == 0 and in_chat.stdout.strip().isdigit(), in_chat
        minted = await asyncio.to_thread(roomcast_cli, tmp_path, "token", "--user", "zed")
        assert minted.returncode == 0 and minted.stdout.count(".") == 2, minted
        tok = re.search(r"dev token.*\n\s+(\S+)", text).group(1)
        page = re.search(r"demo page \(user 'dev'\):\n\s+(\S+)", text).group(1)
        assert page.startswith(f"http://127.0.0.1:{urls[0]}/?token={tok}&room=lobby&nodes=ws://")
        kids = children_of(proc.pid)
        assert len(kids) == 5, kids  # 3 nats-server + 2 nodes

        room = room_name()
        a = await WsClient.connect(int(urls[0]), tok)
        b = await WsClient.connect(int(urls[1]), tok)
        await a.join(room)
        await b.join(room)
        ack = await a.publish(room, "hello from dev")
        assert (await b.wait_messages(room, 1))[0]["seq"] == ack["seq"]
        # `roomcast dev -- --max-rooms 2` reached the nodes: a third room is refused.
        await a.join(room_name())
        third = await a.join(room_name())
        assert third["code"] == "too_many_rooms", third
        await a.close()
        await b.close()

        # Scale like the autoscaler would: add a node, then remove (drain) one.
        async def command(text: str, expect: str) -> str:
            proc.stdin.write(text + "\n")
            proc.stdin.flush()
            async with asyncio.timeout(30 * UNIT):
                while True:
                    line = await asyncio.to_thread(proc.stdout.readline)
                    assert line
                    if expect in line:
                        return line

        added = await command("add", "added node-3")
        port3 = int(re.search(r":(\d+)/ws", added).group(1))
        c3 = await WsClient.connect(port3, tok)
        assert c3.welcome["node"] == "node-3"
        await c3.close()
        removed = await command("remove node-1", "removed node-1")
        assert "exit code 0" in removed
        kids_now = children_of(proc.pid)
        assert len(kids_now) == 5, kids_now  # 3 nats-server + node-2 + node-3

        # A node killed with -9 is reported and restarted on its port; the others keep going.
        os.kill(node_pid(kids_now, "node-2"), signal.SIGKILL)
        await command("", "node-2 exited")
        await command("", "node-2 is back")
        c2 = await WsClient.connect(int(urls[1]), tok)
        assert c2.welcome["node"] == "node-2"
        await c2.close()
        kids_now = children_of(proc.pid)
        assert len(kids_now) == 5, kids_now

        proc.send_signal(signal.SIGINT)
        rest = await asyncio.to_thread(proc.communicate, timeout=60 * UNIT)
        assert proc.returncode == 0, rest
        assert "roomcast dev: stopped" in rest[0]
        assert [k for k in set(kids) | set(kids_now) if alive(k)] == []
        assert not env_file.exists()  # a stopped cluster leaves no settings behind
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_ctrl_c_with_the_output_piped_leaves_no_process(tmp_path):
    """`make run | tee log`: Ctrl-C ends tee too, so the final prints hit a closed pipe. Every
    process the dev cluster started is stopped anyway."""
    proc = subprocess.Popen([sys.executable, "-m", "roomcast", "dev", "--port", "0"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=tmp_path,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        async with asyncio.timeout(60 * UNIT):
            while "Ctrl-C stops everything" not in await asyncio.to_thread(proc.stdout.readline):
                pass
        kids = children_of(proc.pid)
        assert len(kids) == 5, kids
        proc.stdout.close()  # the reader (tee) is gone
        proc.send_signal(signal.SIGINT)
        await asyncio.to_thread(proc.wait, 60 * UNIT)
        assert [k for k in kids if alive(k)] == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_nats_cluster_that_fails_to_start_stops_the_servers_it_started():
    """One server of three cannot start (its port is taken): start() raises and the two
    that did start are stopped, not left running behind the caller."""
    import socket

    from roomcast.natsserver import NatsCluster

    cluster = NatsCluster(3)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", cluster.servers[2].port))
    blocker.listen()
    try:
        try:
            cluster.start(timeout=10 * UNIT)
        except (RuntimeError, TimeoutError):
            pass
        else:
            raise AssertionError("start() succeeded with a server's port taken")
        started = [s.proc for s in cluster.servers if s.proc is not None]
        assert len(started) == 3
        assert all(p.poll() is not None for p in started)
    finally:
        blocker.close()
        cluster.stop()
