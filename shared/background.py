"""Work the node can wait for, run at the kernel's idle priority (SCHED_IDLE): it takes only CPU
that no workload wants, so a burst of events on a busy node does not also pay for it
(training the store's zstd dictionary is the case: ~0.5 s of CPU, due just when events flow)."""
from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def _lower_this_thread() -> None:
    try:  # pid 0: the calling thread; SCHED_IDLE is Linux's
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        pass  # elsewhere it runs at normal priority


async def at_idle_priority(fn: Callable[[], T], name: str = "idle-priority") -> T:
    """fn() in a thread of its own at SCHED_IDLE (a pool thread would keep the policy for its next
    work). Awaiting does not hold the loop; fn must not need the GIL for long (zstd releases it).
    A cancelled await leaves the thread to finish unheard."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not fut.done():
            fut.set_result(value) if ok else fut.set_exception(value)

    def run() -> None:
        _lower_this_thread()
        try:
            ok, value = True, fn()
        except BaseException as e:  # handed to the awaiting task
            ok, value = False, e
        try:
            loop.call_soon_threadsafe(settle, ok, value)
        except RuntimeError:  # the loop has closed meanwhile
            pass

    threading.Thread(target=run, name=name, daemon=True).start()
    return await fut
