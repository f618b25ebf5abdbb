"""Evasions of the default rules, tried for real in podman containers
(probe with real BPF -> enricher -> alerter), and ordinary container life
that must stay quiet:

- names the attacker chooses exempt nothing: a busybox renamed runc doing
  unshare, a memfd named like runc's clone exec'd, a mount under a parent
  named tini;
- setgid and modes with bits above 07777 alert; ::ffff:169.254.169.254 is
  the metadata address;
- one container cannot flush another's drop-and-exec state, nor crowd its
  alerts out of the throttle;
- start-up, `podman exec`, scripts, cron-like loops, servers and health
  checks raise nothing.

The alerter here throttles (small per-container caps and state tables, so
the floods stay short) unlike tests/test_default_rules.py.
"""
import asyncio
import subprocess
import uuid

import pytest
import pytest_asyncio

from tests import containers
from tests.rule_containers import UNCONFINED, alerting_pipeline, alerts_of, build_static
from tests.rule_containers import alert_for as alert_for_
from tests.rule_containers import in_container as in_container_

pytestmark = [pytest.mark.bpf, pytest.mark.podman, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

KEYS_PER_CONTAINER = 10
STATE_SIZE = 200


@pytest.fixture(scope="module")
def actions(tmp_path_factory):
    return build_static(tmp_path_factory, "alerter_actions.c", "/x")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pipe(tmp_path_factory, podman_socket, bb_image):
    async with alerting_pipeline(tmp_path_factory, podman_socket, throttle_window_s=600, throttle_max_repeats=5,
                                 throttle_keys_per_container=KEYS_PER_CONTAINER, state_table_size=STATE_SIZE,
                                 summary_interval_s=0.5) as p:
        yield p


def _name() -> str:
    return f"eunomia-hard-{uuid.uuid4().hex[:10]}"


async def in_container(script: str, flags: list[str] = (), name: str | None = None) -> str:
    return await in_container_(script, flags, check=True, timeout=120, name=name or _name())


async def alert_for(p, rule: str, cid: str, timeout: float = 90.0) -> dict:
    return await alert_for_(p, rule, cid, timeout)


# --- names chosen by the attacker exempt nothing ---------------------------------

async def test_program_renamed_runc_gets_no_runtime_exemption(pipe, actions):
    # exe /tmp/runc, comm "runc:[2:INIT]": the old `proc.name startswith runc` exemption switched this off
    cid = await in_container("cp /x/actions /tmp/runc; /tmp/runc unshare-as 'runc:[2:INIT]'; true",
                             [*actions, *UNCONFINED])
    a = await alert_for(pipe, "Change namespace in container", cid)
    assert a["event"]["proc"]["name"] == "runc" and a["event"]["comm"] == "runc:[2:INIT]"
    assert not a["event"]["proc"].get("is_container_runtime")


async def test_memfd_named_like_runcs_clone_is_still_fileless(pipe, actions):
    cid = await in_container("/x/actions memfd-exec runc_cloned:/proc/self/exe", actions)
    a = await alert_for(pipe, "Fileless execution via memfd_create", cid)
    assert not a["event"]["proc"].get("is_container_runtime")


async def test_parent_named_tini_does_not_make_an_entrypoint(pipe):
    # a script named tini starts the mount: its child's parent is "tini" by name only
    cid = await in_container("mkdir -p /mnt/t; printf '#!/bin/sh\\nmount -t tmpfs none /mnt/t; true\\n' > /tmp/tini; "
                             "chmod 755 /tmp/tini; /tmp/tini", ["--privileged"])
    a = await alert_for(pipe, "Mount command launched in container", cid)
    assert a["event"]["proc"]["pname"] == "tini" and not a["event"]["proc"].get("is_container_entrypoint")


# --- set-id bits and addresses -------------------------------------------------------

@pytest.mark.parametrize("how", ["chmod g+s /tmp/f", "/x/actions chmod 2755 /tmp/f",
                                 "/x/actions chmod 12755 /tmp/f", "/x/actions chmod 174755 /tmp/f",
                                 "/x/actions fchmod 4755 /tmp/f"])
async def test_setgid_and_high_bit_modes_alert(pipe, actions, how):
    cid = await in_container(f"touch /tmp/f; {how}", actions)
    a = await alert_for(pipe, "Set setuid or setgid bit", cid)
    assert "S_ISGID" in a["output"] or "S_ISUID" in a["output"], a["output"]
    assert "file=/tmp/f " in a["output"], a["output"]  # fchmod too: the kernel names the fd's file


async def test_ownership_change_by_fd_names_the_file(pipe, actions):
    # fchown names no path: the kernel walks the fd's (no open of it need reach user space)
    cid = await in_container("/x/actions fchown 65534 /etc/passwd", actions)
    a = await alert_for(pipe, "Sensitive file ownership changed", cid)
    ev = a["event"]
    assert (ev["path"], ev["owner_uid"], ev["path_from_fd"]) == ("/etc/passwd", 65534, True) and ev["fd"] >= 3
    assert "file=/etc/passwd" in a["output"]


async def test_ipv4_mapped_metadata_address_alerts(pipe, actions):
    cid = await in_container("/x/actions connect6 ::ffff:169.254.169.254 80; true", [*actions, "--network", "none"])
    a = await alert_for(pipe, "Contact cloud metadata service", cid)
    assert a["event"]["daddr"] == "::ffff:169.254.169.254"


# --- one container cannot flush or crowd out another ------------------------------------

async def test_state_flood_in_one_container_keeps_anothers_drop(pipe, tmp_path):
    """The victim creates a binary, a noisy container creates many more files than the
    state table holds, then the victim runs its binary: drop-and-execute still alerts."""
    sync = tmp_path / "sync"
    sync.mkdir()
    victim = _name()
    task = asyncio.create_task(in_container(
        "cp /bin/busybox /tmp/drop; touch /sync/created; "
        "i=0; while [ ! -e /sync/go ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; /tmp/drop true",
        ["-v", f"{sync}:/sync"], name=victim))
    for _ in range(600):
        if (sync / "created").exists():
            break
        await asyncio.sleep(0.1)
    noisy = await in_container(f"i=0; while [ $i -lt {STATE_SIZE * 4} ]; do : > /tmp/f$i; i=$((i+1)); done")
    # the alerter has seen the noisy container overflow its table before the victim's exec
    evicted = pipe.alerter.state.evictions
    for _ in range(600):
        if pipe.alerter.state.created.count(noisy) == STATE_SIZE and evicted.get("created", 0) >= STATE_SIZE:
            break
        await asyncio.sleep(0.1)
    assert pipe.alerter.state.created.count(noisy) == STATE_SIZE, pipe.alerter.state.created.count(noisy)
    (sync / "go").touch()
    cid = await task
    await alert_for(pipe, "Drop and execute new binary in container", cid)
    assert pipe.alerter.stats.get("alerter_state_evictions_total", table="created") >= STATE_SIZE


async def test_alert_flood_in_one_container_does_not_crowd_out_another(pipe):
    flood = await in_container("ln -s /bin/busybox /tmp/apk; i=0; "
                               "while [ $i -lt 60 ]; do /tmp/apk add pkg$i 2>/dev/null; i=$((i+1)); done; true")
    quiet = await in_container("ln -s /bin/busybox /tmp/apk; /tmp/apk add one 2>/dev/null; true")
    await alert_for(pipe, "Package management process in container", quiet)

    def suppressed():
        return pipe.alerter.stats.get("alerts_suppressed_total", rule="Package management process in container",
                                      reason="container_cap")
    await pipe.collect("eunomia.alert.>", lambda a: (a.get("container") or {}).get("id") == flood
                       and a.get("suppressed"), n=1, timeout=30)
    raised = [a for a in alerts_of(pipe, flood)
              if a["rule"] == "Package management process in container" and not a.get("suppressed")]
    assert len(raised) <= KEYS_PER_CONTAINER + 5, len(raised)
    assert suppressed() >= 60 - KEYS_PER_CONTAINER - 5


# --- ordinary container life is quiet ---------------------------------------------------------

BENIGN = (
    # a server serving, health-checked the way images do it
    "mkdir -p /www && echo ok > /www/index.html && httpd -p 8080 -h /www && sleep 0.3; "
    "wget -q -O /dev/null http://127.0.0.1:8080/ && nc -z 127.0.0.1 8080; "
    # scripts and cron-like loops: shells running shells, no terminal
    "printf '#!/bin/sh\\necho tick >> /tmp/app.log\\n' > /tmp/job.sh; "
    "for i in 1 2 3; do sh /tmp/job.sh; sh -c 'date >/dev/null'; done; "
    # log rotation, archives, config reads
    "mv /tmp/app.log /tmp/app.log.1; gzip /tmp/app.log.1; : > /tmp/app.log; "
    "tar cf /tmp/etc.tar /etc/hostname /etc/hosts 2>/dev/null; tar tf /tmp/etc.tar >/dev/null; "
    "cat /etc/passwd /etc/group /etc/resolv.conf >/dev/null; id >/dev/null; ps >/dev/null; "
    "kill %1 2>/dev/null; true"
)


async def test_ordinary_container_life_raises_nothing(pipe):
    name = _name()
    cid_file = f"/tmp/{name}.cid"
    try:
        # start-up of a detached container, then `podman exec` into it (runc exec), then the sentinel
        r = await asyncio.to_thread(containers.run, ["sh", "-c", "sleep 60"], name=name, detach=True,
                                    flags=["--cidfile", cid_file], timeout=120)
        assert r.returncode == 0, r.stderr
        cid = open(cid_file).read().strip()
        for cmd in (["sh", "-c", BENIGN], ["ls", "/"], ["sh", "-c", "cat /etc/shadow >/dev/null"]):
            e = await asyncio.to_thread(containers.run_bounded, [*containers.PODMAN, "exec", name, *cmd], 120, False)
            assert e.returncode == 0, (cmd, e.stderr)
        sentinel = await alert_for(pipe, "Read sensitive file", cid, timeout=120)
    finally:
        await asyncio.to_thread(containers.remove, name)
        subprocess.run(["rm", "-f", cid_file])
    # events of one container arrive in order: everything before the sentinel is evaluated
    await asyncio.sleep(1)
    mine = [a for a in alerts_of(pipe, cid) if not a.get("suppressed")]
    assert [a["rule"] for a in mine] == ["Read sensitive file"], [a["output"] for a in mine]
    assert sentinel["event"]["proc"].get("is_container_entrypoint") is not True  # cat, started by sh
