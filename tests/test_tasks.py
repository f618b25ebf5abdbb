"""shared/tasks.py: cancelling a service's loop ends it even when Python 3.11's asyncio.wait_for
swallows the cancel (a probe's plan loop once kept a test's teardown waiting until its timeout)."""
from __future__ import annotations

import asyncio

from shared.tasks import cancel_and_wait


async def test_a_cancel_that_wait_for_swallows_is_repeated():
    loop = asyncio.get_running_loop()
    asked: list[asyncio.Future] = []

    async def asker() -> None:          # as ProbeService._ask_plan: a request, a pause, again
        while True:
            asked.append(loop.create_future())
            await asyncio.wait_for(asked[-1], 10)
            await asyncio.sleep(0.01)

    task = asyncio.create_task(asker())
    await asyncio.sleep(0.05)
    asked[-1].set_result("reply")       # the reply and the cancel in the same step
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.3)
    if done:                            # a Python whose wait_for keeps the cancel: nothing to repeat
        assert task.cancelled()
        return
    assert task.cancelling() == 1       # lost: the loop runs on
    await asyncio.wait_for(cancel_and_wait(task), 5)
    assert task.cancelled()


async def test_tasks_that_fail_or_are_none_are_waited_quietly():
    async def fails() -> None:
        raise RuntimeError("boom")

    async def sleeps() -> None:
        await asyncio.sleep(60)
    bad, slow = asyncio.create_task(fails()), asyncio.create_task(sleeps())
    await asyncio.sleep(0)
    await cancel_and_wait(bad, None, slow)
    assert bad.done() and slow.cancelled()
