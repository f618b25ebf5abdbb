"""Bus side of the performance views: latest perf message per node, profile requests to probes."""
from __future__ import annotations

import asyncio
import time

import orjson

from shared import log, subjects

from .view import NotFound, merge_profiles, resolve

_log = log.get("perf")
MAX_PERF_BYTES = 8 * 1024 * 1024


class PerfBoard:
    """Keeps each node's latest eunomia.perf.<node> message (forgotten when stale)."""

    def __init__(self, stale_s: float = 30.0, stats=None) -> None:
        self.stale_s, self.stats = stale_s, stats
        self._latest: dict[str, tuple[float, dict]] = {}
        self.updated = asyncio.Event()

    async def on_message(self, msg) -> None:
        try:
            if len(msg.data) > MAX_PERF_BYTES:
                raise ValueError(f"{len(msg.data)} bytes")
            data = orjson.loads(msg.data)
            if not isinstance(data, dict) or not isinstance(data.get("node"), str) \
                    or not isinstance(data.get("cgroups"), list):
                raise ValueError("not an object with node and cgroups")
        except (ValueError, orjson.JSONDecodeError) as e:
            if self.stats is not None:
                self.stats.inc("perf_malformed_total")
            _log.warning("dropped malformed perf message on %s: %s", msg.subject, e)
            return
        self._latest[data["node"]] = (time.monotonic(), data)
        self.updated.set()

    def latest(self) -> dict[str, dict]:
        now = time.monotonic()
        for n in [n for n, (t, _) in self._latest.items() if now - t > self.stale_s]:
            del self._latest[n]
        return {n: d for n, (_, d) in self._latest.items()}


async def request_profile(bus, containers: list[dict], name: str | None = None, pod: str | None = None,
                          seconds: float = 10.0, since_ns: int | None = None, until_ns: int | None = None) -> dict:
    """Ask the probes of the container(s) for a profile; NotFound if no such container is known."""
    hits = resolve(containers, name=name, pod=pod)
    reqs = []
    for c in hits:
        body: dict = {"op": "profile", "cgroup_id": int(c["cgroup_id"])}
        if since_ns is not None:
            body["since"] = since_ns
            body["until"] = until_ns if until_ns is not None else time.time_ns()
            timeout = 15.0
        else:
            body["seconds"] = seconds
            timeout = seconds + 15.0
        reqs.append(_ask(bus, subjects.ctl_perf(str(c.get("node") or "")), body, timeout))
    replies = await asyncio.gather(*reqs)
    out = merge_profiles(replies)
    out["containers"] = [{"name": c.get("name"), "id": c.get("id"), "node": c.get("node"),
                          "cgroup_id": c.get("cgroup_id")} for c in hits]
    return out


STORED_WINDOWS_MAX = 10000  # stored events merged into one answer per container (~7 days at one a minute)
STORED_PAGE = 20            # profile events per store request (each up to 128 KiB of stacks)


async def stored_profile(store, containers: list[dict], name: str | None = None, pod: str | None = None,
                         since_ns: int = 0, until_ns: int | None = None) -> dict:
    """The continuous profile of the container(s) from [since_ns, until_ns] out of the store's
    "profile" events (one per cgroup and probe window); NotFound if no such container is known.
    `windows_cut` says when the range held more than STORED_WINDOWS_MAX windows (newest kept)."""
    hits = resolve(containers, name=name, pod=pod)
    until_ns = until_ns if until_ns is not None else time.time_ns()
    replies, cut = [], False
    for c in hits:
        acc = windows_reply([])
        page: dict = {"next_cursor": None}
        while True:  # each page merged as it comes: memory is one page and the sums
            params = {"kind": "profile", "container": str(c.get("id")), "since": since_ns, "until": until_ns,
                      "limit": STORED_PAGE}
            if page.get("next_cursor"):
                params["cursor"] = page["next_cursor"]
            page = await store.events(**params)
            items = [e for e in (page or {}).get("items", []) if isinstance(e, dict)]
            acc = merge_profiles([acc, windows_reply(items)])
            if not page.get("next_cursor"):
                break
            if acc["windows"] >= STORED_WINDOWS_MAX:
                cut = True
                break
        replies.append(acc)
    out = merge_profiles(replies)
    out.update(source="store", windows_cut=cut, since_ns=since_ns, until_ns=until_ns)
    out["containers"] = [{"name": c.get("name"), "id": c.get("id"), "node": c.get("node"),
                          "cgroup_id": c.get("cgroup_id")} for c in hits]
    return out


def windows_reply(windows: list[dict]) -> dict:
    """Stored profile events of one container -> a reply shaped like a probe's."""
    folded: dict[str, int] = {}
    out: dict = {"samples": 0, "truncated": 0, "windows": len(windows), "hz": None}
    for w in windows:
        for stack, n in (w.get("folded") or {}).items():
            if isinstance(n, int):
                folded[stack] = folded.get(stack, 0) + n
        out["samples"] += w.get("samples") if isinstance(w.get("samples"), int) else 0
        out["truncated"] += w.get("truncated") if isinstance(w.get("truncated"), int) else 0
        out["hz"] = out["hz"] or w.get("hz")
    starts = [w["start_ns"] for w in windows if isinstance(w.get("start_ns"), int)]
    ends = [w["end_ns"] for w in windows if isinstance(w.get("end_ns"), int)]
    out["start_ns"], out["end_ns"] = min(starts, default=0), max(ends, default=0)
    out["folded"] = folded
    return out


async def _ask(bus, subject: str, body: dict, timeout: float) -> dict:
    try:
        reply = await bus.request_json(subject, body, timeout=timeout)
    except asyncio.TimeoutError:
        return {"error": f"no probe answered on {subject} within {timeout:g} s"}
    except Exception as e:  # no responders, connection lost
        return {"error": f"{subject}: {e or type(e).__name__}"}
    return reply if isinstance(reply, dict) else {"error": f"{subject}: reply is not an object"}


async def alert_counts(store, window_s: float = 3600.0) -> dict[str, int]:
    """Alerts per container name over the last `window_s` (the newest 1000 at most); {} if the store fails."""
    try:
        page = await store.alerts(since=time.time_ns() - int(window_s * 1e9), limit=1000)
    except Exception as e:
        _log.debug("alert counts unavailable: %s", e)
        return {}
    out: dict[str, int] = {}
    for a in (page or {}).get("items", []) if isinstance(page, dict) else []:
        c = a.get("container") if isinstance(a, dict) else None
        if isinstance(c, dict) and c.get("name"):
            out[c["name"]] = out.get(c["name"], 0) + 1
    return out


__all__ = ["PerfBoard", "request_profile", "stored_profile", "alert_counts", "NotFound"]
