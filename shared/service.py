"""What a service is, to the supervisor and the CLI.

A service is an async context manager (connects, loads, subscribes on
enter; releases everything on exit) with `run(stop)`, which returns once
`stop` is set. Signal handlers only set that Event.
"""
from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Service(Protocol):
    name: str

    async def __aenter__(self) -> "Service": ...
    async def __aexit__(self, *exc: object) -> None: ...
    async def run(self, stop: asyncio.Event) -> None: ...


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGINT/SIGTERM only set `stop`; the services wind down on their own."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


@asynccontextmanager
async def running(svc: Service) -> AsyncIterator[Service]:
    """`svc` entered and running in a task for the body; stopped and awaited after."""
    stop = asyncio.Event()
    async with svc:
        task = asyncio.create_task(svc.run(stop), name=f"run {svc.name}")
        try:
            yield svc
        finally:
            stop.set()
            await task


async def run_service(svc: Service, stop: asyncio.Event) -> None:
    """Run `svc` as a process's service (and keep the process's heap trimmed after bursts)."""
    from .gc_tuning import settle_gc
    from .heap import keep_trimmed
    from .tasks import cancel_and_wait
    async with svc:
        settle_gc()
        trimmer = asyncio.create_task(keep_trimmed(stop), name="heap trim")
        try:
            await svc.run(stop)
        finally:
            await cancel_and_wait(trimmer)


SHUTDOWN_DEADLINE_S = 6.5  # a stop request ends the process within this (env EUNOMIA_SHUTDOWN_DEADLINE);
# the kernel then still has to tear down the probe's programs (seconds on a loaded machine): 10 s in all


def shutdown_deadline_s() -> float:
    raw = os.environ.get("EUNOMIA_SHUTDOWN_DEADLINE", "")
    try:
        return float(raw) if raw else SHUTDOWN_DEADLINE_S
    except ValueError:
        return SHUTDOWN_DEADLINE_S


async def _exit_deadline(stop: asyncio.Event, deadline: float) -> None:
    """Once `stop` is set, a thread (independent of the event loop, which may be what is stuck)
    ends the process after `deadline` s: every thread's stack goes to stderr, exit status 3."""
    await stop.wait()
    t = threading.Thread(target=_force_exit_after, args=(deadline,), name="exit-deadline", daemon=True)
    t.start()


def _force_exit_after(deadline: float) -> None:
    time.sleep(deadline)
    from . import log
    log.get("service").error("shutdown did not finish within %.0f s: forced exit; stacks follow", deadline)
    faulthandler.dump_traceback(all_threads=True)
    sys.stderr.flush()
    os._exit(3)


def run_main(make_service: Callable[[], Service], use_uvloop: bool = True) -> None:
    """Run one service as a process until SIGINT/SIGTERM."""
    from . import log

    log.setup()
    from .gc_tuning import tune_gc
    from .heap import tune_malloc
    tune_malloc()
    tune_gc()
    faulthandler.register(signal.SIGUSR2, all_threads=True)  # `kill -USR2`: every thread's stack on stderr

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        watchdog = asyncio.create_task(_exit_deadline(stop, shutdown_deadline_s()))
        try:
            await run_service(make_service(), stop)
        finally:
            watchdog.cancel()  # the thread it started (if any) still bounds the interpreter's exit

    run_loop(main(), use_uvloop)


def run_loop(main: Coroutine[Any, Any, T], use_uvloop: bool = True) -> T:
    """Run `main` to completion on uvloop, the services' event loop (asyncio's own without it)."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)
