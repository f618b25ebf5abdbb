"""The enricher's parts with real inputs: /proc, the cgroup tree, podman's
Engine API, a real nats-server (raw events published by the test)."""
import os
import subprocess
import uuid

import orjson
import pytest

from services.enricher.cgroups import CgroupMatch, CgroupResolver, parse_path
from services.enricher.config import EnricherConfig
from services.enricher.k8s import k8s_of
from services.enricher.proctable import ProcTable, read_proc
from services.enricher.runtime_api import RuntimeClient
from shared import subjects
from shared.cgroupfs import cgroup2_root
from shared.config import ConfigError
from tests import containers
from tests.pipeline import Pipeline

CID = "0123456789abcdef" * 4


@pytest.mark.parametrize("path,runtime", [
    (f"/system.slice/docker-{CID}.scope", "docker"),
    (f"/docker/{CID}", "docker"),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234.slice/cri-containerd-{CID}.scope",
     "containerd"),
    (f"/kubepods/besteffort/pod0a1b2c3d-1111-2222-3333-444455556666/{CID}", "containerd"),
    (f"/k8s.io/{CID}", "containerd"),          # containerd's default cgroup (no kubelet cgroup parent)
    (f"/kubepods/burstable/podab/crio-{CID}", "cri-o"),   # CRI-O with the cgroupfs driver
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podab.slice/crio-{CID}.scope", "cri-o"),
    (f"/libpod_parent/libpod-{CID}", "podman"),
    (f"/machine.slice/libpod-{CID}.scope", "podman"),
    (f"/machine.slice/libpod-{CID}.scope/container", "podman"),
])
def test_cgroup_paths_of_every_runtime(path, runtime):
    assert parse_path(path) == CgroupMatch(CID, runtime)


@pytest.mark.parametrize("path", [
    "/", "/system.slice/ssh.service", "/user.slice/user-0.slice/session-1.scope",
    f"/machine.slice/libpod-conmon-{CID}.scope", f"/system.slice/crio-conmon-{CID}.scope",
    "/docker/not-an-id", f"/{CID}",  # a bare id with nothing above it names no runtime
])
def test_host_cgroup_paths(path):
    assert parse_path(path) is None


def test_config_errors_name_the_setting():
    with pytest.raises(ConfigError, match="enricher.lookup_timeout_s"):
        EnricherConfig(lookup_timeout_s=0)
    with pytest.raises(ConfigError, match="enricher.runtime_sockets"):
        EnricherConfig(runtime_sockets=("relative.sock",))
    with pytest.raises(ConfigError, match="enricher.max_processes"):
        EnricherConfig(max_processes=1)


def test_proc_table_from_proc_and_events():
    child = subprocess.Popen(["/bin/sleep", "30"], cwd="/tmp")
    try:
        t = ProcTable(max_entries=10_000, exit_grace_s=0)
        assert t.seed() > 3
        proc, ppid = t.proc_view(child.pid)
        assert proc["exe"].endswith("sleep") and proc["args"] == ["/bin/sleep", "30"]
        assert proc["cwd"] == "/tmp" and ppid == os.getpid() and proc["ancestors"][0]["pid"] == os.getpid()
        assert proc["pcmdline"] == " ".join(read_proc(os.getpid()).args)
        # fork then exec of a (made-up) child, then exit: the table follows the events
        t.on_fork(child.pid, 999_999_001, "sleep")
        t.on_exec(999_999_001, "/usr/bin/cat", ["cat", "/etc/hostname"], "cat")
        proc, ppid = t.proc_view(999_999_001)
        assert (proc["exe"], proc["name"], proc["cmdline"], ppid) == ("/usr/bin/cat", "cat", "cat /etc/hostname",
                                                                      child.pid)
        assert proc["pname"] == "sleep" and [a["pid"] for a in proc["ancestors"][:2]] == [child.pid, os.getpid()]
        t.on_exit(999_999_001)
        t.tick()
        assert 999_999_001 not in t and t.evictions == 1
        # an unknown, dead pid is read from /proc once and remembered as missing
        assert t.get(999_999_002) is None and t.get(999_999_002) is None
        assert (t.proc_reads, t.proc_misses) == (1, 1)
    finally:
        child.kill()
        child.wait()


def test_proc_table_is_bounded():
    t = ProcTable(max_entries=16, exit_grace_s=60)
    for pid in range(1_000_000, 1_000_100):
        t.on_exec(pid, "/bin/x", ["x"])
    assert len(t) == 16 and t.evictions == 84


async def test_runtime_api_against_podman(podman_socket, bb_image):
    name = f"enr-api-{uuid.uuid4().hex[:8]}"
    containers.run(["sleep", "60"], name=name, detach=True, labels={
        "io.kubernetes.pod.name": "web-1", "io.kubernetes.pod.namespace": "shop", "app": "web"})
    try:
        cid = containers.inspect_id(name)
        async with RuntimeClient((podman_socket,), timeout=5) as rc:
            info = await rc.get(cid)
            assert (info.id, info.name, info.image) == (cid, name, bb_image)
            assert info.labels["app"] == "web"
            assert k8s_of(info.labels) == {"pod": "web-1", "namespace": "shop", "container": None,
                                           "labels": {"app": "web"}, "pod_uid": None, "owner": None,
                                           "workload": None}
            assert info.privileged is False and info.host_network is False
            assert rc.cached(cid) == (True, info)
            assert await rc.get("f" * 64) is None and rc.failures == {"not_found": 1}
        async with RuntimeClient(("/nonexistent/docker.sock",)) as rc:
            assert await rc.get(cid) is None and rc.failures == {"socket_missing": 1}

        # the cgroup tree knows the running container by the inode of its directory
        res = CgroupResolver()
        found = {m.container_id: ino for ino, m in res.scan().items()}
        assert cid in found
        assert res.resolve(found[cid]) == (True, CgroupMatch(cid, "podman"))
        assert os.stat(cgroup2_root() / f"libpod_parent/libpod-{cid}").st_ino == found[cid]
    finally:
        containers.remove(name)


async def test_enricher_alone_raw_events_in_enriched_out(nats_server):
    """No probe: raw events published by the test, malformed ones among them."""
    sleeper = subprocess.Popen(["/bin/sleep", "30"])
    try:
        async with Pipeline(nats_server.url, probe=False,
                            enricher_cfg=EnricherConfig(runtime_sockets=("/nonexistent.sock",))) as p:
            node = p.node
            # malformed: not JSON, not an array, item lacking a head field, bad pid, bad kind token
            for data in (b"{nope", b'{"a":1}', b'[{"kind":"open"}]'):
                await p.bus.publish(subjects.raw(node), data)
            await p.publish_raw([{"kind": ["open"], "pid": 1, "path": "/a"},  # a list as kind: not the batch's end
                                 {"kind": "open", "pid": "x", "path": "/a"},
                                 {"kind": "op.en", "pid": 1, "path": "/b"}])
            await p.publish_raw([
                {"kind": "open", "pid": sleeper.pid, "ppid": None, "path": "/etc/hostname", "flags": 0, "mode": 0,
                 "ret": 3},
                {"kind": "fork", "pid": sleeper.pid, "child_pid": 999_999_101, "clone_flags": 0},
                {"kind": "exec", "pid": 999_999_101, "filename": "/bin/cat", "argv": ["cat", "/etc/shadow"],
                 "ret": 0, "comm": "cat"},
                {"kind": "open", "pid": 999_999_101, "path": "/etc/shadow", "flags": 0, "mode": 0, "ret": 3},
                {"kind": "exit", "pid": 999_999_101, "exit_code": 0},
                {"kind": "newkind", "pid": 999_999_101, "x": 1},  # unknown kinds pass through
            ])
            evs = await p.wait_for_all(lambda e: e["pid"] in (sleeper.pid, 999_999_101), n=6)
            by = {(e["kind"], e["pid"]): e for e in evs}
            first = by[("open", sleeper.pid)]
            assert first["ppid"] == os.getpid()  # filled from the table
            assert first["proc"]["args"] == ["/bin/sleep", "30"] and first["container"] is None
            assert first["k8s"] is None
            opened = by[("open", 999_999_101)]
            assert opened["proc"]["exe"] == "/bin/cat" and opened["proc"]["name"] == "cat"
            assert opened["proc"]["cmdline"] == "cat /etc/shadow" and opened["ppid"] == sleeper.pid
            assert opened["proc"]["pexe"].endswith("sleep") and opened["proc"]["pname"] == "sleep"
            assert opened["proc"]["ancestors"][1]["pid"] == os.getpid()
            assert by[("exit", 999_999_101)]["proc"]["name"] == "cat"
            # one view for the open and the exit in the batch (sent once encoded, then as that JSON)
            assert by[("exit", 999_999_101)]["proc"] == opened["proc"]
            assert ("newkind", 999_999_101) in by

            st = p.enricher.stats
            # not a batch: the bus drops it; a batch item that is no event: the enricher does
            assert st.get("bus_malformed_total", subject=f"eunomia.raw.{node}") == 2
            assert st.get("enricher_malformed_total", reason="event lacks field 'id'") == 1
            assert st.get("enricher_malformed_total", reason="pid is not a non-negative integer") == 1
            assert st.get("enricher_malformed_total", reason="kind is not a subject token") == 1
            assert st.get("enricher_malformed_total", reason="field 'kind' is not a non-empty string") == 1
            assert st.get("enricher_events_in_total", kind="open") == 4  # the headless one counted in, then dropped
            assert st.get("enricher_events_out_total", kind="other") == 1

            reply = await p.bus.request_json(subjects.ctl_enricher(node), {"op": "nope"})
            assert "unknown op 'nope'" in reply["error"]
            msg = await p.bus.nc.request(subjects.ctl_enricher(node), b"[1", timeout=5)
            bad = orjson.loads(msg.data)
            assert "not JSON" in bad["error"] and bad["code"] == "bad_request"
            snap = await p.bus.request_json(subjects.ctl_enricher(node), {"op": "stats"})
            assert snap["gauges"]["enricher_proc_table_size"][0][1] > 3
    finally:
        sleeper.kill()
        sleeper.wait()


async def test_a_working_directory_named_in_bytes_that_are_not_utf8_is_sent_replaced(nats_server, tmp_path):
    """Any user can chdir into a directory named b"\\xff": its events still go out (the bytes as
    U+FFFD, as every string of an event), and the enricher goes on."""
    odd = os.path.join(os.fsencode(tmp_path), b"odd-\xff")
    os.mkdir(odd)
    sleeper = subprocess.Popen(["/bin/sleep", "30"], cwd=odd)
    try:
        async with Pipeline(nats_server.url, probe=False,
                            enricher_cfg=EnricherConfig(runtime_sockets=("/nonexistent.sock",))) as p:
            await p.publish_raw([{"kind": "open", "pid": sleeper.pid, "path": f"f{i}", "flags": 0, "mode": 0,
                                  "ret": 3, "dirfd": -100, "comm": "sleep"} for i in range(2)])  # one batch, one view
            evs = await p.wait_for_all(lambda e: e["pid"] == sleeper.pid, n=2)
            assert {e["proc"]["cwd"] for e in evs} == {f"{tmp_path}/odd-\ufffd"}
            await p.publish_raw([{"kind": "open", "pid": sleeper.pid, "path": "/etc/hostname", "flags": 0,
                                  "mode": 0, "ret": 3, "comm": "sleep"}])
            await p.wait_for_all(lambda e: e["pid"] == sleeper.pid and e["path"] == "/etc/hostname", n=1)
    finally:
        sleeper.kill()
        sleeper.wait()


async def test_a_view_that_cannot_be_encoded_still_goes_out(nats_server, monkeypatch):
    """Should a process's view hold a string JSON cannot carry (a lone surrogate: _readlink no
    longer makes them, this stands in for any other source), the batch goes out with it replaced
    (U+FFFD), as the probe decodes every string: not one event of it is lost."""
    from services.enricher import proctable
    sleeper = None
    try:
        async with Pipeline(nats_server.url, probe=False,
                            enricher_cfg=EnricherConfig(runtime_sockets=("/nonexistent.sock",))) as p:
            with monkeypatch.context() as m:  # the process is first read while readlink misbehaves
                m.setattr(proctable, "_readlink", lambda path: "/tmp/\udcff" if path.endswith("/cwd") else None)
                sleeper = subprocess.Popen(["/bin/sleep", "30"])
                await p.publish_raw([{"kind": "open", "pid": os.getpid(), "path": "/etc/hostname", "flags": 0,
                                      "mode": 0, "ret": 3}] +
                                    [{"kind": "open", "pid": sleeper.pid, "path": f"/f{i}", "flags": 0,
                                      "mode": 0, "ret": 3, "comm": "sleep"} for i in range(2)])
                evs = await p.wait_for_all(lambda e: e["pid"] == sleeper.pid, n=2)
            assert [e["proc"]["cwd"] for e in evs] == ["/tmp/\ufffd"] * 2
            await p.wait_for_all(lambda e: e["path"] == "/etc/hostname", n=1)  # its batch-mate
            assert p.enricher.stats.total("bus_publish_failed_events_total") == 0
    finally:
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait()


async def test_exec_environment_tty_and_fd_names(nats_server):
    """execenv before its exec becomes proc.env (forks inherit it, a failed exec
    drops it, a truncated scan is completed from /proc/<pid>/environ); the exec's
    tty becomes proc.tty; ftruncate/fchown fds the kernel could not name are named from the opens seen."""
    env = {"PATH": "/bin", "LD_PRELOAD": "/tmp/from-environ.so", "HISTFILE": "/dev/null"}
    sleeper = subprocess.Popen(["/bin/sleep", "30"], env=env)
    try:
        async with Pipeline(nats_server.url, probe=False,
                            enricher_cfg=EnricherConfig(runtime_sockets=("/nonexistent.sock",))) as p:
            a, b = 999_999_201, 999_999_202
            await p.publish_raw([
                {"kind": "fork", "pid": os.getpid(), "child_pid": a, "clone_flags": 0},
                {"kind": "execenv", "pid": a, "env": {"LD_PRELOAD": "/tmp/e.so"}, "env_scanned": 12,
                 "env_truncated": False},
                {"kind": "exec", "pid": a, "filename": "/bin/sh", "argv": ["sh"], "ret": 0, "comm": "sh",
                 "tty": 34816},
                {"kind": "fork", "pid": a, "child_pid": b, "clone_flags": 0},
                {"kind": "open", "pid": b, "path": "/root/.bash_history", "flags": 0o101, "mode": 0o600, "ret": 5,
                 "dirfd": -100},
                {"kind": "truncate", "pid": b, "path": None, "fd": 5, "length": 0, "ret": 0},
                {"kind": "chown", "pid": b, "path": None, "fd": 6, "owner_uid": 1, "owner_gid": 1, "ret": 0},
                # fd 5 again, but the kernel found its file has no path (reused by a memfd): left unnamed
                {"kind": "chmod", "pid": b, "path": None, "fd": 5, "mode": 0o600, "ret": 0, "path_from_fd": False},
                {"kind": "execenv", "pid": b, "env": {"HISTFILE": "/dev/null"}, "env_scanned": 3,
                 "env_truncated": False},
                {"kind": "exec", "pid": b, "filename": "/nope", "argv": ["nope"], "ret": -2, "comm": "sh"},
                {"kind": "open", "pid": b, "path": "/etc/hostname", "flags": 0, "mode": 0, "ret": 3},
                {"kind": "execenv", "pid": sleeper.pid, "env": {"HISTFILE": "/dev/null"}, "env_scanned": 128,
                 "env_truncated": True},
                {"kind": "exec", "pid": sleeper.pid, "filename": "/bin/sleep", "argv": ["sleep", "30"], "ret": 0,
                 "comm": "sleep"},
            ])
            evs = await p.wait_for_all(lambda e: e["pid"] in (a, b, sleeper.pid), n=12)
            by = {(e["kind"], e["pid"], e.get("ret")): e for e in evs}
            ex = by[("exec", a, 0)]
            assert ex["proc"]["env"] == {"LD_PRELOAD": "/tmp/e.so"} and ex["proc"]["tty"] == 34816
            tr = by[("truncate", b, 0)]
            assert tr["path"] == "/root/.bash_history" and tr["path_from_fd"] is True
            assert tr["proc"]["env"] == {"LD_PRELOAD": "/tmp/e.so"} and tr["proc"]["tty"] == 34816  # inherited
            ch = by[("chown", b, 0)]
            assert ch["path"] is None and "path_from_fd" not in ch  # fd 6 was never seen opened
            cm = by[("chmod", b, 0)]
            assert cm["path"] is None and cm["path_from_fd"] is False
            # the failed exec took its environment along: b still has the one it inherited
            assert by[("open", b, 3)]["proc"]["env"] == {"LD_PRELOAD": "/tmp/e.so"}
            # cut short in the kernel: the rest is read from the process's environ
            assert by[("exec", sleeper.pid, 0)]["proc"]["env"] == {"LD_PRELOAD": "/tmp/from-environ.so",
                                                                   "HISTFILE": "/dev/null"}
            assert p.enricher.stats.get("enricher_env_truncated_total", reason="read") == 1
    finally:
        sleeper.kill()
        sleeper.wait()
