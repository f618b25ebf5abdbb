"""What a service is, to the supervisor and the CLI.

A service is an async context manager (connects, loads, subscribes on
enter; releases everything on exit) with `run(stop)`, which returns once
`stop` is set. Signal handlers only set that Event.
"""
from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol


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
    async with svc:
        await svc.run(stop)


def run_main(make_service, use_uvloop: bool = True) -> None:
    """Run one service as a process until SIGINT/SIGTERM."""
    from . import log

    log.setup()

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await run_service(make_service(), stop)

    if use_uvloop:
        try:
            import uvloop
            uvloop.run(main())
            return
        except ImportError:
            pass
    asyncio.run(main())
