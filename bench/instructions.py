"""Instructions per connect: one edge process run under valgrind's callgrind, counted while
``--users`` distinct users connect and join one room (the load of :mod:`bench.connects`).

    python -m bench.instructions [--users 2000] [--systems roomcast nopresence relay
                                                           relay-wsconn relay-callbacks]

CPU time on a shared 2-core VM moves 10-15 % between runs of the same code, which hides the
few-percent steps a connect is made cheaper by. Instructions executed move much less: the same
code counts within ~1 % in runs back to back, and up to ~3 % apart over an hour (work done per
time interval — presence batches, event stores, member counts — depends on how slowly the
process runs, hence on the machine's load). Compare two versions in interleaved runs
(A, B, A, B), and trust differences of a few percent only when they repeat. Each
system gets a fresh 3-server NATS cluster and two edge processes; the first runs under
``valgrind --tool=callgrind`` with instrumentation on only from the first upgrade to the last
``joined`` (startup, a warm-up of 20 connects and the closes are not counted; the load is
:func:`bench.connects.connect_all`'s), the second normally, so the first also applies the
presence deltas of the second's joins, as in :mod:`bench.connects`. Printed: user-space
instructions of the measured process per connect to it (the kernel's share is not counted:
read CPU time from :mod:`bench.connects` for that), ~10 connects in flight (callgrind slows
the process ~50x).

Needs ``valgrind`` (``apt-get install valgrind``); not part of ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from bench.connects import connect_all
from bench.harness import Cluster, machine
from bench.relays import KINDS as RELAYS
from bench.relays import started
from roomcast.dev import NodeProcess
from roomcast.natsserver import free_port

SYSTEMS = ("roomcast", "nopresence", *RELAYS)
#: Upgrades in flight: callgrind slows the measured process ~50x.
CONCURRENCY = 10


class Callgrind:
    """``python …`` under callgrind, instrumentation off until :meth:`measure`."""

    def __init__(self, workdir: str) -> None:
        self.out = os.path.join(workdir, "callgrind.out.%p")
        self.wrapper = os.path.join(workdir, "python")
        with open(self.wrapper, "w") as f:
            f.write(f"#!/bin/sh\nexec valgrind --tool=callgrind --instr-atstart=no "
                    f"--callgrind-out-file={self.out} {sys.executable} \"$@\" "
                    f"2>>{workdir}/valgrind.log\n")
        os.chmod(self.wrapper, 0o755)

    def control(self, pid: int, *flags: str) -> None:
        subprocess.run(["callgrind_control", *flags, str(pid)], check=True, capture_output=True)

    def total(self, pid: int) -> int:
        counts = [int(m.group(1)) for f in glob.glob(self.out.replace("%p", f"{pid}*"))
                  if (m := re.search(r"^totals: (\d+)", open(f).read(), re.M))]
        return max(counts, default=0)


def measure(system: str, users: int, workdir: str) -> float:
    """Instructions per connect of the first of two edge processes."""
    cg = Callgrind(workdir)
    env = {"ROOMCAST_LOG_LEVEL": "warning", "ROOMCAST_RATE_LIMIT": "100000",
           "ROOMCAST_RATE_BURST": "100000", "ROOMCAST_MAX_CONNECTIONS": str(users * 2)}
    if system == "nopresence":
        env["ROOMCAST_PRESENCE"] = "false"
    if system in RELAYS:
        paths = [f"/ws?u={i}" for i in range(users)]
        warm = [f"/ws?u=w{i}" for i in range(20)]
        with started(system, [cg.wrapper, sys.executable], 600) as (_, procs, ports):
            return _window(cg, procs[0].pid, ports, warm, paths)
    with Cluster(nodes=0, nats=3, env=env) as cluster:
        real, sys.executable = sys.executable, cg.wrapper  # NodeProcess starts sys.executable
        try:
            measured = NodeProcess("measured", "127.0.0.1", free_port(), cluster.nats_cluster.urls,
                                   cluster.key, cluster.nats_cluster.replicas, env)
        finally:
            sys.executable = real
        other = NodeProcess("other", "127.0.0.1", free_port(), cluster.nats_cluster.urls,
                            cluster.key, cluster.nats_cluster.replicas, env)
        try:
            other.wait_ready()
            measured.wait_ready(900)
            return _window(cg, measured.proc.pid, [measured.port, other.port],
                           cluster.paths("w", 20), cluster.paths("u", users))
        finally:
            measured.stop(120)
            other.stop()


def _window(cg: Callgrind, pid: int, ports: list[int], warm: list[str],
            paths: list[str]) -> float:
    """Counted from the first upgrade to the last ``joined`` (``connect_all`` calls its
    ``edge_cpu`` hook there, before it closes the connections)."""
    asyncio.run(connect_all(ports, warm, CONCURRENCY))  # a room's first join: not counted
    time.sleep(1)
    cg.control(pid, "-z")
    cg.control(pid, "-i", "on")
    out = asyncio.run(connect_all(ports, paths, CONCURRENCY,
                                  edge_cpu=lambda: cg.control(pid, "-i", "off")))
    cg.control(pid, "-d")
    return cg.total(pid) / (out["joined"] / len(ports))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS,
                        default=["roomcast", "nopresence", "relay"])
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("bench.instructions needs valgrind (apt-get install valgrind)")
    print(f"# {machine()}; {args.users} distinct users into one room over 2 processes, "
          f"the first under callgrind")
    print("| system | instructions per connect |")
    print("|---|---|")
    for system in args.systems:
        with tempfile.TemporaryDirectory(prefix="roomcast-callgrind-") as workdir:
            print(f"| {system} | {measure(system, args.users, workdir):,.0f} |", flush=True)


if __name__ == "__main__":
    main()
