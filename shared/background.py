"""Work the node can wait for, run in a child process at the kernel's idle priority (SCHED_IDLE):
it takes only CPU no workload wants, shares no GIL or heap lock with the service (a preempted
idle-priority thread holding either would stall the service's loop on a busy node), and its
memory peak leaves with it. Training the store's zstd dictionary is the case: ~0.5 s of CPU and
a peak of ~10x its samples, due just when a burst of events arrives."""
from __future__ import annotations

import asyncio
import os
import sys

IDLE_CHILD_TIMEOUT_S = 600.0  # an idle-priority child on a node that is never idle can wait long


class ChildFailed(RuntimeError):
    """The child exited non-zero; the text has its status and stderr."""


def lower_to_idle() -> bool:
    """This process (its calling thread: call it first, before any other) to SCHED_IDLE.
    False where the policy is missing (not Linux): it then runs at normal priority."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return True
    except (AttributeError, OSError):
        return False


async def idle_child(module: str, data: bytes, timeout_s: float = IDLE_CHILD_TIMEOUT_S) -> bytes:
    """`python -m module` (which calls lower_to_idle() first) with `data` on stdin: its stdout.
    Cancelling the await kills the child."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(data), timeout_s)
    except BaseException:  # cancelled or timed out: no orphan left working
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        raise ChildFailed(f"{module} exited {proc.returncode}: {err.decode(errors='replace').strip()[-500:]}")
    return out
