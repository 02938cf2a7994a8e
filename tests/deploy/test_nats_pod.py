"""The NATS pod's commands, exactly as the manifest has them, against a real nats-server: the
preStop hook enters lame-duck mode with the server's stdout on a pipe (as in a container), and
JetStream's file store is sized from the data volume (docs/deploy.md)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
import urllib.request

import pytest

from roomcast.natsserver import free_port, nats_server_binary
from tests.deploy.k8s import KUBECTL, OVERLAYS, find, render

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")


def nats_pod():
    objs = render(OVERLAYS[0])
    container = find(objs, "StatefulSet", "nats")["spec"]["template"]["spec"]["containers"][0]
    conf = next(o for o in objs if o["kind"] == "ConfigMap"
                and o["metadata"]["name"].startswith("nats-config"))["data"]["nats.conf"]
    return container, conf


def test_prestop_enters_lame_duck_mode_with_stdout_on_a_fifo(tmp_path):
    """The manifest's preStop command, pointed at a real server whose stdout is a FIFO (a pipe,
    as /proc/1/fd/1 is in a container), returns at once and the server enters lame-duck mode
    within seconds."""
    container, conf = nats_pod()
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    pid_file = re.search(r'^pid_file:\s*"([^"]+)"', conf, re.M).group(1)
    assert command == ["nats-server", "--signal", f"ldm={pid_file}"]
    assert any(m["mountPath"] == os.path.dirname(pid_file) for m in container["volumeMounts"])
    local_pid = tmp_path / "nats.pid"
    (tmp_path / "nats.conf").write_text(
        f'listen: 127.0.0.1:{free_port()}\npid_file: "{local_pid}"\n'
        "lame_duck_duration: 30s\nlame_duck_grace_period: 1s\n")
    fifo = tmp_path / "stdout"
    os.mkfifo(fifo)
    lines: list[str] = []

    def read() -> None:
        with open(fifo, errors="replace") as f:
            for line in f:
                lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    with open(fifo, "wb") as out:
        server = subprocess.Popen([nats_server_binary(), "-c", str(tmp_path / "nats.conf")],
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        while not (local_pid.exists() and local_pid.read_text().strip()):
            assert time.monotonic() < deadline, "no pid file"
            time.sleep(0.05)
        signal_cmd = [nats_server_binary(), *command[1:-1], f"ldm={local_pid}"]
        done = subprocess.run(signal_cmd, capture_output=True, text=True, timeout=10)
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 10
        while not any("lame duck" in line.lower() for line in lines):
            assert time.monotonic() < deadline, "".join(lines[-10:])
            time.sleep(0.05)
    finally:
        server.kill()
        server.wait(5)


def test_jetstream_file_store_is_sized_from_the_data_volume(tmp_path):
    """The container's start command sets max_file_store to 90 % of the data volume's size,
    and nats-server reads it from nats.conf (checked on /varz)."""
    container, conf = nats_pod()
    assert container["command"][:2] == ["/bin/sh", "-c"]
    script = container["command"][2]
    assert "max_file_store: $NATS_MAX_FILE_STORE" in conf
    # The same script, with this machine's file system as the volume and a stand-in server
    # that prints what it was given.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "nats-server"
    fake.write_text('#!/bin/sh\necho "$NATS_MAX_FILE_STORE $*"\n')
    fake.chmod(0o755)
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=10,
                         env={"PATH": f"{bindir}:/usr/bin:/bin", "NATS_DATA_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    value, args = out.stdout.split(" ", 1)
    assert args.strip() == "--config /etc/nats/nats.conf"
    st = os.statvfs(tmp_path)
    total = st.f_blocks * st.f_frsize
    assert abs(int(value) - 0.9 * total) <= 0.01 * total, (value, total)
    # nats-server takes it from the environment, as the real config does.
    http = free_port()
    (tmp_path / "js.conf").write_text(
        f"listen: 127.0.0.1:{free_port()}\nhttp: 127.0.0.1:{http}\n"
        f'jetstream {{\n  store_dir: "{tmp_path / "js"}"\n  max_memory_store: 64MB\n'
        "  max_file_store: $NATS_MAX_FILE_STORE\n}\n")
    server = subprocess.Popen([nats_server_binary(), "-c", str(tmp_path / "js.conf")],
                              env={**os.environ, "NATS_MAX_FILE_STORE": value},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/varz", timeout=1) as r:
                    varz = json.loads(r.read())
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        assert varz["jetstream"]["config"]["max_storage"] == int(value)
    finally:
        server.kill()
        server.wait(5)
