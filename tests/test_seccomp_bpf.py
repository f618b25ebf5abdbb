"""bpf/syscalls.bpf.c on its own (real BPF, real podman): the per-cgroup
bitmap records what a container does and nothing of the host."""
from __future__ import annotations

import time
import uuid

import pytest

from services.probe import syscall_profile
from services.seccomp.resolve import resolve_locally
from services.seccomp.syscall_names import NUMBERS
from shared import cgroupfs
from shared.stats import Stats
from tests import containers
from tests.conftest import ROOT, is_root

pytestmark = [pytest.mark.bpf, pytest.mark.podman]


@pytest.fixture(scope="module")
def sc_bpf():
    if not is_root():
        pytest.fail("BPF tests need root")
    from bcc import BPF
    b = BPF(src_file=str(ROOT / "bpf" / "syscalls.bpf.c").encode())
    yield b
    b.cleanup()


def _wait_for(pred, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    return pred()


def test_container_syscalls_recorded_host_not(sc_bpf, bb_image):
    name = f"eunomia-sc-bpf-{uuid.uuid4().hex[:8]}"
    try:
        containers.run(["sh", "-c", "while true; do mkdir -p /tmp/d; rmdir /tmp/d; sleep 0.1; done"],
                       name=name, detach=True)
        cg = resolve_locally(name).cgroup_id
        want = {NUMBERS[n] for n in ("execve", "mkdir", "rmdir", "exit_group")}
        seen = _wait_for(lambda: set(syscall_profile.dump(sc_bpf, cg)) >= want and syscall_profile.dump(sc_bpf, cg))
        assert set(seen) >= want, f"missing {want - set(seen)}"
        assert seen == sorted(seen)
        assert all(0 <= n < 512 for n in seen)
        # the host (root cgroup, id 1) is never recorded
        assert syscall_profile.dump(sc_bpf, 1) == []
        assert syscall_profile.tracked_cgroups(sc_bpf) >= 1
        assert syscall_profile.counters(sc_bpf)["seccomp_cgroups_untracked_total"] == 0
        # reset forgets; the still-running loop records again
        assert syscall_profile.reset(sc_bpf, cg) is True
        # (waited for until mkdir itself: the loop may be in its sleep when the reset lands)
        assert _wait_for(lambda: NUMBERS["mkdir"] in syscall_profile.dump(sc_bpf, cg)), \
            syscall_profile.dump(sc_bpf, cg)
        assert syscall_profile.reset(sc_bpf, 2**63) is False
    finally:
        containers.remove(name)


def test_full_map_is_counted_not_silent(bb_image):
    """With room for one cgroup, a second busy container is counted as untracked."""
    from bcc import BPF
    b = BPF(src_file=str(ROOT / "bpf" / "syscalls.bpf.c").encode(), cflags=["-DSC_MAX_CGROUPS=1"])
    try:
        for _ in range(2):
            containers.run(["sh", "-c", "ls / >/dev/null"], name=f"eunomia-sc-full-{uuid.uuid4().hex[:8]}")
        assert syscall_profile.tracked_cgroups(b) == 1
        untracked = syscall_profile.counters(b)["seccomp_cgroups_untracked_total"]
        assert untracked > 0
        stats = Stats("probe")
        syscall_profile.export(b, stats)
        syscall_profile.export(b, stats)  # idempotent: copies, never double counts
        assert untracked <= stats.get("seccomp_cgroups_untracked_total") <= \
            syscall_profile.counters(b)["seccomp_cgroups_untracked_total"]
        assert stats.get("seccomp_tracked_cgroups") == 1
    finally:
        b.cleanup()


def test_bitmaps_of_gone_cgroups_are_pruned_after_grace(sc_bpf, bb_image):
    live, gone = (f"eunomia-sc-{k}-{uuid.uuid4().hex[:8]}" for k in ("live", "gone"))
    try:
        for n in (live, gone):
            containers.run(["sleep", "600"], name=n, detach=True)
        live_cg, gone_cg = (resolve_locally(n).cgroup_id for n in (live, gone))
        assert syscall_profile.dump(sc_bpf, gone_cg) and syscall_profile.dump(sc_bpf, live_cg)
        containers.remove(gone)
        assert _wait_for(lambda: gone_cg not in cgroupfs.live_cgroup_ids())

        pruner = syscall_profile.Pruner(grace_s=5, interval_s=0)
        assert gone_cg not in _pruned_ids(pruner, sc_bpf, now=0)   # gone from now on
        assert syscall_profile.dump(sc_bpf, gone_cg)               # kept during the grace period
        pruner.maybe_prune(sc_bpf, now=5)
        assert syscall_profile.dump(sc_bpf, gone_cg) == []         # freed after it
        assert syscall_profile.dump(sc_bpf, live_cg)               # the living stay

        # within interval_s of the last scan nothing is scanned (nor freed)
        scans = []
        rate_limited = syscall_profile.Pruner(grace_s=0, interval_s=30,
                                              live=lambda: scans.append(1) or cgroupfs.live_cgroup_ids())
        rate_limited.maybe_prune(sc_bpf, now=100)
        rate_limited.maybe_prune(sc_bpf, now=110)
        assert scans == [1] and syscall_profile.dump(sc_bpf, live_cg)
    finally:
        for n in (live, gone):
            containers.remove(n)


def _pruned_ids(pruner, bpf, now):
    before = {k.value for k in bpf[b"sc_bitmaps"].keys()}
    pruner.maybe_prune(bpf, now=now)
    return before - {k.value for k in bpf[b"sc_bitmaps"].keys()}

