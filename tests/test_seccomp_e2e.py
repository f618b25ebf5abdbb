"""Seccomp profile end to end: the real probe records a running container's
syscalls in the kernel, `eunomia seccomp` fetches them over NATS and writes
a profile, and a new container under that profile runs the same workload
but is refused a syscall the workload never made."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid

import pytest
import pytest_asyncio

from services.seccomp.profile import BASELINE
from services.seccomp.resolve import from_cgroupfs, resolve_locally
from shared import subjects
from shared.config import CommonConfig
from shared.natsserver import NatsServer, NatsServerConfig, free_port
from tests import containers
from tests.conftest import ROOT, is_root

pytestmark = [pytest.mark.bpf, pytest.mark.podman, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

# The same commands in the recorded container (in a loop) and in the new one (once).
WORKLOAD = "head -1 /etc/passwd; ls /bin/busybox; mkdir -p /tmp/w; rmdir /tmp/w"
# Outside the workload: chroot(2). CAP_SYS_CHROOT is in podman's default set, so
# only seccomp can refuse it (checked below without the profile).
OUTSIDE = "chroot / true"
OUTSIDE_SYSCALL = "chroot"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli.main", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


async def _ctl(url: str, subject: str, body: dict, timeout: float = 2.0):
    import nats
    import orjson
    nc = await nats.connect(url)
    try:
        return orjson.loads((await nc.request(subject, orjson.dumps(body), timeout=timeout)).data)
    finally:
        await nc.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def probe(tmp_path_factory, podman_socket):
    """nats-server, the real probe and the real enricher (which knows podman's
    containers through the Engine API) in this event loop, for one node."""
    if not is_root():
        pytest.fail("the probe needs root")
    from services.enricher.config import EnricherConfig
    from services.enricher.service import EnricherService
    from services.probe.config import ProbeConfig
    from services.probe.service import ProbeService

    tmp = tmp_path_factory.mktemp("seccomp")
    node = f"sc{uuid.uuid4().hex[:6]}"
    async with NatsServer(NatsServerConfig(port=free_port(), store_dir=tmp / "js")) as srv:
        common = CommonConfig(nats_url=srv.url, node=node, data_dir=tmp)
        stop = asyncio.Event()
        async with ProbeService(ProbeConfig(syscall_profiles=True), common) as svc, \
                EnricherService(EnricherConfig(runtime_sockets=(podman_socket,)), common) as enricher:
            tasks = [asyncio.create_task(s.run(stop)) for s in (svc, enricher)]
            for _ in range(100):  # until it answers the ctl op we need
                try:
                    if "syscalls" in await _ctl(srv.url, subjects.ctl_probe(node), {"op": "syscalls", "cgroup_id": 1}):
                        break
                except Exception:
                    pass
                await asyncio.sleep(0.2)
            yield common, svc
            stop.set()
            await asyncio.gather(*tasks)


async def test_profile_from_probe_allows_workload_denies_rest(probe, bb_image, tmp_path):
    common, svc = probe
    name = f"eunomia-sc-{uuid.uuid4().hex[:8]}"
    run = asyncio.to_thread  # podman and the CLI block; the probe runs on this loop
    try:
        await run(containers.run, ["sh", "-c", f"while true; do {{ {WORKLOAD}; }} >/dev/null; sleep 0.2; done"],
                  name=name, detach=True)
        cid = await run(containers.inspect_id, name)
        # both local ways to find the cgroup agree (podman inspect, cgroup tree by id prefix)
        cg = (await run(resolve_locally, name)).cgroup_id
        assert (await run(from_cgroupfs, cid[:12])).cgroup_id == cg
        await asyncio.sleep(1.0)  # a few rounds of the loop
        svc.read_counters()  # the probe's Stats carry the bitmap map's state
        assert svc.stats.get("seccomp_tracked_cgroups") >= 1
        assert "seccomp_cgroups_untracked_total" in svc.stats.counters

        # the CLI asks the enricher first (2 s at most) and falls back to podman: wait until the
        # enricher's table names the container, so that the path under test is the one taken
        for _ in range(150):
            try:
                listing = await _ctl(common.nats_url, subjects.ctl_enricher(common.node), {"op": "containers"}, 5.0)
                if any(c.get("name") == name for c in listing.get("containers", [])):
                    break
            except Exception:
                pass
            await asyncio.sleep(0.2)
        else:
            pytest.fail(f"the enricher did not name container {name} within 30 s")
        cli = ["--nats", common.nats_url, "--node", common.node, "seccomp"]
        full = tmp_path / "full.json"
        r = await run(_cli, *cli, name, "-o", str(full))
        assert r.returncode == 0, r.stderr
        assert f"(cgroup {cg}, via enricher)" in r.stderr  # the enricher's table named the container
        prof = json.loads(full.read_text())
        names = prof["syscalls"][0]["names"]
        assert prof["defaultAction"] == "SCMP_ACT_ERRNO" and prof["syscalls"][0]["action"] == "SCMP_ACT_ALLOW"
        assert {"execve", "mkdir", "rmdir", "getdents64"} <= set(names)
        assert "pivot_root" in names  # runc's init, recorded from container start
        assert OUTSIDE_SYSCALL not in names  # so refusing it below is the profile's doing

        # the same on stdout, by id prefix; then forget the record (--reset)
        r = await run(_cli, *cli, cid[:12], "--reset")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["syscalls"][0]["names"] == names

        # recorded again from a running container: the workload only (plus the baseline)
        await asyncio.sleep(1.0)
        warm = tmp_path / "warm.json"
        r = await run(_cli, *cli, name, "-o", str(warm))
        assert r.returncode == 0, r.stderr
        warm_names = json.loads(warm.read_text())["syscalls"][0]["names"]
        assert set(BASELINE) <= set(warm_names) and "pivot_root" not in warm_names
        assert len(warm_names) < len(names)

        for profile in (full, warm):
            ok = await run(containers.run, ["sh", "-c", WORKLOAD], flags=["--security-opt", f"seccomp={profile}"],
                           check=False)
            assert ok.returncode == 0, f"{profile.name}: {ok.stderr}"
            assert ok.stdout.splitlines() == ["root:x:0:0:root:/root:/bin/sh", "/bin/busybox"]

        free = await run(containers.run, ["sh", "-c", OUTSIDE], check=False)
        assert free.returncode == 0, f"control run without the profile failed: {free.stderr}"
        denied = await run(containers.run, ["sh", "-c", OUTSIDE], flags=["--security-opt", f"seccomp={full}"],
                           check=False)
        assert denied.returncode != 0
        assert "Operation not permitted" in denied.stderr
    finally:
        await run(containers.remove, name)


async def test_cli_errors_are_clear(probe, bb_image):
    common, _ = probe
    base = ["--nats", common.nats_url, "--node", common.node, "seccomp"]
    r = await asyncio.to_thread(_cli, *base, "no-such-container-5e1f")
    assert r.returncode == 1 and "unknown container 'no-such-container-5e1f'" in r.stderr, r.stderr

    stopped, idle = (f"eunomia-sc-{k}-{uuid.uuid4().hex[:8]}" for k in ("stopped", "idle"))
    try:
        # created, never started: no cgroup
        await asyncio.to_thread(subprocess.run, [*containers.PODMAN, "create", *containers.RUN_FLAGS, "--name",
                                                 stopped, containers.IMAGE, "true"], capture_output=True, check=True)
        r = await asyncio.to_thread(_cli, *base, stopped)
        assert r.returncode == 1 and "is not running" in r.stderr, r.stderr

        # running, but asked of a node where no probe answers
        await asyncio.to_thread(containers.run, ["sleep", "600"], name=idle, detach=True)
        r = await asyncio.to_thread(_cli, "--nats", common.nats_url, "--node", "nobody-here", "seccomp", idle,
                                    "--timeout", "1")
        assert r.returncode == 1 and "probe on node 'nobody-here' not reachable" in r.stderr, r.stderr

        # record forgotten (syscalls_reset) while it sleeps: nothing recorded
        from shared import subjects
        cg = (await asyncio.to_thread(resolve_locally, idle)).cgroup_id
        await _ctl(common.nats_url, subjects.ctl_probe(common.node), {"op": "syscalls_reset", "cgroup_id": cg})
        r = await asyncio.to_thread(_cli, *base, idle)
        assert r.returncode == 1 and "no syscalls recorded" in r.stderr, r.stderr
    finally:
        for n in (stopped, idle):
            await asyncio.to_thread(containers.remove, n)
