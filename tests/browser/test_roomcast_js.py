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
    assert "# fail 0" in out.stdout and "# pass 6" in out.stdout, out.stdout
