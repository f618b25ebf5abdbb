"""Small asyncio task helpers every service uses."""
from __future__ import annotations

import asyncio
from typing import Any

from . import log

RECANCEL_S = 0.5   # a task still running this long after its cancel is cancelled again
STUCK_ROUNDS = 20  # ... and named in the log after this many rounds

_log = log.get("tasks")


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel the tasks and wait until every one has finished; their outcomes are not ours to raise.

    A cancel can be lost: Python 3.11's asyncio.wait_for (nats-py's request uses it) returns the
    result instead when the awaited call completes in the same step, and a loop around it then
    runs on. So a task still running after RECANCEL_S is cancelled again, until it ends."""
    mine = [t for t in tasks if t is not None]
    pending = set(mine)
    for t in pending:
        t.cancel()
    rounds = 0
    while pending:
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_S)
        rounds += 1
        for t in pending:
            if rounds == STUCK_ROUNDS:
                _log.warning("task %s still running %.0f s after its cancel: %s", t.get_name(),
                             rounds * RECANCEL_S, t.get_stack(limit=4))
            t.cancel()
    for t in mine:
        if not t.cancelled():
            t.exception()   # retrieved: no "exception was never retrieved" at exit
