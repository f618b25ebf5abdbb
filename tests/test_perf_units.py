"""Pure parts of the performance features: formats, the top table, histograms in the
Prometheus exposition (checked by promtool), quantiles, config validation, the OOM rule."""
from __future__ import annotations

import subprocess

import orjson
import pytest

from services.alerter.config import DEFAULT_RULES_DIR, rule_files
from services.alerter.engine import load_rules
from services.api.perfmetrics import export
from services.api.promtext import Exposition
from services.perf.formats import folded_text, speedscope, svg
from services.perf.view import NotFound, merge_profiles, resolve, top_rows
from services.probe.config import ProbeConfig
from services.probe.perf import BUCKET_LE, quantile
from shared.config import ConfigError

FOLDED = {"app;main;work": 30, "app;main;idle": 10, "app;main;work;sys_write_[k]": 5}


def test_folded_text_is_heaviest_first():
    assert folded_text(FOLDED).splitlines() == ["app;main;work 30", "app;main;idle 10",
                                               "app;main;work;sys_write_[k] 5"]


def test_speedscope_document_shares_frames_and_keeps_weights():
    doc = speedscope(FOLDED, "web")
    names = [f["name"] for f in doc["shared"]["frames"]]
    assert len(names) == len(set(names)) == 5
    prof = doc["profiles"][0]
    assert prof["type"] == "sampled" and sum(prof["weights"]) == 45 == prof["endValue"]
    assert [names[i] for i in prof["samples"][0]] == ["app", "main", "work"]


def test_svg_escapes_frame_names():
    out = svg({"a;<script>x": 3}, "t<b>")
    assert "<script>" not in out and "&lt;script&gt;" in out and "t&lt;b&gt;" in out


def test_quantile_gives_the_bucket_bound():
    buckets = [0] * 32
    buckets[3] = 99
    buckets[10] = 1
    assert quantile(buckets, 0.5) == BUCKET_LE[3]
    assert quantile(buckets, 1.0) == BUCKET_LE[10]
    assert quantile([0] * 32, 0.99) is None


def _perf_msg():
    return {"node": "n1", "cgroups": [
        {"cgroup_id": 11, "counters": {"cpu_ns": 2e9, "oom_kills": 0}, "rates": {"cpu": 0.9, "events": 5},
         "hists": {"block": {"buckets": [0, 2, 3] + [0] * 29, "sum_s": 0.01, "count": 5}}, "runq_p99_s": 0.002},
        {"cgroup_id": 12, "counters": {"cpu_ns": 1e6}, "rates": {"cpu": 0.0}, "hists": {}, "runq_p99_s": None},
        {"cgroup_id": 99, "counters": {}, "rates": {"cpu": 5.0}, "hists": {}},  # a host cgroup
    ]}


CONTAINERS = [{"id": "a" * 64, "name": "busy", "node": "n1", "cgroup_id": 11, "last_seen": 2,
               "labels": {"io.kubernetes.pod.name": "p1", "io.kubernetes.pod.namespace": "ns1"}},
              {"id": "b" * 64, "name": "idle", "node": "n1", "cgroup_id": 12, "last_seen": 2, "labels": {}}]


def test_top_rows_rank_and_filter():
    rows = top_rows({"n1": _perf_msg()}, CONTAINERS)
    assert [r["container"] for r in rows] == ["busy", "idle"]  # the host cgroup is left out
    assert rows[0]["runq_p99_ms"] == 2.0 and rows[0]["pod"] == "p1"
    assert [r["container"] for r in top_rows({"n1": _perf_msg()}, CONTAINERS, namespace="ns1")] == ["busy"]
    assert top_rows({"n1": _perf_msg()}, CONTAINERS, node="other") == []
    assert len(top_rows({"n1": _perf_msg()}, CONTAINERS, hosts=True)) == 3
    with pytest.raises(ValueError):
        top_rows({}, [], sort="nope")


def test_resolve_by_name_id_prefix_and_pod():
    assert resolve(CONTAINERS, name="idle")[0]["cgroup_id"] == 12
    assert resolve(CONTAINERS, name="aaaa")[0]["name"] == "busy"
    assert [c["name"] for c in resolve(CONTAINERS, pod="p1")] == ["busy"]
    with pytest.raises(NotFound, match="'nope'"):
        resolve(CONTAINERS, name="nope")


def test_merge_profiles_adds_up_and_keeps_errors():
    m = merge_profiles([{"samples": 3, "truncated": 1, "windows": 1, "folded": {"a;b": 3}, "hz": 49},
                        {"samples": 2, "truncated": 0, "windows": 1, "folded": {"a;b": 1, "a;c": 1}},
                        {"error": "no probe"}])
    assert m["samples"] == 5 and m["folded"] == {"a;b": 4, "a;c": 1} and m["errors"] == ["no probe"]


def test_histograms_pass_promtool():
    exp = Exposition(100)
    export(exp, {"n1": _perf_msg()}, {"11": "busy", "12": "idle"})
    text = exp.render()
    assert '# TYPE eunomia_container_block_io_latency_seconds histogram' in text
    assert 'eunomia_container_block_io_latency_seconds_bucket{container="busy",le="+Inf",node="n1"} 5.0' in text
    assert 'eunomia_container_block_io_latency_seconds_bucket{container="busy",le="4e-06",node="n1"} 2.0' in text
    assert 'eunomia_container_cpu_seconds_total{container="busy",node="n1"} 2.0' in text
    # every scrape has the same bucket bounds, however many buckets the probe sent
    assert text.count('eunomia_container_block_io_latency_seconds_bucket{container="busy"') == 28
    lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_malformed_perf_figures_are_skipped_not_fatal():
    exp = Exposition(100)
    export(exp, {"n1": {"cgroups": ["x", {"cgroup_id": 11, "hists": {"block": {"buckets": "bad"}, "zzz": {}},
                                          "counters": {"cpu_ns": "bad"}}]}}, {"11": "busy"})
    assert "eunomia_container" not in exp.render()


def test_probe_config_validates_the_perf_settings():
    assert ProbeConfig(profile_hz=0).profile_hz == 0
    for bad in ({"profile_hz": 5000}, {"profile_window_s": 0}, {"profile_history_s": 1}):
        with pytest.raises(ConfigError, match="profile"):
            ProbeConfig(**bad)


def test_the_oom_rule_fires_on_an_oom_event_of_a_container_only():
    rs = load_rules(rule_files((DEFAULT_RULES_DIR,)))
    ev = {"id": "x", "ts": 1, "node": "n", "kind": "oom", "pid": 5, "tid": 5, "ppid": 1, "uid": 0, "gid": 0,
          "comm": "hog", "cgroup_id": 11, "victim_pid": 5, "victim_comm": "hog", "victim_uid": 0,
          "total_vm_kb": 1, "anon_rss_kb": 30000, "file_rss_kb": 1,
          "proc": {"name": "hog", "exe": "/hog", "args": ["/hog"], "cmdline": "/hog"},
          "container": {"id": "c" * 64, "name": "web", "image": "i"}, "k8s": None}
    hits = [m.rule for m in rs.evaluate(ev)]
    assert "Container process killed for memory (OOM)" in hits
    assert "oom" in rs.filter_plan().kinds  # the kernel emits OOM events because a rule uses them
    assert not [m for m in rs.evaluate({**ev, "container": None})
                if m.rule == "Container process killed for memory (OOM)"]
    orjson.dumps(ev)


def test_cpu_time_of_a_cgroup_from_cgroupfs():
    """Without --perf-detail, CPU per container comes from cpu.stat: our own cgroup, by its id."""
    import os

    from shared.cgroupfs import CgroupPaths, cgroup2_root, cpu_usage_ns
    rel = next(line.split("::", 1)[1] for line in open("/proc/self/cgroup").read().splitlines()
               if line.startswith("0::"))
    mine = cgroup2_root() / rel.lstrip("/")
    paths = CgroupPaths(rescan_s=0)
    assert paths.path(os.stat(mine).st_ino) == mine
    assert paths.path(2**40) is None  # no such cgroup
    assert cpu_usage_ns(mine) > 0 and cpu_usage_ns(mine / "no-such-cgroup") is None


def test_stored_profiles_sum_windows_per_interval_and_stay_bounded():
    from collections import Counter

    from services.probe.profiler import MAX_EVENT_STACK_BYTES, OTHER_STACKS, StoredProfiles, Window
    sp = StoredProfiles("n1", hz=49, interval_s=60, max_cgroups=2, max_stacks=50)
    s = 10**9
    big = Counter({f"app;{'f' * 3000};leaf{i}": 10 + i for i in range(100)})   # ~300 KB of stack text
    for t in range(0, 60, 10):   # six 10 s windows, three cgroups
        w = Window(t * s, (t + 10) * s, {7: Counter(big), 8: Counter({"db;main": 5}), 9: Counter({"x;y": 1})},
                   Counter({7: 2}))
        sp.add(w)
        events = sp.due(w.end_ns)
        assert events == [] or t == 50
    assert [e["cgroup_id"] for e in events] == [7, 8] and sp.cgroups_dropped == 1   # the busiest two
    e7 = events[0]
    assert (e7["start_ns"], e7["end_ns"], e7["kind"], e7["hz"]) == (0, 60 * s, "profile", 49)
    assert e7["samples"] == 6 * sum(big.values()) == sum(e7["folded"].values())   # nothing lost: the rest summed
    assert OTHER_STACKS in e7["folded"] and e7["stacks_dropped"] == 100 - (len(e7["folded"]) - 1)
    assert sum(len(k) for k in e7["folded"]) <= MAX_EVENT_STACK_BYTES and e7["truncated"] == 12
    assert sp.due(61 * s) == []   # a fresh interval
