"""Per-container rows from the probes' perf messages, named from the store's containers."""
from __future__ import annotations

from typing import Any

POD_LABELS = ("io.kubernetes.pod.name", "io.kubernetes.pod")
NS_LABELS = ("io.kubernetes.pod.namespace",)
SORT_KEYS = {"cpu": "cpu", "events": "events_s", "block": "block_bytes_s", "net": "net_bytes_s",
             "file": "file_bytes_s",
             "connects": "connects_s", "runq": "runq_p99_ms", "alerts": "alerts", "name": "container"}


class NotFound(LookupError):
    pass


def _label(c: dict, keys: tuple[str, ...]) -> str | None:
    labels = c.get("labels") or {}
    for k in keys:
        if isinstance(labels, dict) and labels.get(k):
            return str(labels[k])
    return None


def index_containers(containers: list[dict]) -> dict[tuple[str, int], dict]:
    """(node, cgroup_id) -> container row of the store."""
    out: dict[tuple[str, int], dict] = {}
    for c in containers or []:
        if isinstance(c, dict) and c.get("cgroup_id") is not None:
            try:
                out[(str(c.get("node") or ""), int(c["cgroup_id"]))] = c
            except (TypeError, ValueError):
                continue
    return out


def top_rows(perf: dict[str, dict], containers: list[dict], alerts: dict[str, int] | None = None,
             node: str | None = None, namespace: str | None = None, sort: str = "cpu",
             hosts: bool = False) -> list[dict]:
    """One row per container (cgroup) of every node's latest perf message, sorted descending by `sort`."""
    if sort not in SORT_KEYS:
        raise ValueError(f"sort {sort!r} not in {sorted(SORT_KEYS)}")
    by_cg = index_containers(containers)
    rows = []
    for n, msg in perf.items():
        if node and n != node:
            continue
        for cg in msg.get("cgroups", []):
            c = by_cg.get((n, cg.get("cgroup_id"))) or by_cg.get(("", cg.get("cgroup_id")))
            if c is None and not hosts:
                continue  # not a container (a host service's cgroup)
            ns = _label(c, NS_LABELS) if c else None
            if namespace and ns != namespace:
                continue
            name = (c.get("name") or str(c.get("id", ""))[:12]) if c else f"cgroup-{cg.get('cgroup_id')}"
            rates = cg.get("rates") or {}
            counters = cg.get("counters") or {}
            p99 = cg.get("runq_p99_s")
            rows.append({"container": name, "id": c.get("id") if c else None, "node": n,
                         "pod": _label(c, POD_LABELS) if c else None, "namespace": ns,
                         "cgroup_id": cg.get("cgroup_id"), "cpu": round(rates.get("cpu", 0.0), 4),
                         "events_s": round(rates.get("events", 0.0), 2),
                         "block_bytes_s": round(rates.get("block_bytes", 0.0), 1),
                         "net_bytes_s": round(rates.get("net_bytes", 0.0), 1),
                         "file_bytes_s": round(rates.get("file_bytes", 0.0), 1),
                         "connects_s": round(rates.get("connects", 0.0), 2),
                         "runq_p99_ms": round(p99 * 1000, 3) if p99 is not None else None,
                         "oom_kills": counters.get("oom_kills", 0),
                         "cpu_seconds": round(counters.get("cpu_ns", 0) / 1e9, 3),
                         "alerts": (alerts or {}).get(name, 0)})
    key = SORT_KEYS[sort]
    rows.sort(key=lambda r: (r[key] is not None, r[key] if r[key] is not None else 0), reverse=key != "container")
    return rows


def resolve(containers: list[dict], name: str | None = None, pod: str | None = None) -> list[dict]:
    """Containers named `name` (name, or id prefix of >= 4 hex) or in pod `pod`; NotFound if none."""
    hits = []
    for c in containers or []:
        if not isinstance(c, dict) or c.get("cgroup_id") is None:
            continue
        if pod is not None:
            if _label(c, POD_LABELS) == pod:
                hits.append(c)
        elif name is not None and (c.get("name") == name
                                   or (len(name) >= 4 and str(c.get("id", "")).startswith(name))):
            hits.append(c)
    if not hits:
        what = f"pod {pod!r}" if pod is not None else f"container {name!r}"
        raise NotFound(f"{what}: no such container known to the store (has it run since Eunomia started?)")
    # a name reused by a later container: the most recent one
    if pod is None:
        hits.sort(key=lambda c: c.get("last_seen") or 0, reverse=True)
        hits = hits[:1]
    return hits


def merge_profiles(replies: list[dict]) -> dict[str, Any]:
    """Several probes' profile replies (a pod's containers) -> one."""
    folded: dict[str, int] = {}
    out = {"samples": 0, "truncated": 0, "windows": 0, "errors": []}
    for r in replies:
        if "error" in r:
            out["errors"].append(r["error"])
            continue
        for k in ("samples", "truncated", "windows"):
            out[k] += int(r.get(k, 0))
        for stack, n in (r.get("folded") or {}).items():
            folded[stack] = folded.get(stack, 0) + int(n)
        if out.get("hz") is None:
            out["hz"] = r.get("hz")
        if r.get("start_ns"):  # a reply with no window has no time range
            out["start_ns"] = min(out.get("start_ns") or r["start_ns"], r["start_ns"])
        if r.get("end_ns"):
            out["end_ns"] = max(out.get("end_ns") or 0, r["end_ns"])
    out.setdefault("start_ns", 0)
    out.setdefault("end_ns", 0)
    out["folded"] = dict(sorted(folded.items(), key=lambda kv: -kv[1]))
    return out
