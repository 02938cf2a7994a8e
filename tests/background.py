"""Long, light scenarios that run in the background while the rest of the suite runs.

The 3-minute token-refresh soak (tests/browser/test_token_refresh.py) mostly waits: one
message a second, a refresh every 10 s. Run inline it would add 3 minutes of wall clock to
`make test`; instead its first test starts it on a thread with an event loop of its own, and
``tests/test_zz_background.py`` — collected after everything but the unit tests — waits for
its outcome and fails with its error. When that check is not part of the run (a single file or
test selected), the starting test waits for the scenario itself, so it is never left unjudged.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable

#: Set by conftest.py when the checking test is collected in this run.
CHECKED_LATER = False
_running: dict[str, concurrent.futures.Future] = {}


def start(name: str, scenario: Callable[[], Awaitable[None]]) -> concurrent.futures.Future:
    """Run ``scenario()`` on a daemon thread's own event loop; its future holds the outcome."""
    fut: concurrent.futures.Future = concurrent.futures.Future()

    def run() -> None:
        try:
            asyncio.run(scenario())
        except BaseException as exc:  # noqa: BLE001 - reported by the checking test
            fut.set_exception(exc)
        else:
            fut.set_result(None)

    threading.Thread(target=run, name=f"background-{name}", daemon=True).start()
    _running[name] = fut
    return fut


def started() -> dict[str, concurrent.futures.Future]:
    return dict(_running)
