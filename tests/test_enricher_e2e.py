"""Real probe (BPF) -> real enricher -> NATS, with real podman containers."""
import asyncio
import os
import subprocess
import uuid

import pytest

from shared import subjects
from shared.cgroupfs import cgroup2_root
from tests import containers
from tests.pipeline import Pipeline

pytestmark = [pytest.mark.bpf, pytest.mark.podman]


async def test_container_and_host_events_are_enriched(nats_server, bb_image, podman_socket):
    name = f"enr-e2e-{uuid.uuid4().hex[:8]}"
    labels = {"io.kubernetes.pod.name": "web-7", "io.kubernetes.pod.namespace": "shop",
              "io.kubernetes.container.name": "nginx", "app": "web"}
    async with Pipeline(nats_server.url) as p:
        try:
            # the container waits for a file we create, so the control op below sees it running
            await asyncio.to_thread(containers.run, [
                "sh", "-c", "cat /etc/hostname; echo x > /tmp/f; while [ ! -e /tmp/go ]; do sleep 0.1; done"],
                name=name, labels=labels, detach=True)
            cid = await asyncio.to_thread(containers.inspect_id, name)
            mine = lambda e: (e["container"] or {}).get("id") == cid  # noqa: E731
            ex = await p.wait_for(lambda e: mine(e) and e["kind"] == "exec" and e["argv"] == ["cat", "/etc/hostname"])
            c = ex["container"]
            assert {k: c[k] for k in ("id", "name", "image", "runtime", "labels", "metadata_missing")} == {
                "id": cid, "name": name, "image": bb_image, "runtime": "podman", "labels": labels,
                "metadata_missing": None}
            assert c["privileged"] in (False, None)  # None while only the runtime's create event is known
            assert ex["k8s"] == {"pod": "web-7", "namespace": "shop", "container": "nginx", "labels": {"app": "web"},
                                 "pod_uid": None, "owner": None, "workload": None}
            proc = ex["proc"]
            assert proc["name"] == "cat" and proc["args"] == ["cat", "/etc/hostname"] and proc["exe"]
            assert proc["cmdline"] == "cat /etc/hostname" and proc["pname"] == "sh"
            assert proc["pcmdline"].startswith("sh -c cat /etc/hostname")
            assert ex["ppid"] and proc["ancestors"][0]["pid"] == ex["ppid"]
            opened = await p.wait_for(lambda e: mine(e) and e["kind"] == "open" and e["path"] == "/etc/hostname"
                                      and e["pid"] == ex["pid"])
            assert opened["proc"]["name"] == "cat" and opened["container"]["name"] == name
            await p.wait_for(lambda e: mine(e) and e["kind"] == "open" and e["path"] == "/tmp/f")

            # control: the running container with the inode of its cgroup-v2 directory
            reply = await p.bus.request_json(subjects.ctl_enricher(p.node), {"op": "containers"})
            row = next(c for c in reply["containers"] if c["id"] == cid)
            inode = os.stat(cgroup2_root() / f"libpod_parent/libpod-{cid}").st_ino
            assert (row["name"], row["cgroup_id"], row["running"]) == (name, inode, True)
            assert row["k8s"]["pod"] == "web-7" and ex["cgroup_id"] == inode
            await asyncio.to_thread(subprocess.run, [*containers.PODMAN, "exec", name, "touch", "/tmp/go"],
                                    capture_output=True, timeout=60)
        finally:
            await asyncio.to_thread(containers.remove, name)

        # a host process: container and k8s null, parent is this test process
        tag = f"/tmp/enr-host-{uuid.uuid4().hex}"
        await asyncio.to_thread(subprocess.run, ["/bin/cat", tag], capture_output=True)
        host = await p.wait_for(lambda e: e["kind"] == "exec" and e["argv"] == ["/bin/cat", tag], timeout=60)
        assert host["container"] is None and host["k8s"] is None
        assert host["proc"]["exe"] == "/bin/cat" and host["proc"]["name"] == "cat"
        assert host["ppid"] == os.getpid() and host["proc"]["pexe"] == os.readlink("/proc/self/exe")
        opened = await p.wait_for(lambda e: e["kind"] == "open" and e["path"] == tag, timeout=60)
        assert opened["container"] is None and opened["proc"]["cmdline"] == f"/bin/cat {tag}"
        assert p.enricher.stats.total("enricher_malformed_total") == 0


async def test_a_container_that_exits_at_once_is_still_named(nats_server, bb_image, podman_socket):
    """The cgroup of a millisecond container is gone before its events are
    enriched; the probe's cgroup event said whose it was when the runtime made it."""
    name = f"enr-fast-{uuid.uuid4().hex[:8]}"
    tag = f"/fast-{uuid.uuid4().hex[:8]}"
    cidfile = f"/tmp/{name}.cid"
    async with Pipeline(nats_server.url) as p:
        try:
            r = await asyncio.to_thread(containers.run, ["cat", tag], name=name, check=False,
                                        flags=["--cidfile", cidfile])
            cid = open(cidfile).read().strip()
        finally:
            if os.path.exists(cidfile):
                os.unlink(cidfile)
        assert r.returncode != 0  # no such file: it ran and exited at once
        ex = await p.wait_for(lambda e: e["kind"] == "exec" and e.get("argv") == ["cat", tag], timeout=20)
        assert ex["container"] is not None and ex["container"]["id"] == cid, ex
        assert p.enricher.stats.total("enricher_container_cgroups_made_total") >= 1


async def test_a_process_in_a_cgroup_removed_at_once_is_placed_by_the_probes_cgroup_event(nats_server):
    """A cgroup named like a podman container's, made, used by one process and removed at once: no
    scan or /proc can place it afterwards; the probe's cgroup event (cgroup_mkdir) does, in kernel
    order before the process's own events. Its runtime knows no such container: no metadata."""
    cid = uuid.uuid4().hex + uuid.uuid4().hex
    cg = cgroup2_root() / "libpod_parent" / f"libpod-{cid}"
    tag = f"/made-{uuid.uuid4().hex[:8]}"
    async with Pipeline(nats_server.url) as p:
        # made by a child: the pipeline's probe excludes this process
        await asyncio.to_thread(subprocess.run, ["mkdir", "-p", str(cg)], check=True)
        try:
            enter = lambda: (cg / "cgroup.procs").write_text("0")  # noqa: E731 (the child, before exec)
            await asyncio.to_thread(subprocess.run, ["/bin/cat", tag], capture_output=True, preexec_fn=enter)
        finally:
            cg.rmdir()
        ex = await p.wait_for(lambda e: e["kind"] == "exec" and e.get("argv") == ["/bin/cat", tag], timeout=20)
        assert ex["cgroup_id"] != 0 and ex["container"] is not None, ex
        assert (ex["container"]["id"], ex["container"]["runtime"]) == (cid, "podman")
        made = await p.wait_for(lambda e: e["kind"] == "cgroup" and e["path"] == f"/libpod_parent/libpod-{cid}")
        assert (made["new_cgroup_id"], made["hierarchy"], made["comm"]) == (ex["cgroup_id"], 0, "mkdir"), made
        assert p.enricher.stats.total("enricher_container_cgroups_made_total") >= 1
