"""ApiService: the aiohttp app inside the supervisor's event loop."""
from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack

from aiohttp import web

from services.perf.client import PerfBoard
from services.store.client import StoreClient
from shared import busauth, log, subjects
from shared.bus import connect
from shared.config import CommonConfig
from shared.stats import Stats, StatsPublisher

from .auth import load_or_create_token
from .config import ApiConfig
from .live import AlertHub
from .metrics import MetricsRegistry
from .routes import build_app

_log = log.get("api")


class ApiService:
    name = "api"

    def __init__(self, cfg: ApiConfig, common: CommonConfig) -> None:
        self.cfg, self.common = cfg, common
        self.stats = Stats("api")
        self.token = cfg.token or ""
        self.url = ""          # http://host:port once listening
        self.hub = AlertHub(self.stats, cfg.ws_queue, cfg.ws_max_clients)
        self.metrics = MetricsRegistry(self.stats, cfg.stats_stale_s, cfg.stats_forget_s,
                                       cfg.max_series_per_metric, self._container_labels)
        self.perf = PerfBoard(cfg.stats_stale_s, self.stats)  # latest eunomia.perf.<node> per node
        self.metrics.perf = self.perf
        self._containers_at = -1e9
        self._containers: tuple[dict[str, str], dict[str, int]] = ({}, {})
        self._containers_lock = asyncio.Lock()
        self._stack = AsyncExitStack()
        self._runner: web.AppRunner | None = None

    @property
    def dashboard_url(self) -> str:
        """The dashboard (it asks for the token once; the token is never printed or logged)."""
        return f"{self.url}/"

    async def __aenter__(self) -> "ApiService":
        try:
            if not self.token:
                self.token = await asyncio.to_thread(load_or_create_token, self.cfg.token_path(self.common.data_dir))
            self.bus = await self._stack.enter_async_context(
                connect(self.common.servers, self.stats, name=f"eunomia-api-{self.common.node}",
                        cred=busauth.for_role(self.common.data_dir, "api", self.common.node)))
            self.store = StoreClient(self.bus, timeout=self.cfg.store_timeout_s)
            await self.hub.start(self.bus)
            await self.bus.subscribe_raw(subjects.STATS_ALL, self.metrics.on_message)
            await self.bus.subscribe_raw(subjects.PERF_ALL, self.perf.on_message)
            await self._stack.enter_async_context(
                StatsPublisher(self.bus, self.stats, self.common.node, self.common.stats_interval))
            self._runner = web.AppRunner(build_app(self), handle_signals=False, access_log=None,
                                         shutdown_timeout=2.0)
            await self._runner.setup()
            self._stack.push_async_callback(self._runner.cleanup)
            self._stack.push_async_callback(self.hub.close_all)
            await web.TCPSite(self._runner, self.cfg.host, self.cfg.port).start()
            host, port = self._runner.addresses[0][:2]
            self.url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
            _log.info("API listening on %s; dashboard %s/ (token in %s)", self.url, self.url,
                      "config" if self.cfg.token else self.cfg.token_path(self.common.data_dir))
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()

    async def _container_labels(self) -> tuple[dict[str, str], dict[str, int]]:
        """(cgroup_id -> container label, container label -> stored events), cached; stale on failure."""
        async with self._containers_lock:
            if time.monotonic() - self._containers_at < self.cfg.containers_cache_s:
                return self._containers
            self._containers_at = time.monotonic()
            try:
                rows = await asyncio.wait_for(self.store.containers(), min(2.0, self.cfg.store_timeout_s))
            except Exception as e:
                self.stats.inc("api_container_lookup_failed_total")
                _log.debug("container lookup for /metrics failed: %s", e)
                return self._containers
            cgroups: dict[str, str] = {}
            stored: dict[str, int] = {}
            for c in rows if isinstance(rows, list) else []:
                if not isinstance(c, dict) or not c.get("id"):
                    continue
                label = str(c.get("name") or str(c["id"])[:12])
                if c.get("cgroup_id") is not None:
                    cgroups[str(c["cgroup_id"])] = label
                if isinstance(c.get("events"), int):
                    stored[label] = stored.get(label, 0) + c["events"]
            self._containers = (cgroups, stored)
            return self._containers
