"""Container name, image and labels from the Docker-compatible Engine API.

GET /containers/<id>/json over a unix socket (podman system service or
dockerd). Answers are cached with a TTL, failures with a shorter one; a
missing or unreachable socket is logged once (until it comes back) and the
caller gets None, i.e. an id-only container. Lookups never outlast
`timeout`, and one lookup per id runs at a time however many events ask.
"""
from __future__ import annotations

import asyncio
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import aiohttp
import orjson

from shared import log
from shared.stats import Stats

_log = log.get("enricher.runtime")

K8S_POD = "io.kubernetes.pod.name"
K8S_NS = "io.kubernetes.pod.namespace"
K8S_CONTAINER = "io.kubernetes.container.name"


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    image: str
    labels: dict[str, str] = field(default_factory=dict)


def parse_inspect(body: dict) -> ContainerInfo:
    """The fields we use out of an Engine API container inspect answer."""
    cfg = body.get("Config") or {}
    labels = cfg.get("Labels") or {}
    return ContainerInfo(
        id=str(body.get("Id", "")),
        name=str(body.get("Name") or "").lstrip("/"),
        image=str(cfg.get("Image") or body.get("ImageName") or body.get("Image") or ""),
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
    )


def k8s_of(labels: dict[str, str]) -> dict | None:
    """`k8s` as in shared/schema.py from CRI container labels, or None."""
    pod, ns = labels.get(K8S_POD), labels.get(K8S_NS)
    if not pod and not ns:
        return None
    return {
        "pod": pod,
        "namespace": ns,
        "container": labels.get(K8S_CONTAINER),
        "labels": {k: v for k, v in labels.items()
                   if not k.startswith(("io.kubernetes.", "annotation.", "io.cri-containerd."))},
    }


# Event attributes that are not container labels (docker and podman mix labels into them).
EVENT_NON_LABELS = frozenset({"name", "image", "containerExitCode", "exitCode", "podId", "signal", "execID"})
WATCH_ACTIONS = frozenset({"create", "init", "start"})
WATCH_RETRY_S = 2.0
WATCH_REPLAY_S = 10


def info_from_event(ev: object) -> ContainerInfo | None:
    """Container info out of one Engine API event (create/init/start), else None."""
    if not isinstance(ev, dict) or ev.get("Type") != "container":
        return None
    if (ev.get("Action") or ev.get("status")) not in WATCH_ACTIONS:
        return None
    actor = ev.get("Actor") or {}
    attrs = actor.get("Attributes") or {}
    cid = actor.get("ID") or ev.get("id")
    if not isinstance(cid, str) or not isinstance(attrs, dict):
        return None
    return ContainerInfo(id=cid, name=str(attrs.get("name", "")).lstrip("/"),
                         image=str(attrs.get("image") or ev.get("from") or ""),
                         labels={str(k): str(v) for k, v in attrs.items() if k not in EVENT_NON_LABELS})


class RuntimeLookupError(Exception):
    """Why a lookup failed (for the counters and the log)."""


class RuntimeClient:
    """Async Engine API client with a bounded TTL cache."""

    def __init__(self, sockets: tuple[str, ...], timeout: float = 1.0, ttl: float = 60.0,
                 negative_ttl: float = 5.0, max_entries: int = 4096, stats: Stats | None = None) -> None:
        self.sockets, self.timeout, self.ttl, self.negative_ttl = sockets, timeout, ttl, negative_ttl
        self.max_entries = max_entries
        self._cache: OrderedDict[str, tuple[float, ContainerInfo | None]] = OrderedDict()
        self._inflight: dict[str, asyncio.Task] = {}
        self._session: aiohttp.ClientSession | None = None
        self._session_sock: str | None = None
        self._socket_down_logged = False
        self.stats = stats  # counts enricher_lookup_failures_total{source="runtime_api", reason}
        self.failures: dict[str, int] = {}  # reason -> count

    # --- lifecycle ---------------------------------------------------------
    async def __aenter__(self) -> "RuntimeClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in list(self._inflight.values()):
            t.cancel()
        for t in list(self._inflight.values()):
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        await self._close_session()

    async def _close_session(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session, self._session_sock = None, None

    def _socket(self) -> str | None:
        for s in self.sockets:
            if os.path.exists(s):
                return s
        return None

    async def _get_session(self) -> aiohttp.ClientSession:
        sock = self._socket()
        if sock is None:
            raise RuntimeLookupError("socket_missing")
        if self._session is None or self._session_sock != sock:
            await self._close_session()
            self._session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=sock),
                                                  timeout=aiohttp.ClientTimeout(total=self.timeout))
            self._session_sock = sock
        return self._session

    # --- lookups -------------------------------------------------------------
    def cached(self, cid: str) -> tuple[bool, ContainerInfo | None]:
        """(fresh entry present, info)."""
        hit = self._cache.get(cid)
        if hit is None or hit[0] < time.monotonic():
            return False, hit[1] if hit else None
        return True, hit[1]

    def start(self, cid: str) -> asyncio.Task:
        """The lookup task of `cid` (started unless one is running)."""
        t = self._inflight.get(cid)
        if t is None:
            t = asyncio.create_task(self._lookup(cid), name=f"inspect {cid[:12]}")
            self._inflight[cid] = t
            t.add_done_callback(lambda _t, c=cid: self._inflight.pop(c, None))
        return t

    async def get(self, cid: str) -> ContainerInfo | None:
        fresh, info = self.cached(cid)
        if fresh:
            return info
        return await self.start(cid)

    async def _lookup(self, cid: str) -> ContainerInfo | None:
        try:
            info = await self.inspect(cid)
            ttl = self.ttl
            if self._socket_down_logged:
                _log.info("container runtime API answers again")
                self._socket_down_logged = False
        except RuntimeLookupError as e:
            reason = str(e)
            self.failures[reason] = self.failures.get(reason, 0) + 1
            if self.stats is not None:
                self.stats.inc("enricher_lookup_failures_total", source="runtime_api", reason=reason)
            info, ttl = None, self.negative_ttl
            if reason in ("socket_missing", "unreachable") and not self._socket_down_logged:
                self._socket_down_logged = True
                _log.warning("container runtime API not reachable at %s (%s): containers carry ids only",
                             " or ".join(self.sockets), reason)
        stale = self._cache.get(cid)
        if info is None and stale and stale[1] is not None:
            info = stale[1]  # keep the last good answer across a runtime hiccup
        self._cache[cid] = (time.monotonic() + ttl, info)
        self._cache.move_to_end(cid)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return info

    def remember(self, info: ContainerInfo) -> None:
        self._cache[info.id] = (time.monotonic() + self.ttl, info)
        self._cache.move_to_end(info.id)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    async def watch(self) -> None:
        """Follow the runtime's container events: names, images and labels are known
        from `create` on, before the container's first process (short-lived
        containers are often gone before an inspect could ask). Runs until cancelled."""
        logged = False
        while True:
            sock = self._socket()
            if sock is None:
                await asyncio.sleep(WATCH_RETRY_S)
                continue
            since = int(time.time()) - WATCH_REPLAY_S
            try:
                async with aiohttp.ClientSession(
                        connector=aiohttp.UnixConnector(path=sock),
                        timeout=aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_read=None)) as s:
                    params = {"filters": orjson.dumps({"type": ["container"]}).decode(), "since": str(since)}
                    async with s.get("http://localhost/events", params=params) as r:
                        if r.status != 200:
                            raise RuntimeLookupError(f"http_{r.status}")
                        if logged:
                            _log.info("following container events at %s again", sock)
                            logged = False
                        async for raw in r.content:
                            self._on_event_line(raw)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, RuntimeLookupError, ValueError, OSError) as e:
                if not logged:
                    _log.warning("container events at %s: %s; retrying every %g s", sock,
                                 e or type(e).__name__, WATCH_RETRY_S)
                    logged = True
            await asyncio.sleep(WATCH_RETRY_S)

    def _on_event_line(self, raw: bytes) -> None:
        raw = raw.strip()
        if not raw:
            return
        try:
            info = info_from_event(orjson.loads(raw))
        except orjson.JSONDecodeError:
            if self.stats is not None:
                self.stats.inc("enricher_runtime_events_malformed_total")
            return
        if info is not None and info.name and not self.cached(info.id)[0]:
            self.remember(info)
            if self.stats is not None:
                self.stats.inc("enricher_runtime_events_total")

    async def inspect(self, cid: str) -> ContainerInfo | None:
        """One uncached GET /containers/<id>/json; None if the runtime does not know `cid`."""
        session = await self._get_session()
        try:
            async with session.get(f"http://localhost/containers/{cid}/json") as r:
                if r.status == 404:
                    raise RuntimeLookupError("not_found")
                if r.status != 200:
                    raise RuntimeLookupError(f"http_{r.status}")
                body = await r.json(content_type=None)
        except asyncio.TimeoutError:
            raise RuntimeLookupError("timeout") from None
        except aiohttp.ClientConnectionError:
            await self._close_session()
            raise RuntimeLookupError("unreachable") from None
        except (aiohttp.ClientError, ValueError) as e:
            raise RuntimeLookupError(f"bad_reply:{type(e).__name__}") from None
        if not isinstance(body, dict):
            raise RuntimeLookupError("bad_reply:not_object")
        return parse_inspect(body)
