"""Start a local cluster for a benchmark and read its processes' CPU and memory from /proc.

Everything here talks to 127.0.0.1 only and stops the processes it started, by PID.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import secrets
import time
import urllib.request
from dataclasses import dataclass, field

from roomcast.auth import mint_token
from roomcast.dev import NodeProcess
from roomcast.natsserver import NatsCluster, free_port

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def self_cpu() -> float:
    """CPU seconds (user + system) this process has used so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def machine() -> str:
    cpu = "unknown cpu"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {platform.system()}"


@dataclass
class Cluster:
    nodes: int = 2
    nats: int = 3
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.key = secrets.token_urlsafe(32)
        self.nats_cluster = NatsCluster(self.nats)
        self.node_procs: list[NodeProcess] = []

    def __enter__(self) -> Cluster:
        try:
            self.nats_cluster.start()
            env = {"ROOMCAST_LOG_LEVEL": "warning", "ROOMCAST_RATE_LIMIT": "100000",
                   "ROOMCAST_RATE_BURST": "100000", **self.env}
            for i in range(self.nodes):
                self.node_procs.append(NodeProcess(f"bench-{i + 1}", "127.0.0.1", free_port(),
                                                   self.nats_cluster.urls, self.key,
                                                   self.nats_cluster.replicas, env))
            for n in self.node_procs:
                n.wait_ready()
        except BaseException:
            self.__exit__()  # a failed start stops what it started
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for n in self.node_procs:
            n.stop()
        self.nats_cluster.stop()

    def token(self, user: str) -> str:
        return mint_token(self.key, user, ttl=3600)

    def paths(self, prefix: str, n: int, same_user: bool = False) -> list[str]:
        """``/ws?token=…`` for ``n`` connections: a distinct user each (``prefix-0``, …) — the
        load real rooms carry (presence, member lists) — or, with ``same_user``, one user for
        all (the old mode, which presence counts as one member)."""
        if same_user:
            return [f"/ws?token={self.token(prefix)}"] * n
        return [f"/ws?token={self.token(f'{prefix}-{i}')}" for i in range(n)]


    def node_cpu(self) -> float:
        return sum(cpu_seconds(n.proc.pid) for n in self.node_procs)

    def nats_cpu(self) -> float:
        return sum(cpu_seconds(s.proc.pid) for s in self.nats_cluster.servers)

    def node_rss(self) -> list[int]:
        return [rss_bytes(n.proc.pid) for n in self.node_procs]

    def loop_lag(self) -> dict[float, int]:
        """The nodes' event-loop lag histograms summed: {upper bound s: samples <= it}, with
        ``inf`` the number of samples (``roomcast_event_loop_lag_seconds``)."""
        total: dict[float, int] = {}
        for n in self.node_procs:
            with urllib.request.urlopen(f"{n.internal}/metrics", timeout=5) as r:
                text = r.read().decode()
            for m in re.finditer(r'^roomcast_event_loop_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$',
                                 text, re.M):
                le = float(m.group(1))
                total[le] = total.get(le, 0) + int(float(m.group(2)))
        return total


def lag_summary(before: dict[float, int], after: dict[float, int]) -> str:
    """'samples / over 5 ms / over 25 ms / over 100 ms' of the nodes' loop lag between two
    :meth:`Cluster.loop_lag` readings."""
    diff = {le: after.get(le, 0) - before.get(le, 0) for le in after}
    n = diff.get(float("inf"), 0)
    over = [n - diff.get(le, 0) for le in (0.005, 0.025, 0.1)]
    return f"{n} / {over[0]} / {over[1]} / {over[2]}"


def pin(pid: int, cpus: set[int]) -> None:
    """Restrict every thread of process ``pid`` to ``cpus`` (Linux)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:
            pass  # the thread ended meanwhile


def pin_split(cluster: Cluster) -> None:
    """NATS servers on CPU 0; edge nodes and this load generator on the other CPUs, as when
    NATS runs on its own machines. Needs at least two CPUs."""
    rest = set(range(1, os.cpu_count() or 1)) or {0}
    for server in cluster.nats_cluster.servers:
        pin(server.proc.pid, {0})
    for node in cluster.node_procs:
        pin(node.proc.pid, rest)
    pin(os.getpid(), rest)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def wait_until(pred, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def wait_listening(port: int, timeout: float = 10.0) -> None:
    """Return once something accepts TCP connections on 127.0.0.1:``port``; raise after
    ``timeout`` seconds."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"server on port {port} not listening")


def add_gen_gc_flag(ap) -> None:
    ap.add_argument("--gen-gc", action="store_true",
                    help="tune the load generator's garbage collector like a node's")


def tune_generator_gc(args) -> None:
    """With ``--gen-gc``: the load generator's own collector tuned as on the nodes
    (``node/lean.py``), once its connections are set up. The servers are unaffected."""
    if args.gen_gc:
        from roomcast.node.lean import tune_gc

        tune_gc()


def add_user_mode(ap) -> None:
    """The ``--same-user`` flag every scenario with many connections takes."""
    ap.add_argument("--same-user", action="store_true",
                    help="every connection logs in as one user (the old mode: presence sees "
                         "one member); default: a distinct user per connection")
