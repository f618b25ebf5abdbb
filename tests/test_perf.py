"""Performance analysis for real: the probe's perf and profile BPF programs, real
containers (podman, runc), the enricher naming them, the store, the API and the
`eunomia top` / `eunomia profile` commands against one NATS server.

Other tests run containers at the same time: every assertion is about our own
containers (unique names), never about totals of the node.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import aiohttp
import orjson
import pytest
import pytest_asyncio

from services.api.config import ApiConfig
from services.api.service import ApiService
from services.perf import cli as perfcli
from services.perf.formats import speedscope, svg
from services.probe.config import ProbeConfig
from services.store.client import StoreClient
from services.store.config import StoreConfig
from services.store.service import StoreService
from shared.natsserver import NatsServer, NatsServerConfig, free_port
from tests import containers
from tests.cluster import until
from tests.pipeline import Pipeline
from tests.test_dashboard import browser  # noqa: F401  (fixture: real headless Chromium)

pytestmark = [pytest.mark.bpf, pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs: needs root")]

BURN_FN = "eunomia_burn_cpu"
# Frame pointers kept and no inlining: the sampled stacks walk back through main.
BURN_C = r'''
volatile unsigned long sink;
__attribute__((noinline)) void %s(void) {
    for (unsigned long i = 0; i < 100000000UL; i++) sink += i * 7;
}
int main(void) { for (;;) %s(); }
''' % (BURN_FN, BURN_FN)
HOG_C = r'''
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(void) {
    for (;;) { char *p = malloc(1 << 20); if (!p) { sleep(1); continue; } memset(p, 1, 1 << 20); }
}
'''
TOKEN = "pt-7f3a9c0e5b2d4f81a6c3e9d07b5f2a14"  # not a placeholder (api.token refuses those)


def build(tmp: Path, name: str, src: str) -> Path:
    c = tmp / f"{name}.c"
    c.write_text(src)
    out = tmp / name
    subprocess.run(["gcc", "-static", "-O0", "-fno-omit-frame-pointer", "-fno-inline", "-o", str(out), str(c)],
                   check=True, capture_output=True)
    return out


class Stack:
    def __init__(self, pipe: Pipeline, api: ApiService, tmp: Path) -> None:
        self.pipe, self.api, self.tmp = pipe, api, tmp
        self.names: list[str] = []

    def start(self, kind: str, args: list[str], flags: list[str] | None = None) -> str:
        name = f"perf-{kind}-{uuid.uuid4().hex[:8]}"
        self.names.append(name)
        containers.run(args, name=name, detach=True, flags=flags or [])
        return name

    async def known(self, name: str, timeout: float = 180) -> dict:
        """The store's row of container `name` (the enricher named it from its events)."""
        store = StoreClient(self.pipe.bus, timeout=5)
        found: dict = {}

        async def seen() -> bool:
            for c in await store.containers():
                if c.get("name") == name and c.get("cgroup_id"):
                    found.update(c)
                    return True
            return False
        await until(seen, timeout, f"container {name} in the store")
        return found

    def perf_row(self, cgroup_id: int) -> dict | None:
        for cg in (self.pipe.probe.perf_latest or {}).get("cgroups", []):
            if cg["cgroup_id"] == cgroup_id:
                return cg
        return None

    def args(self, **kw) -> argparse.Namespace:
        base = {"container": None, "pod": None, "seconds": 4.0, "last": None, "since_ns": None, "until_ns": None,
                "format": "folded",
                "output": None, "sort": "cpu", "node": self.pipe.node, "namespace": None, "interval": 0.5,
                "once": True, "json": True, "hosts": False}
        base.update(kw)
        return argparse.Namespace(**base)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory, bb_image, podman_socket):
    tmp = tmp_path_factory.mktemp("perf")
    async with NatsServer(NatsServerConfig(port=free_port(), store_dir=tmp / "js")) as srv:
        common = Pipeline.common_for(srv.url, f"perf{uuid.uuid4().hex[:6]}")
        common = type(common)(nats_url=srv.url, node=common.node, data_dir=tmp / "data", stats_interval=0.5)
        store = StoreService(StoreConfig(fetch_timeout_s=0.1, lag_interval_s=0.5), common)
        api = ApiService(ApiConfig(port=0, token=TOKEN), common)
        # process kinds only (naming containers needs no more): other tests' file and network
        # activity on this busy machine would otherwise flood this pipeline
        cfg = ProbeConfig(kinds=("exec", "exit", "fork", "oom"), counters_interval=0.5, profile_hz=99,
                          profile_window_s=2, profile_store_interval_s=4,
                          syscall_latency=True, perf_detail=True)
        async with Pipeline(srv.url, common.node, probe_cfg=cfg, extra=[store, api]) as pipe:
            st = Stack(pipe, api, tmp)
            try:
                yield st
            finally:
                for name in st.names:
                    await asyncio.to_thread(containers.remove, name)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def busy_and_idle(stack):
    burn = build(stack.tmp, "burn", BURN_C)
    busy = stack.start("busy", ["/burn"], ["-v", f"{burn}:/burn:ro"])
    idle = stack.start("idle", ["sleep", "3600"])
    return await stack.known(busy), await stack.known(idle)


async def test_a_cpu_burning_container_has_its_function_on_top_of_its_profile(stack, busy_and_idle):
    busy, idle = busy_and_idle
    out = io.StringIO()
    assert await perfcli.profile(stack.pipe.common, stack.args(container=busy["name"], seconds=4), out) == 0
    lines = [ln.rsplit(" ", 1) for ln in out.getvalue().splitlines() if ln]
    assert lines, "no samples in the busy container's profile"
    stacks = [(s, int(n)) for s, n in lines]
    top_stack, top_n = max(stacks, key=lambda x: x[1])
    total = sum(n for _, n in stacks)
    # the sampled function is the leaf of the heaviest stack, called from main
    assert top_stack.split(";")[-1] == BURN_FN, out.getvalue()[:2000]
    assert "main" in top_stack.split(";"), top_stack
    assert top_n >= total // 2
    assert total >= 20  # 4 s at 99 Hz of a busy loop (gets at least part of a core here)

    # the idle container: no samples at all
    out = io.StringIO()
    assert await perfcli.profile(stack.pipe.common, stack.args(container=idle["name"], seconds=3), out) == 0
    assert out.getvalue() == ""

    # the same profile from the stored history (continuous sampling), and in the other formats
    prof = await stack.pipe.probe.profile({"cgroup_id": busy["cgroup_id"], "since": 0})
    assert prof["samples"] > 0 and prof["windows"] >= 2
    assert any(s.endswith(BURN_FN) for s in prof["folded"])
    doc = speedscope(prof["folded"], busy["name"])
    frames = [f["name"] for f in doc["shared"]["frames"]]
    assert BURN_FN in frames and sum(doc["profiles"][0]["weights"]) == prof["samples"]
    assert BURN_FN in svg(prof["folded"], busy["name"])


async def test_profile_of_an_unknown_container_is_a_clear_error(stack, capsys):
    rc = await perfcli.profile(stack.pipe.common, stack.args(container="no-such-container-xyz"), io.StringIO())
    assert rc == 1
    assert "no-such-container-xyz" in capsys.readouterr().err
    ctl = stack.pipe.probe.perf_ctl  # the probe's read-only performance ops (shared/control.py)
    reply = await ctl.handle(orjson.dumps({"op": "profile", "cgroup_id": -3, "seconds": 1}))
    assert "cgroup_id" in reply["error"] and reply["code"] == "bad_args"
    reply = await ctl.handle(orjson.dumps({"op": "profile", "seconds": 10_000}))
    assert "seconds" in reply["error"] and reply["code"] == "bad_args"


async def test_top_ranks_the_busy_container_above_the_idle_one(stack, busy_and_idle):
    busy, idle = busy_and_idle
    out = io.StringIO()
    assert await perfcli.top(stack.pipe.common, stack.args(), out) == 0
    rows = orjson.loads(out.getvalue())
    names = [r["container"] for r in rows]
    assert busy["name"] in names and idle["name"] in names, names
    assert names.index(busy["name"]) < names.index(idle["name"])
    b = rows[names.index(busy["name"])]
    assert b["cpu"] > 0.05 and b["cpu_seconds"] > 0

    # the same table from the API (the dashboard's source)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        async with http.get(f"{stack.api.url}/api/v1/top?node={stack.pipe.node}") as r:
            assert r.status == 200
            names = [x["container"] for x in (await r.json())["items"]]
            assert names.index(busy["name"]) < names.index(idle["name"])
        async with http.get(f"{stack.api.url}/api/v1/top?sort=bogus") as r:
            assert r.status == 400 and "sort" in (await r.json())["error"]
        async with http.get(f"{stack.api.url}/api/v1/profile",
                            params={"container": busy["name"], "seconds": "2", "format": "folded"}) as r:
            assert r.status == 200
            assert BURN_FN in await r.text()
        async with http.get(f"{stack.api.url}/api/v1/profile",
                            params={"container": busy["name"], "last": "60", "format": "speedscope"}) as r:
            assert r.status == 200
            assert BURN_FN in [f["name"] for f in (await r.json())["shared"]["frames"]]
        async with http.get(f"{stack.api.url}/api/v1/profile", params={"container": "nope-xyz"}) as r:
            assert r.status == 404


async def test_the_continuous_profile_is_stored_and_read_back_by_time_range(stack, busy_and_idle):
    busy, idle = busy_and_idle
    since = time.time_ns() - 600 * 10**9
    out = io.StringIO()

    async def stored() -> bool:  # the probe's windows reach the store as "profile" events
        out.seek(0)
        out.truncate()
        rc = await perfcli.profile(stack.pipe.common, stack.args(container=busy["name"], since_ns=since), out)
        return rc == 0 and BURN_FN in out.getvalue()
    await until(stored, 60, "the busy container's function in its stored profile")
    heaviest = max((ln.rsplit(" ", 1) for ln in out.getvalue().splitlines() if ln), key=lambda x: int(x[1]))
    assert heaviest[0].split(";")[-1] == BURN_FN

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        url = f"{stack.api.url}/api/v1/profile"
        async with http.get(url, params={"container": busy["name"], "since": str(since)}) as r:
            assert r.status == 200
            prof = await r.json()
        assert prof["source"] == "store" and prof["windows"] >= 1 and prof["samples"] > 0
        assert sum(prof["folded"].values()) == prof["samples"]  # stacks past the bound are summed, not lost
        assert prof["start_ns"] >= since and prof["end_ns"] <= time.time_ns()
        # a range before the container ran holds nothing; the idle container next to nothing
        async with http.get(url, params={"container": busy["name"], "since": "2020-01-01T00:00:00Z",
                                         "until": "2020-01-02T00:00:00Z"}) as r:
            assert r.status == 200 and (await r.json())["samples"] == 0
        async with http.get(url, params={"container": idle["name"], "since": str(since)}) as r:
            assert r.status == 200
            idle_prof = await r.json()  # its start-up may have been sampled, nothing since
            assert idle_prof["samples"] < 20 and not any(BURN_FN in st for st in idle_prof["folded"]), idle_prof
        for bad in ({"since": "yesterday"}, {"since": "2", "until": "1"}, {"since": "1", "last": "60"},
                    {"until": "1"}):
            async with http.get(url, params={"container": busy["name"], **bad}) as r:
                assert r.status == 400, bad
                assert "since" in (await r.json())["error"] or "until" in (await r.json())["error"], bad
    assert perfcli.when("2h", "--since") < time.time_ns() - 7000 * 10**9
    assert perfcli.when("1700000000000000000", "--since") == 1700000000000000000


def _hist_count(metrics: str, metric: str, container: str) -> float:
    m = re.search(rf'^{metric}_count\{{[^}}]*container="{re.escape(container)}"[^}}]*\}} (\S+)$', metrics, re.M)
    return float(m.group(1)) if m else 0.0


async def test_block_io_and_tcp_connects_fill_histograms_under_the_containers_names(stack):
    data = stack.tmp / "blk"
    data.mkdir()
    disk = stack.start("disk", ["sh", "-c", "while true; do dd if=/dev/zero of=/data/f bs=64k count=16 "
                                            "conv=fsync 2>/dev/null; sleep 0.05; done"], ["-v", f"{data}:/data"])
    net = stack.start("net", ["sh", "-c", "mkdir -p /www; httpd -p 127.0.0.1:9000 -h /www; while true; do "
                                          "wget -q -O- http://127.0.0.1:9000/ 2>/dev/null; sleep 0.1; done"])
    disk_c, net_c = await stack.known(disk), await stack.known(net)

    async def filled() -> bool:
        d, n = stack.perf_row(disk_c["cgroup_id"]), stack.perf_row(net_c["cgroup_id"])
        return bool(d and n and d["hists"].get("block", {}).get("count") and n["hists"].get("connect", {}).get("count"))
    await until(filled, 120, "block and connect histograms of our containers")
    d, n = stack.perf_row(disk_c["cgroup_id"]), stack.perf_row(net_c["cgroup_id"])
    assert sum(d["hists"]["block"]["buckets"]) > 0 and d["hists"]["block"]["sum_s"] > 0
    assert d["counters"]["block_bytes"] > 0
    assert "connect" not in d["hists"]  # the disk container connects nowhere
    assert n["counters"]["connects"] > 0
    assert n["counters"]["net_tx_bytes"] > 0 and n["counters"]["net_rx_bytes"] > 0  # HTTP over loopback
    # file bytes (with syscall latency): dd's writes to a regular file count, wget's to a pipe do not
    async def file_bytes() -> bool:
        row = stack.perf_row(disk_c["cgroup_id"])
        return bool(row and row["counters"]["file_write_bytes"] >= 16 * 65536)
    await until(file_bytes, 60, "file write bytes of the disk container")
    n = stack.perf_row(net_c["cgroup_id"])
    assert n["counters"]["file_write_bytes"] < stack.perf_row(disk_c["cgroup_id"])["counters"]["file_write_bytes"]
    # syscall latency (opt-in): the net container's slowest syscalls by total time, named
    async def syscalls() -> bool:
        row = stack.perf_row(net_c["cgroup_id"])
        return bool(row and row.get("syscalls"))
    await until(syscalls, 60, "syscall latency figures of the net container")
    calls = stack.perf_row(net_c["cgroup_id"])["syscalls"]
    assert all(c["count"] > 0 and c["total_s"] >= c["max_s"] > 0 for c in calls)
    assert {"connect", "sendto", "recvfrom", "read", "write", "wait4", "poll", "execve"} & {c["syscall"] for c in calls}
    assert [c["total_s"] for c in calls] == sorted((c["total_s"] for c in calls), reverse=True)

    async with aiohttp.ClientSession() as http:
        async def exported() -> bool:
            async with http.get(f"{stack.api.url}/metrics") as r:
                text = await r.text()
            return (_hist_count(text, "eunomia_container_block_io_latency_seconds", disk) > 0
                    and _hist_count(text, "eunomia_container_tcp_connect_latency_seconds", net) > 0)
        await until(exported, 120, "histograms on /metrics with the containers' names")
        async with http.get(f"{stack.api.url}/metrics") as r:
            text = await r.text()
    assert re.search(rf'eunomia_container_block_io_latency_seconds_bucket\{{container="{disk}",'
                     rf'le="[^"]+",node="{stack.pipe.node}"\}} \d+(\.\d+)?', text)
    assert "# TYPE eunomia_container_block_io_latency_seconds histogram" in text
    lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert _hist_count(text, "eunomia_container_tcp_connect_latency_seconds", disk) == 0
    assert re.search(rf'eunomia_container_cpu_seconds_total\{{container="{net}"', text)
    assert re.search(rf'eunomia_container_network_receive_bytes_total\{{container="{net}",node="[^"]+"\}} [1-9]', text)


async def test_an_oom_killed_container_raises_an_oom_event_with_its_name(stack):
    hog = build(stack.tmp, "hog", HOG_C)
    name = stack.start("oom", ["/hog"], ["-v", f"{hog}:/hog:ro", "--memory", "32m", "--memory-swap", "32m"])
    cid = await asyncio.to_thread(containers.inspect_id, name)
    ev = await stack.pipe.wait_for(lambda e: e["kind"] == "oom" and (e.get("container") or {}).get("id") == cid,
                                   timeout=180)
    # the name comes from podman's API socket, which other tests on this machine sometimes restart:
    # when the enricher could not ask it, the event carries the container id only (checked above)
    if ev["container"].get("name") is not None:
        assert ev["container"]["name"] == name
    assert ev["victim_comm"] == "hog" and ev["victim_pid"] > 0
    assert ev["anon_rss_kb"] > 1024  # it was killed for its memory
    c = await stack.known(name)

    async def counted() -> bool:
        row = stack.perf_row(c["cgroup_id"])
        return bool(row and row["counters"]["oom_kills"] >= 1)
    await until(counted, 30, "the OOM kill counted for the container")


@pytest.mark.browser
async def test_dashboard_shows_the_top_table_and_a_flame_graph(stack, busy_and_idle, browser):
    """Real headless Chromium against the running API: blocking selenium runs in a thread."""
    busy, idle = busy_and_idle

    def drive() -> list[str]:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select, WebDriverWait

        def wait(cond, what, timeout=60):
            return WebDriverWait(browser, timeout, poll_frequency=0.2).until(lambda d: cond(), message=what)

        browser.get(f"{stack.api.url}/?token={TOKEN}")

        def top_names():
            return browser.execute_script(
                "return [...document.querySelectorAll('#top-table tbody tr[data-container]')]"
                ".map(r => r.dataset.container)")
        names = wait(lambda: (lambda n: n if busy["name"] in n and idle["name"] in n else None)(top_names()),
                     "both containers in the top table")
        assert names.index(busy["name"]) < names.index(idle["name"])
        wait(lambda: busy["name"] in [o.get_attribute("value") for o in
                                      browser.find_elements(By.CSS_SELECTOR, "#profile-container option")],
             "busy container offered for profiling")
        form = browser.find_element(By.ID, "profile-form")
        Select(form.find_element(By.ID, "profile-container")).select_by_value(busy["name"])
        Select(form.find_element(By.NAME, "seconds")).select_by_visible_text("2")
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        try:
            wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#flame svg g title"), "flame graph drawn")
        except Exception as e:
            status = browser.find_element(By.ID, "profile-status").text
            logs = browser.get_log("browser") if hasattr(browser, "get_log") else []
            raise AssertionError(f"no flame graph; status {status!r}; browser log {logs}") from e
        return browser.execute_script(
            "return [...document.querySelectorAll('#flame svg g title')].map(t => t.textContent)")

    titles = await asyncio.to_thread(drive)
    assert any(t.startswith(BURN_FN + " (") for t in titles), titles[:20]
