"""Container name, image and labels from the Docker-compatible Engine API.

GET /containers/<id>/json over a unix socket (podman system service,
dockerd). Caching, bounds and failure accounting: lookups.CachedLookups.
A missing or unreachable socket is logged once (until it comes back) and the
caller gets None, i.e. an id-only container. Lookups never outlast `timeout`.
"""
from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson

from shared import log

from .lookups import LOOKUP_BACKGROUND_S, CachedLookups, ContainerInfo, LookupFailed, Mount

_log = log.get("enricher.runtime")


def parse_inspect(body: dict) -> ContainerInfo:
    """The fields we use out of an Engine API container inspect answer."""
    cfg = body.get("Config") or {}
    labels = cfg.get("Labels") or {}
    host = body.get("HostConfig") or {}
    host = host if isinstance(host, dict) else {}
    image_id = body.get("Image")
    return ContainerInfo(
        id=str(body.get("Id", "")),
        name=str(body.get("Name") or "").lstrip("/"),
        image=str(cfg.get("Image") or body.get("ImageName") or body.get("Image") or ""),
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        image_id=image_id if isinstance(image_id, str) and image_id else None,
        privileged=host["Privileged"] if isinstance(host.get("Privileged"), bool) else None,
        host_network=host.get("NetworkMode") == "host" if isinstance(host.get("NetworkMode"), str) else None,
        host_pid=host.get("PidMode") == "host" if isinstance(host.get("PidMode"), str) else None,
        host_ipc=host.get("IpcMode") == "host" if isinstance(host.get("IpcMode"), str) else None,
        mounts=parse_mounts(body.get("Mounts")),
    )


def parse_mounts(mounts: object) -> tuple[Mount, ...] | None:
    """Bind mounts and volumes of an inspect answer ("Mounts": Source, Destination, RW)."""
    if not isinstance(mounts, list):
        return None
    return tuple(Mount.of(m["Source"], m["Destination"], bool(m.get("RW", True))) for m in mounts
                 if isinstance(m, dict) and isinstance(m.get("Source"), str) and isinstance(m.get("Destination"), str))


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
                         labels={str(k): str(v) for k, v in attrs.items() if k not in EVENT_NON_LABELS},
                         partial=True)


class RuntimeClient(CachedLookups):
    """Async Engine API client (podman, docker, cri-dockerd's docker) with a bounded TTL cache."""

    source = "runtime_api"

    def __init__(self, sockets: tuple[str, ...], timeout: float = 1.0, ttl: float = 60.0,
                 negative_ttl: float = 5.0, max_entries: int = 4096, stats=None) -> None:
        super().__init__(sockets, timeout, ttl, negative_ttl, max_entries, stats)
        self._session: aiohttp.ClientSession | None = None
        self._session_sock: str | None = None

    def describe(self) -> str:
        return f"container runtime API at {' or '.join(self.sockets)}"

    async def close(self) -> None:
        await self._close_session()

    async def _close_session(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session, self._session_sock = None, None

    def _socket(self) -> str | None:
        return self.socket()

    async def _get_session(self) -> aiohttp.ClientSession:
        sock = self._socket()
        if sock is None:
            raise LookupFailed("socket_missing")
        if self._session is None or self._session_sock != sock:
            await self._close_session()
            # a batch waits `timeout`; the request may take longer (LOOKUP_BACKGROUND_S) and still name later events
            self._session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=sock),
                                                  timeout=aiohttp.ClientTimeout(total=max(self.timeout,
                                                                                          LOOKUP_BACKGROUND_S)))
            self._session_sock = sock
        return self._session

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
                            raise LookupFailed(f"http_{r.status}")
                        if logged:
                            _log.info("following container events at %s again", sock)
                            logged = False
                        async for raw in r.content:
                            self._on_event_line(raw)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, LookupFailed, ValueError, OSError) as e:
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
            self.remember(info)   # names at once; the inspect adds what events lack (privileged, host ns)
            self.start(info.id)
            if self.stats is not None:
                self.stats.inc("enricher_runtime_events_total", source=self.source)

    async def inspect(self, cid: str) -> ContainerInfo | None:
        """One uncached GET /containers/<id>/json; None if the runtime does not know `cid`."""
        session = await self._get_session()
        try:
            async with session.get(f"http://localhost/containers/{cid}/json") as r:
                if r.status == 404:
                    raise LookupFailed("not_found")
                if r.status != 200:
                    raise LookupFailed(f"http_{r.status}")
                body = await r.json(content_type=None)
        except asyncio.TimeoutError:
            raise LookupFailed("timeout") from None
        except aiohttp.ClientConnectionError:
            await self._close_session()
            raise LookupFailed("unreachable") from None
        except (aiohttp.ClientError, ValueError) as e:
            raise LookupFailed(f"bad_reply:{type(e).__name__}") from None
        if not isinstance(body, dict):
            raise LookupFailed("bad_reply:not_object")
        return parse_inspect(body)
