"""NATS credentials never reach logs or error messages, and can be given as separate options
or files instead of inside the URL (docs/deploy.md). Real nats-server processes with auth."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request

import nkeys
import pytest

from roomcast.backplane.nats import NatsBackplane, NatsConfig
from roomcast.errors import BackplaneError
from roomcast.natsserver import NatsCluster, free_port
from tests.helpers import KEY, UNIT

PASSWORD = "S3cret-Pa55word-never-logged"


def start_node(args: list[str], log_path) -> tuple[subprocess.Popen, int]:
    """A `roomcast node` process; returns it and its internal port (/readyz)."""
    port, internal = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
    out = open(log_path, "wb")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(
        [sys.executable, "-m", "roomcast", "node", "--host", "127.0.0.1", "--port", str(port),
         "--internal-port", str(internal),
         "--jwt-key", KEY, "--node-id", "cred", "--log-level", "debug", "--log-format", "text",
         *args],
        env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True)
    out.close()
    return proc, internal


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


async def wait_for(pred, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not await asyncio.to_thread(pred):  # noqa: ASYNC110 - polling a process
            await asyncio.sleep(0.1)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def test_a_password_in_the_url_never_reaches_the_logs(tmp_path):
    """A node whose NATS URL carries a password, its NATS server restarted under it (reconnect
    logs, errors), then drained: not one line of its output holds the password."""
    conf = f'authorization {{ user: roomcast-node, password: "{PASSWORD}" }}'
    with NatsCluster(1, extra_conf=conf) as cluster:
        server = cluster.servers[0]
        url = f"nats://roomcast-node:{PASSWORD}@127.0.0.1:{server.port}"
        log = tmp_path / "node.log"
        proc, port = start_node(["--nats-url", url], log)
        try:
            await wait_for(lambda: ready(port), 30 * UNIT)
            server.kill()
            await wait_for(lambda: not ready(port), 30 * UNIT)
            server.start()
            server.wait_ready()
            await wait_for(lambda: ready(port), 30 * UNIT)
            await wait_for(lambda: b"nats reconnected" in log.read_bytes(), 30 * UNIT)
        finally:
            stop(proc)
        text = log.read_text()
        assert proc.returncode == 0, text[-2000:]
        assert "nats disconnected" in text and "nats reconnected to 127.0.0.1" in text
        assert PASSWORD not in text


async def test_start_up_errors_redact_the_url():
    """Unreachable NATS at start: the error names the servers without their credentials."""
    port = free_port()
    bp = NatsBackplane(NatsConfig(urls=(f"nats://u:{PASSWORD}@127.0.0.1:{port}",),
                                  connect_timeout=1.0))
    with pytest.raises(BackplaneError) as info:
        await bp.start()
    assert PASSWORD not in str(info.value) and "nats://***@127.0.0.1" in str(info.value)
    assert PASSWORD not in repr(bp.config)


async def test_user_and_password_file_and_an_nkey_seed_file_connect(tmp_path):
    """--nats-user with --nats-password-file, and --nats-creds with an NKey seed, both
    authenticate a node against a server that requires them (no secret on the command line)."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    conf = ("authorization { users = [\n"
            f'  {{user: roomcast-node, password: "{PASSWORD}"}}\n'
            f"  {{nkey: {public}}}\n]}}")
    with NatsCluster(1, extra_conf=conf) as cluster:
        url = cluster.urls[0]
        (tmp_path / "pw").write_text(PASSWORD + "\n")
        (tmp_path / "seed").write_bytes(seed)
        (tmp_path / "wrong").write_text("not-the-password\n")
        procs = []
        try:
            p1, port1 = start_node(["--nats-url", url, "--nats-user", "roomcast-node",
                                    "--nats-password-file", str(tmp_path / "pw")],
                                   tmp_path / "pw.log")
            p2, port2 = start_node(["--nats-url", url, "--nats-creds", str(tmp_path / "seed")],
                                   tmp_path / "nkey.log")
            procs += [p1, p2]
            await wait_for(lambda: ready(port1) and ready(port2), 30 * UNIT)
        finally:
            for p in procs:
                stop(p)
        for name in ("pw.log", "nkey.log"):
            text = (tmp_path / name).read_text()
            assert PASSWORD not in text and seed.decode() not in text
