"""The outcome of the background scenarios (tests/background.py), judged here: a scenario that
failed fails this test with its own error."""

from __future__ import annotations

import pytest

from tests import background


@pytest.mark.timeout(600)
def test_background_scenarios_passed():
    running = background.started()
    assert running, "no background scenario was started (tests/browser/test_token_refresh.py)"
    for name, fut in running.items():
        fut.result(timeout=540)  # raises the scenario's own assertion or error
        assert fut.done(), name
