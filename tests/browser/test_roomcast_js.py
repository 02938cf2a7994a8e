"""Runs roomcast.js's logic tests (tests/browser/roomcast.test.mjs) with Node's test runner."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="node not installed: roomcast.js logic tests need it")
def test_roomcast_js_logic():
    """Backoff, close-code policy, dedupe, gap repair, offline publish queue, resume frame."""
    here = Path(__file__).parent
    out = subprocess.run([NODE, "--test", str(here / "roomcast.test.mjs")], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "# fail 0" in out.stdout and "# pass 7" in out.stdout, out.stdout


NPM = shutil.which("npm")


@pytest.mark.skipif(NODE is None or NPM is None, reason="node/npm not installed")
def test_the_client_is_an_npm_package(tmp_path):
    """node/static/package.json makes the shipped client installable and bundlable: `npm pack`
    holds roomcast.js only (no demo files), and an app that installs the tarball imports
    RoomcastClient by the package name."""
    import json

    static = Path(__file__).parents[2] / "node" / "static"
    out = subprocess.run([NPM, "pack", "--json", "--pack-destination", str(tmp_path)],
                         cwd=static, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    [packed] = json.loads(out.stdout)
    assert sorted(f["path"] for f in packed["files"]) == ["package.json", "roomcast.js"]
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text('{"name": "app", "version": "1.0.0", "type": "module"}')
    out = subprocess.run([NPM, "install", "--offline", "--no-audit", "--no-fund",
                          str(tmp_path / packed["filename"])], cwd=app, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    (app / "main.js").write_text(
        'import { RoomcastClient, retryable, REFUSALS } from "roomcast-client";\n'
        'console.log(typeof RoomcastClient, retryable(4500), REFUSALS[4510]);\n')
    out = subprocess.run([NODE, "main.js"], cwd=app, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "function false unauthorized", out.stdout + out.stderr
