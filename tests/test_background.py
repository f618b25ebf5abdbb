"""shared/background.at_idle_priority: work run in a thread of its own at SCHED_IDLE."""
import asyncio
import os
import threading
import time

import pytest

from shared.background import at_idle_priority


async def test_work_runs_at_idle_priority_off_the_loop_and_returns_its_result():
    seen = {}

    def work():
        seen["policy"], seen["thread"] = os.sched_getscheduler(0), threading.get_ident()
        time.sleep(0.3)
        return 42

    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    t = asyncio.create_task(ticker())
    assert await at_idle_priority(work) == 42
    t.cancel()
    assert seen["policy"] == os.SCHED_IDLE and seen["thread"] != threading.get_ident()
    assert ticks >= 10  # the loop went on while the work ran
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the caller's thread is left alone


async def test_an_error_in_the_work_reaches_the_awaiting_task():
    def work():
        raise ValueError("bad samples")

    with pytest.raises(ValueError, match="bad samples"):
        await at_idle_priority(work)
