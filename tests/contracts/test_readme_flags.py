"""README.md's configuration table lists every `roomcast node` flag with its variable."""

from __future__ import annotations

import re
from pathlib import Path

from roomcast.cli import build_parser

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_every_node_flag_is_in_the_configuration_table():
    parser = build_parser()
    node = parser._subparsers._group_actions[0].choices["node"]  # argparse has no public way
    flags = [s for a in node._actions for s in a.option_strings
             if s.startswith("--") and s != "--help"]
    rows = set(re.findall(r"^\| `(--[a-z0-9-]+)`", README, re.M))
    rows |= {f for line in re.findall(r"^\| (`--[^|]*)\|", README, re.M)
             for f in re.findall(r"`(--[a-z0-9-]+)`", line)}
    missing = [f for f in flags if f not in rows]
    assert not missing, f"README configuration table lacks {missing}"
