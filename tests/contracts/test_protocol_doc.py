"""docs/protocol.md and roomcast.protocol describe the same protocol."""

from __future__ import annotations

import re
from pathlib import Path

from roomcast import protocol as p

DOC = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()


def test_every_error_code_is_documented_with_its_temporary_flag():
    """Each ErrorCode has a row in §5 saying whether it is temporary."""
    for code in p.ErrorCode:
        row = re.search(rf"^\| `{code.value}` \| (yes|no) \|", DOC, re.M)
        assert row, f"{code.value} missing from docs/protocol.md §5"
        assert (row.group(1) == "yes") is code.temporary, code.value


def test_every_close_code_is_documented():
    for code in p.CloseCode:
        assert re.search(rf"^\| {code.value} \|", DOC, re.M), f"close code {code.value}"


def test_every_frame_type_is_documented():
    server = ["welcome", "joined", "left", "ack", "message", "pong", "resumed", "reconnect",
              "error", "presence_diff", "presence_count", "presence_state", "history",
              "refreshed", "refresh_needed"]
    for t in list(p.CLIENT_TYPES) + server:
        assert f'"type": "{t}"' in DOC, t


def test_the_documented_limits_are_the_codes():
    """§2: the nesting limit and the integer range are the ones the decoder enforces."""
    assert f"at most **{p.MAX_DEPTH}** levels deep" in DOC
    assert p.MAX_SEQ == 2**53 - 1 and "2^53 − 1" in DOC
    assert f"at most {p.MAX_ROOM_LEN} characters" in DOC
