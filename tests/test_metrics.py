"""/metrics: heartbeats from real services and published snapshots -> valid Prometheus text."""
from __future__ import annotations

import re
import subprocess
import time
import urllib.request
import uuid

import pytest

from services.api.config import ApiConfig
from services.api.promtext import metric_name
from shared import subjects
from tests.apistack import NODE, ApiStack, scenario, stats_snapshot
from tests.events import container

SAMPLE = re.compile(r'^([a-z_:][a-z0-9_:]*)(?:\{(.*)\})? (\S+)$')


def scrape(st: ApiStack) -> str:
    with urllib.request.urlopen(st.url + "/metrics", timeout=10) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        return r.read().decode()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            m = SAMPLE.match(line)
            assert m, f"unparsable line: {line!r}"
            labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def find(s: dict, name: str, **labels) -> float | None:
    want = set(labels.items())
    hits = [v for (n, lbl), v in s.items() if n == name and want <= lbl]
    return sum(hits) if hits else None


def scrape_until(st: ApiStack, ok, timeout: float = 30) -> str:
    """Scrape until `ok(samples)` holds (heartbeats arrive every 0.5 s); return the last text."""
    deadline = time.monotonic() + timeout
    while True:
        text = scrape(st)
        if ok(samples(text)) or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


@pytest.fixture(scope="module")
def st(tmp_path_factory):
    cfg = ApiConfig(port=0, stats_stale_s=3.0, containers_cache_s=0.5, max_series_per_metric=50)
    with ApiStack(tmp_path_factory.mktemp("metrics"), cfg) as st:
        yield st


def test_metrics_aggregate_heartbeats_and_pass_promtool(st):
    web = container(f"web-{uuid.uuid4().hex[:6]}")
    evs = scenario(web, time.time_ns(), cgroup_id=9101)
    st.publish(subjects.event(NODE, "exec"), evs)
    st.wait_stored(len(evs))
    # a probe heartbeat as the probe publishes it (shared/stats.py snapshot), plus odd names and labels
    st.publish_raw(subjects.stats("probe", NODE), stats_snapshot("probe", counters={
        "probe_events_total": [({"kind": "exec"}, 3), ({"kind": "open"}, 20)],
        "probe_lost_events_total": [({}, 7)],
        "bus_malformed_total": [({"subject": "eunomia.raw.x"}, 2)],
        "bus_slow_consumer_dropped_total": [({"subject": "eunomia.ctl.probe"}, 1)],
        "perRequestErrors": [({"pid": "123", "le": "x"}, 4)],
    }, gauges={
        "probe_cgroup_events": [({"cgroup_id": "9101", "class": "exec"}, 3), ({"cgroup_id": "9101", "class": "file"}, 20),
                                ({"cgroup_id": "31337", "class": "net"}, 1)],
        "ringbuf_poll_ms": [({}, 250)],
        "queue_count": [({"node": "other"}, 5)],
    }))
    st.publish_raw(subjects.stats("alerter", NODE), stats_snapshot("alerter", counters={
        "alerts_total": [({"rule": "Terminal shell", "priority": "WARNING"}, 2)]}))
    st.publish_raw(subjects.stats("probe", NODE), b"{not json")          # malformed: counted, ignored
    st.publish_raw(subjects.stats("probe", NODE), b'{"service": "a.b", "node": "n"}')

    def ready(s):
        return (find(s, "eunomia_container_events", container=web["name"], **{"class": "exec"}) == 3
                and find(s, "eunomia_store_consumer_pending", stream="EVENTS") is not None
                and find(s, "eunomia_events_stored_total", service="store") == len(evs)
                and (find(s, "eunomia_api_stats_malformed_total") or 0) >= 2)

    text = scrape_until(st, ready)
    s = samples(text)
    assert ready(s), text
    # promtool: the real exposition is valid and lint-clean
    res = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr

    assert find(s, "eunomia_probe_events_total", kind="open", service="probe", node=NODE) == 20
    assert find(s, "eunomia_probe_lost_events_total", service="probe") == 7
    assert find(s, "eunomia_alerts_total", rule="Terminal shell", priority="WARNING") == 2
    assert find(s, "eunomia_bus_malformed_total", subject="eunomia.raw.x") == 2
    assert find(s, "eunomia_bus_slow_consumer_dropped_total", service="probe") == 1
    # in-kernel per-cgroup counters mapped to container names; an unknown cgroup keeps its id
    assert find(s, "eunomia_container_events", container=web["name"], **{"class": "file"}) == 20
    assert find(s, "eunomia_container_events", container="cgroup-31337", **{"class": "net"}) == 1
    assert find(s, "eunomia_container_stored_events", container=web["name"]) == len(evs)
    # names and labels made conformant: units scaled to base units, no pid label, reserved names renamed
    assert find(s, "eunomia_ringbuf_poll_seconds") == 0.25
    assert find(s, "eunomia_per_request_errors_total", src_le="x") == 4
    assert find(s, "eunomia_queue_count_value", src_node="other", node=NODE) == 5
    assert "pid=" not in text and "cgroup_id=" not in text
    for svc in ("probe", "alerter", "store", "api"):
        assert find(s, "eunomia_service_up", service=svc, node=NODE) == 1, svc
        assert find(s, "eunomia_service_last_seen_timestamp_seconds", service=svc) > 1.6e9
    for name in ("eunomia_probe_lost_events_total", "eunomia_container_events", "eunomia_service_up"):
        assert f"# HELP {name} " in text and f"# TYPE {name} " in text


def test_stale_services_go_down_and_their_series_vanish(st):
    st.publish_raw(subjects.stats("ghost", NODE), stats_snapshot("ghost", counters={"ghost_things_total": [({}, 1)]}))
    s = samples(scrape_until(st, lambda s: find(s, "eunomia_service_up", service="ghost") == 1))
    assert find(s, "eunomia_ghost_things_total") == 1
    # no more heartbeats: after stats_stale_s (3 s) the service is down and its counters are not exported
    s = samples(scrape_until(st, lambda s: find(s, "eunomia_service_up", service="ghost") == 0))
    assert find(s, "eunomia_service_up", service="ghost") == 0
    assert find(s, "eunomia_ghost_things_total") is None
    assert find(s, "eunomia_service_up", service="store") == 1   # live ones stay up


def test_series_per_metric_are_capped(st):
    rows = [({"path": f"/tmp/f{i}"}, 1) for i in range(120)]
    st.publish_raw(subjects.stats("spammy", NODE), stats_snapshot("spammy", counters={"spam_total": rows}))
    text = scrape_until(st, lambda s: find(s, "eunomia_service_up", service="spammy") == 1)
    n = sum(1 for line in text.splitlines() if line.startswith("eunomia_spam_total{"))
    assert n == 50     # max_series_per_metric
    s = samples(scrape_until(st, lambda s: (find(s, "eunomia_api_metrics_series_dropped_total") or 0) > 0))
    assert find(s, "eunomia_api_metrics_series_dropped_total") >= 70


@pytest.mark.parametrize("raw,kind,want", [
    ("probe_events_total", "counter", ("eunomia_probe_events_total", 1.0)),
    ("handled", "counter", ("eunomia_handled_total", 1.0)),
    ("flush_latency_ms", "gauge", ("eunomia_flush_latency_seconds", 1e-3)),
    ("db_size_mb", "gauge", ("eunomia_db_size_bytes", 1e6)),
    ("batch_sum", "gauge", ("eunomia_batch_sum_value", 1.0)),
    ("Bad-Name.x", "gauge", ("eunomia_bad_name_x", 1.0)),
])
def test_metric_names(raw, kind, want):
    assert metric_name(raw, kind) == want
