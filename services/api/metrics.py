"""/metrics: the latest stats heartbeat of every service instance, as Prometheus text.

Every service publishes a snapshot on `eunomia.stats.<service>.<node>`
(shared/stats.py). We keep the latest per (service, node, pid), hide it once
stale, forget it later, and export every counter/gauge as `eunomia_<name>`
with `service` and `node` labels. Labels are bounded: `pid` is dropped and
`cgroup_id` becomes the container's name (from the store, cached).
"""
from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from nats.aio.msg import Msg

from shared import log, subjects
from shared.stats import Stats

from .promtext import Exposition, label_name, metric_name

_log = log.get("api.metrics")

MAX_SNAPSHOT_BYTES = 4 * 1024 * 1024
MAX_INSTANCES = 5000   # (service, node, pid) heartbeats kept; more are refused and counted
DROP_LABELS = {"pid", "tid", "ppid"}  # unbounded: never labels

# Service metrics exported under another name than eunomia_<name>.
RENAMES = {"probe_cgroup_events": "container_events"}

HELP = {
    "eunomia_probe_events_total": "Events the probe read from the kernel, by kind.",
    "eunomia_probe_lost_events_total": "Events lost in the kernel (ring buffer full).",
    "eunomia_container_events": "Per-container event counts from the probe's in-kernel maps, by class.",
    "eunomia_alerts_total": "Alerts raised, by rule and priority.",
    "eunomia_alerts_suppressed_total": "Repeated alerts suppressed by throttling, by rule.",
    "eunomia_bus_malformed_total": "Malformed bus messages dropped, by subject family.",
    "eunomia_bus_slow_consumer_dropped_total": "Bus messages dropped because a subscriber was too slow.",
    "eunomia_store_consumer_pending": "Messages waiting in the store's JetStream consumer (bus lag), by stream.",
    "eunomia_events_stored_total": "Events written to the store.",
    "eunomia_alerts_stored_total": "Alerts written to the store.",
    "eunomia_service_up": "1 if the service instance sent a stats heartbeat recently, else 0.",
    "eunomia_service_last_seen_timestamp_seconds": "When the last stats heartbeat of the service arrived.",
    "eunomia_service_instances": "Processes of the service currently sending heartbeats.",
    "eunomia_container_stored_events": "Events stored per container (from the store).",
    "eunomia_enricher_metadata_missing_total": "Containers whose events went out without runtime metadata, "
                                               "once per container and reason (no_runtime_api, not_found, ...).",
}


class BadSnapshot(ValueError):
    pass


def check_snapshot(snap: object) -> dict:
    if not isinstance(snap, dict):
        raise BadSnapshot(f"snapshot is {type(snap).__name__}, not an object")
    for f in ("service", "node"):
        if not isinstance(snap.get(f), str) or not subjects.valid_token(snap[f]):
            raise BadSnapshot(f"field {f!r} is not a subject token")
    for table in ("counters", "gauges"):
        series = snap.get(table, {})
        if not isinstance(series, dict):
            raise BadSnapshot(f"field {table!r} is not an object")
        for name, rows in series.items():
            if not isinstance(rows, list):
                raise BadSnapshot(f"{table}.{name} is not a list")
            for row in rows:
                if (not isinstance(row, list) or len(row) != 2 or not isinstance(row[0], dict)
                        or not isinstance(row[1], (int, float)) or isinstance(row[1], bool)):
                    raise BadSnapshot(f"{table}.{name}: row is not [labels, number]")
    return snap


@dataclass
class _Seen:
    snap: dict
    mono: float   # monotonic receive time: staleness
    wall: float   # wall-clock receive time: last_seen


class MetricsRegistry:
    """Latest snapshots and their rendering. `containers` returns cgroup_id -> container label."""

    def __init__(self, stats: Stats, stale_s: float, forget_s: float, max_series: int,
                 containers: Callable[[], Awaitable[tuple[dict[str, str], dict[str, int]]]]) -> None:
        self.stats, self.stale_s, self.forget_s, self.max_series = stats, stale_s, forget_s, max_series
        self.containers = containers
        self._seen: dict[tuple[str, str, int], _Seen] = {}
        self.perf = None  # services.perf.client.PerfBoard, set by the ApiService

    async def on_message(self, msg: Msg) -> None:
        try:
            if len(msg.data) > MAX_SNAPSHOT_BYTES:
                raise BadSnapshot(f"{len(msg.data)} bytes exceeds {MAX_SNAPSHOT_BYTES}")
            try:
                snap = orjson.loads(msg.data)
            except orjson.JSONDecodeError as e:
                raise BadSnapshot(f"not JSON: {e}") from None
            check_snapshot(snap)
        except BadSnapshot as e:
            self.stats.inc("api_stats_malformed_total")
            _log.warning("dropped malformed stats message on %s: %s", msg.subject, e)
            return
        pid = snap.get("pid") if isinstance(snap.get("pid"), int) else 0
        key = (snap["service"], snap["node"], pid)
        if key not in self._seen and len(self._seen) >= MAX_INSTANCES:
            self._expire(time.monotonic())
            if len(self._seen) >= MAX_INSTANCES:
                self.stats.inc("api_stats_instances_refused_total")
                return
        self._seen[key] = _Seen(snap, time.monotonic(), time.time())

    def _expire(self, now: float) -> None:
        for key, seen in list(self._seen.items()):
            if now - seen.mono > self.forget_s:
                del self._seen[key]

    async def render(self) -> str:
        now = time.monotonic()
        self._expire(now)
        cgroups, stored = await self.containers()
        exp = Exposition(self.max_series)
        up: dict[tuple[str, str], list[float]] = {}
        for (service, node, _pid), seen in self._seen.items():
            fresh = now - seen.mono <= self.stale_s
            u = up.setdefault((service, node), [0, 0.0])
            u[0] += 1 if fresh else 0
            u[1] = max(u[1], seen.wall)
            if fresh:
                self._export(exp, seen.snap, cgroups)
        for (service, node), (n, last) in up.items():
            lbl = {"service": service, "node": node}
            exp.add("eunomia_service_up", "gauge", HELP["eunomia_service_up"], lbl, 1 if n else 0)
            exp.add("eunomia_service_instances", "gauge", HELP["eunomia_service_instances"], lbl, n)
            exp.add("eunomia_service_last_seen_timestamp_seconds", "gauge",
                    HELP["eunomia_service_last_seen_timestamp_seconds"], lbl, round(last, 3))
        for container, n in stored.items():
            exp.add("eunomia_container_stored_events", "gauge", HELP["eunomia_container_stored_events"],
                    {"container": container}, n)
        if self.perf is not None:  # per-container histograms of the probes (eunomia.perf.<node>)
            from .perfmetrics import export as export_perf
            export_perf(exp, self.perf.latest(), cgroups)
        if exp.dropped_series:
            self.stats.inc("api_metrics_series_dropped_total", exp.dropped_series)
        if exp.type_conflicts:
            self.stats.inc("api_metrics_type_conflicts_total", exp.type_conflicts)
        return exp.render()

    def _export(self, exp: Exposition, snap: dict, cgroups: dict[str, str]) -> None:
        service, node = snap["service"], snap["node"]
        for table, kind in (("counters", "counter"), ("gauges", "gauge")):
            for raw, rows in snap.get(table, {}).items():
                name, scale = metric_name(RENAMES.get(raw, raw), kind)
                help_text = HELP.get(name) or f"{raw} ({kind}) reported by Eunomia services."
                for labels, value in rows:
                    exp.add(name, kind, help_text, self._labels(labels, service, node, cgroups), value * scale)

    @staticmethod
    def _labels(raw: dict, service: str, node: str, cgroups: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for k, v in raw.items():
            if k in DROP_LABELS:
                continue
            if k == "cgroup_id":
                k, v = "container", cgroups.get(str(v)) or f"cgroup-{v}"
            k = label_name(str(k))
            if k in ("service", "node"):
                k = "src_" + k
            out[k] = str(v)[:200]
        out["service"], out["node"] = service, node
        return out
