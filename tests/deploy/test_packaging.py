"""The package builds cleanly: no setuptools warnings, and the wheel carries the browser client,
its npm package.json and the demo page (served by every node)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_the_wheel_builds_without_warnings_and_ships_the_static_files(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                          "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Warning" not in out.stdout + out.stderr, out.stdout + out.stderr
    [wheel] = tmp_path.glob("roomcast-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("roomcast.js", "demo.js", "index.html", "package.json"):
        assert f"roomcast/node/static/{f}" in names
