"""Container metadata from a runtime, cached: the part every runtime client shares.

A client (Engine API: runtime_api.py, CRI: cri.py) implements `inspect(cid)`,
which returns a ContainerInfo or raises LookupFailed(reason). Here: answers are
cached with a TTL, failures with a shorter one and their reason (so events can
say why their metadata is missing); one lookup per id runs at a time however
many events ask; the cache is bounded; a failure after a good answer keeps the
last good answer (a runtime hiccup does not blank known containers).
"""
from __future__ import annotations

import asyncio
import os
import posixpath
import time
from dataclasses import dataclass, field

from shared import log
from shared.bounded import Bounded
from shared.stats import Stats
from shared.tasks import cancel_and_wait

_log = log.get("enricher.runtime")
# A batch waits the configured timeout for a lookup; the lookup itself goes on in the background
# this long (a loaded runtime answers late rather than never: its answer names the later events).
LOOKUP_BACKGROUND_S = 5.0


@dataclass(frozen=True)
class Mount:
    source: str     # host path (a volume's directory on the node)
    dest: str       # path in the container
    rw: bool

    @classmethod
    def of(cls, source: str, dest: str, rw: bool) -> "Mount":
        """Paths normalised as the rules compare them ("/etc/" and "/etc/./" are /etc)."""
        return cls(_norm(source), _norm(dest), rw)

    def view(self) -> dict[str, object]:
        return {"source": self.source, "dest": self.dest, "rw": self.rw}


def _norm(path: str) -> str:
    if not path.startswith("/"):
        return path   # a named volume or a Windows path: as the runtime said
    p = posixpath.normpath(path)
    return "/" if p == "//" else p


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    image: str
    labels: dict[str, str] = field(default_factory=dict)
    image_digest: str | None = None     # sha256:... of the manifest the runtime pulled, when it says
    image_id: str | None = None         # the runtime's id of the image (config digest)
    privileged: bool | None = None      # None: the runtime did not say
    host_network: bool | None = None
    host_pid: bool | None = None
    host_ipc: bool | None = None
    mounts: tuple[Mount, ...] | None = None   # host paths mounted in; None: the runtime did not say
    k8s: dict | None = None             # from the CRI sandbox; None: derive from labels (k8s.k8s_of)
    partial: bool = False               # from a runtime event (names only): the inspect adds the rest


class LookupFailed(Exception):
    """Why a lookup failed (one word: the metric label and the event's `metadata_missing`)."""


class CachedLookups:
    source = "runtime"   # label of enricher_lookup_failures_total{source}

    def __init__(self, sockets: tuple[str, ...], timeout: float = 1.0, ttl: float = 60.0,
                 negative_ttl: float = 5.0, max_entries: int = 4096, stats: Stats | None = None) -> None:
        self.sockets, self.timeout, self.ttl, self.negative_ttl = tuple(sockets), timeout, ttl, negative_ttl
        self.max_entries = max_entries
        self._cache: Bounded[str, tuple[float, ContainerInfo | None, str | None]] = Bounded(max_entries)
        self._inflight: dict[str, asyncio.Task] = {}
        self._down_logged = False
        self.stats = stats
        self.failures: dict[str, int] = {}  # reason -> count

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_and_wait(*self._inflight.values())
        await self.close()

    async def close(self) -> None:
        """Release connections (subclasses)."""

    def socket(self) -> str | None:
        """The first configured socket that exists."""
        for s in self.sockets:
            if os.path.exists(s):
                return s
        return None

    # --- the cache -----------------------------------------------------------
    def cached(self, cid: str) -> tuple[bool, ContainerInfo | None]:
        """(fresh entry present, info)."""
        hit = self._cache.get(cid)
        if hit is None or hit[0] < time.monotonic():
            return False, hit[1] if hit else None
        if hit[1] is not None and hit[1].partial and cid in self._inflight:
            return False, hit[1]   # names only, its inspect under way: callers wait for it (privileged, mounts)
        return True, hit[1]

    def missing_reason(self, cid: str) -> str | None:
        """Why `cid` has no metadata: the last lookup's failure, "pending" while none has ended."""
        hit = self._cache.get(cid)
        if hit is None:
            return "pending"
        return None if hit[1] is not None else hit[2]

    def _put(self, cid: str, expires: float, info: ContainerInfo | None, reason: str | None) -> None:
        self._cache[cid] = (expires, info, reason)

    def remember(self, info: ContainerInfo) -> None:
        self._put(info.id, time.monotonic() + self.ttl, info, None)

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
        reason = None
        try:
            info = await self.inspect(cid)
            ttl = self.ttl
            if self._down_logged:
                _log.info("%s answers again", self.describe())
                self._down_logged = False
        except Exception as e:  # noqa: BLE001 - LookupFailed, or a client bug: never kills the lookup task
            if isinstance(e, LookupFailed):
                reason = str(e)
            else:
                reason = f"error_{type(e).__name__}"
                _log.warning("%s: lookup of %s failed: %r", self.describe(), cid[:12], e)
            self.failures[reason] = self.failures.get(reason, 0) + 1
            if self.stats is not None:
                self.stats.inc("enricher_lookup_failures_total", source=self.source, reason=reason)
            info, ttl = None, self.negative_ttl
            if reason in ("socket_missing", "unreachable") and not self._down_logged:
                self._down_logged = True
                _log.warning("%s not reachable (%s): its containers carry ids only", self.describe(), reason)
        stale = self._cache.get(cid)
        if info is None and stale and stale[1] is not None:
            info, reason = stale[1], None  # keep the last good answer across a runtime hiccup
        self._put(cid, time.monotonic() + ttl, info, reason)
        return info

    def describe(self) -> str:
        return f"{self.source} at {' or '.join(self.sockets)}"

    async def inspect(self, cid: str) -> ContainerInfo:
        raise NotImplementedError

    async def watch(self) -> None:
        """Follow the runtime's container events until cancelled (subclasses)."""
        await asyncio.Event().wait()
