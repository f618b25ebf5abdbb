"""`eunomia up`: an embedded nats-server and every service in one process.

Each service runs as its own task; one that fails is restarted with
exponential backoff (counted), the others carry on.
"""
from __future__ import annotations

import asyncio
import dataclasses
import os
from contextlib import AsyncExitStack

from shared import bus as busmod
from shared import busauth, log
from shared.config import CommonConfig
from shared.gc_tuning import settle_gc
from shared.natsserver import NatsServer, NatsServerConfig
from shared.stats import Stats
from shared.streams import ensure_streams

from .config import SupervisorConfig
from .registry import SPECS
from .runtime_api import PodmanApi

_log = log.get("supervisor")
SERVICE_STOP_S = 4.0  # services get this long to stop on their own; the whole exit is bounded in run_main


def private_dir(path) -> None:
    """The data directory: created 0700 (events, the database and credentials are not for other users)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


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
            private_dir(self.common.data_dir)
            # one identity per service, created on the first start (shared/busauth.py)
            creds = busauth.ensure(busauth.creds_dir(self.common.data_dir), busauth.users([self.common.node]))
            self.nats = await self._stack.enter_async_context(NatsServer(NatsServerConfig(
                port=self.cfg.nats_port, store_dir=self.common.data_dir / "nats", auth=creds)))
            self.common = dataclasses.replace(self.common, nats_url=self.nats.url)
        async with busmod.connect(self.common.servers, self.stats, name="supervisor",
                                  cred=busauth.for_role(self.common.data_dir, busauth.ADMIN, self.common.node)) as bus:
            await ensure_streams(bus.js)
        if self.cfg.podman_api and "enricher" in self.cfg.services:
            self.podman = await self._stack.enter_async_context(PodmanApi())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def _overrides(self, name: str) -> dict:
        kw = dict(self.cfg.overrides.get(name, {}))
        if name == "probe":  # our own helpers (nats-server, podman API) are children of this process
            kw.setdefault("exclude_children", True)
        return kw

    async def _keep_running(self, name: str, stop: asyncio.Event) -> None:
        delay = self.cfg.restart_backoff_s
        while not stop.is_set():
            try:
                svc = SPECS[name].build(self.common, **self._overrides(name))
                async with svc:
                    self.started[name] = svc
                    settle_gc()  # what it holds for good, out of the collector's walks
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

    async def _keep_nats_running(self, stop: asyncio.Event) -> None:
        """Restart the embedded nats-server when it dies (its JetStream store survives)."""
        delay = self.cfg.restart_backoff_s
        while not stop.is_set():
            died = asyncio.create_task(self.nats.proc.wait())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({died, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if stop.is_set():
                died.cancel()
                return
            self.stats.inc("nats_server_restarts_total")
            _log.error("nats-server exited with %s; restarting", self.nats.proc.returncode)
            try:
                await self.nats.start()
                delay = self.cfg.restart_backoff_s
                async with busmod.connect(self.common.servers, self.stats, name="supervisor",
                                          cred=busauth.for_role(self.common.data_dir, busauth.ADMIN,
                                                                self.common.node)) as bus:
                    await ensure_streams(bus.js)
            except Exception:
                _log.exception("restarting nats-server failed; retrying in %.1fs", delay)
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except asyncio.TimeoutError:
                    pass
                delay = min(delay * 2, self.cfg.restart_backoff_max_s)

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [asyncio.create_task(self._keep_running(n, stop), name=n) for n in self.cfg.services]
        if self.nats is not None:
            tasks.append(asyncio.create_task(self._keep_nats_running(stop), name="nats-server"))
        await stop.wait()
        _, late = await asyncio.wait(tasks, timeout=SERVICE_STOP_S)
        for t in late:  # a service that does not wind down in time is cancelled (its exit still runs)
            _log.error("%s did not stop within %.0f s: cancelling it", t.get_name(), SERVICE_STOP_S)
            t.cancel()
        if late:
            await asyncio.wait(late, timeout=1.0)
