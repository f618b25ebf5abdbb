"""The ia32 exit program is attached only once an ia32 call is seen (bpf/syscalls_ia32.bpf.c,
services/probe/ia32_exit.py): calls before that go out from their entry with the result
unknown, and must still raise every native alert. Real BPF, real podman containers running
tests/data/int80.c (the same helper as tests/test_probe.py and tests/test_default_rules.py).

Other tests on this node may make ia32 calls at any moment, and every probe sees them: the
lazy probe's assertions hold whichever call attaches its exit program; the alerts are
checked with "never" (every ia32 call from its entry), which nothing else can change.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import pytest_asyncio

from services.probe.config import ProbeConfig
from services.probe.service import ProbeService
from shared import bus as busmod
from shared import subjects
from shared.config import CommonConfig
from shared.natsserver import NatsServer, NatsServerConfig, free_port
from shared.stats import Stats
from tests import containers
from tests.conftest import ROOT
from tests.rule_containers import NO_NET, UNCONFINED, alert_for, alerting_pipeline, in_container
from tests.test_default_rules import INT80_RULES
from tests.test_probe import Collector

pytestmark = [pytest.mark.bpf, pytest.mark.podman, pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs: needs root")]


@pytest.fixture(scope="module")
def int80(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("int80")
    d.chmod(0o755)
    subprocess.run(["gcc", "-static", "-no-pie", "-O1", "-o", str(d / "int80"), str(ROOT / "tests/data/int80.c")],
                   check=True, capture_output=True)
    return d


class LazyProbe:
    def __init__(self, svc: ProbeService, col: Collector) -> None:
        self.svc, self.col = svc, col


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lazy(tmp_path_factory):
    import tests.test_probe as tp
    js = tmp_path_factory.mktemp("js")
    async with NatsServer(NatsServerConfig(port=free_port(), store_dir=js)) as srv:
        common = CommonConfig(nats_url=srv.url, node=tp.NODE, data_dir=js, stats_interval=0.5)
        col = Collector()
        async with busmod.connect(srv.url, Stats("test")) as bus:
            await bus.subscribe_batches(subjects.raw(tp.NODE), col.handler)
            await bus.nc.flush()
            svc = ProbeService(ProbeConfig(counters_interval=0.5), common)  # ia32_exit "lazy", the default
            stop = asyncio.Event()
            async with svc:
                task = asyncio.create_task(svc.run(stop))
                yield LazyProbe(svc, col)
                stop.set()
                await task


async def run_int80(int80: Path) -> int:
    """Run the helper in a new container; the inode of its cgroup (events carry it)."""
    name = f"eun-lazy-{uuid.uuid4().hex[:8]}"
    try:
        await asyncio.to_thread(containers.run, ["sh", "-c", "sleep 2; /h/int80; sleep 1"], name=name, detach=True,
                                flags=[*UNCONFINED, *NO_NET, "-v", f"{int80}:/h:ro"])
        cid = await asyncio.to_thread(containers.inspect_id, name)
        inode = Path(f"/sys/fs/cgroup/unified/libpod_parent/libpod-{cid}").stat().st_ino
        await asyncio.to_thread(subprocess.run, [*containers.PODMAN, "wait", name], capture_output=True, timeout=60)
    finally:
        await asyncio.to_thread(containers.remove, name)
    return inode


async def test_exit_program_attaches_after_the_first_ia32_call(lazy, int80, bb_image):
    col, x = lazy.col, lazy.svc.ia32_exit
    assert x is not None and x.mode == "lazy" and x.error is None

    def mine(inode, kind):
        return lambda e: e["kind"] == kind and e["cgroup_id"] == inode and e["comm"] == "int80"

    def shadow(inode):
        return lambda e: mine(inode, "open")(e) and e["path"] == "/etc/shadow"

    first = await run_int80(int80)
    opens = await col.wait(shadow(first), n=3, timeout=30)
    # from the entry (result unknown, judged as success) or, if another test's ia32 call came first, from the exit
    assert all((e.get("ret_unknown") is True and e["ret"] == 0) or ("ret_unknown" not in e and e["ret"] >= 0)
               for e in opens), opens
    dups = await col.wait(lambda e: mine(first, "dup")(e) and e["newfd"] in (0, 1), n=2, timeout=30)
    assert [e["fd_type"] for e in dups] == ["socket", "socket"], dups  # accepted sockets, seen or found by inode
    for _ in range(40):
        if x.attached:
            break
        await asyncio.sleep(0.1)
    assert x.attached and lazy.svc.stats.get("probe_ia32_exit_attached") == 1

    second = await run_int80(int80)  # now every call is reported from its exit, with its result
    opens = await col.wait(shadow(second), n=3, timeout=30)
    assert all("ret_unknown" not in e and e["ret"] >= 3 for e in opens), opens
    acc = await col.wait(mine(second, "accept"), n=3, timeout=30)
    assert all(e["ret"] > 3 for e in acc)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def entry_only(tmp_path_factory, podman_socket, bb_image):
    async with alerting_pipeline(tmp_path_factory, podman_socket, ProbeConfig(module_fallback="on", ia32_exit="never"),
                                 throttle_window_s=0) as p:
        yield p


async def test_ia32_calls_reported_from_their_entry_raise_the_native_alerts(entry_only, int80):
    """An attacker's first ia32 calls come before any exit program could be attached: all of
    them, results unknown, must raise what the same calls raise through the native ABI."""
    p = entry_only
    assert p.probe.ia32_exit.mode == "never" and not p.probe.ia32_exit.attached
    cid = await in_container("/h/int80; true", [*UNCONFINED, *NO_NET, "-v", f"{int80}:/h:ro"])
    got = {}
    for rule in INT80_RULES:
        got[rule] = await alert_for(p, rule, cid)
    shadow = got["Read sensitive file"]["event"]
    assert shadow["ret_unknown"] is True and shadow["ret"] == 0
    meta = got["Contact cloud metadata service"]
    assert meta["event"].get("ret_unknown") is True and "result=UNKNOWN" in meta["output"]
    redirect = got["Redirect STDOUT/STDIN to network connection in container"]["event"]
    assert redirect["fd_type"] == "socket" and redirect["newfd"] in (0, 1)
