"""`eunomia up`: an embedded nats-server and every service in one process.

Each service runs as its own task; one that fails is restarted with
exponential backoff (counted), the others carry on.
"""
from __future__ import annotations

import asyncio
import dataclasses
from contextlib import AsyncExitStack

from shared import bus as busmod, log
from shared.config import CommonConfig
from shared.natsserver import NatsServer, NatsServerConfig
from shared.stats import Stats
from shared.streams import ensure_streams

from .config import SupervisorConfig
from .registry import SPECS
from .runtime_api import PodmanApi

_log = log.get("supervisor")


class Supervisor:
    name = "supervisor"

    def __init__(self, cfg: SupervisorConfig, common: CommonConfig) -> None:
        self.cfg, self.common = cfg, common
        self.stats = Stats("supervisor")
        self.nats: NatsServer | None = None
        self.podman: PodmanApi | None = None
        self._stack = AsyncExitStack()
        self.started: dict[str, object] = {}   # name -> running service instance

    async def __aenter__(self) -> "Supervisor":
        if self.cfg.embedded_nats:
            self.common.data_dir.mkdir(parents=True, exist_ok=True)
            self.nats = await self._stack.enter_async_context(NatsServer(NatsServerConfig(
                port=self.cfg.nats_port, store_dir=self.common.data_dir / "nats")))
            self.common = dataclasses.replace(self.common, nats_url=self.nats.url)
        async with busmod.connect(self.common.servers, self.stats, name="supervisor") as bus:
            await ensure_streams(bus.js)
        if self.cfg.podman_api and "enricher" in self.cfg.services:
            self.podman = await self._stack.enter_async_context(PodmanApi())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def _overrides(self, name: str) -> dict:
        kw = dict(self.cfg.overrides.get(name, {}))
        if name == "probe":  # our own helpers' activity is not the monitored system's
            helpers = (self.nats.pid if self.nats else None, self.podman.pid if self.podman else None)
            kw.setdefault("exclude_pids", tuple(p for p in helpers if p))
        return kw

    async def _keep_running(self, name: str, stop: asyncio.Event) -> None:
        delay = self.cfg.restart_backoff_s
        while not stop.is_set():
            try:
                svc = SPECS[name].build(self.common, **self._overrides(name))
                async with svc:
                    self.started[name] = svc
                    _log.info("%s running", name)
                    delay = self.cfg.restart_backoff_s
                    await svc.run(stop)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                self.stats.inc("service_restarts_total", service=name)
                _log.exception("%s failed; restarting in %.1fs", name, delay)
            finally:
                self.started.pop(name, None)
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except asyncio.TimeoutError:
                pass
            delay = min(delay * 2, self.cfg.restart_backoff_max_s)

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [asyncio.create_task(self._keep_running(n, stop), name=n) for n in self.cfg.services]
        await stop.wait()
        await asyncio.gather(*tasks, return_exceptions=True)
