"""``.roomcast/dev.env``: what a running ``roomcast dev`` (``make run``) cluster picked — NATS
URLs, the JWT secret, node URLs, a dev token — so that the other commands work against it
with no flags (``roomcast admin rooms``, ``roomcast token``, ``roomcast publish``, ``roomcast
chat``, ``examples/``).

The file is ``KEY=value`` lines, mode 0600, written when the cluster is up and removed when it
stops. It names the PID of ``roomcast dev``: a file left by one that was killed is ignored.
Values already in the environment (or given as flags) always win.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Where ``roomcast dev`` writes the file (relative to the directory it runs in) and the other
#: commands look for it; ``ROOMCAST_DEV_ENV`` names another path.
DEFAULT_PATH = Path(".roomcast") / "dev.env"


def path() -> Path:
    return Path(os.environ.get("ROOMCAST_DEV_ENV") or DEFAULT_PATH)


def write(values: dict[str, str], where: Path | None = None) -> Path:
    where = where or path()
    where.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Written by `roomcast dev` (make run) while it runs; removed when it stops.",
             "# roomcast admin/token/publish/history/chat/tail and examples/ read it.",
             f"ROOMCAST_DEV_PID={os.getpid()}"]
    lines += [f"{k}={v}" for k, v in values.items()]
    fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    return where


def remove(where: Path | None = None) -> None:
    try:
        (where or path()).unlink()
    except FileNotFoundError:
        pass


def read(where: Path | None = None) -> dict[str, str]:
    """The values of a live dev cluster's file; empty when there is none (or it is stale)."""
    try:
        text = (where or path()).read_text()
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            values[key.strip()] = value.strip()
    try:
        os.kill(int(values.pop("ROOMCAST_DEV_PID", "")), 0)
    except (ValueError, ProcessLookupError):
        return {}  # left behind by a dev cluster that is gone
    except PermissionError:
        pass  # alive, another user's
    return values


def apply_defaults(where: Path | None = None) -> list[str]:
    """Put the dev cluster's values into the environment where nothing is set; returns the
    keys it set."""
    applied = []
    for key, value in read(where).items():
        if key.startswith("ROOMCAST_") and key not in os.environ:
            os.environ[key] = value
            applied.append(key)
    return applied
