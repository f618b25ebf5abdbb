"""Kubernetes identity through the CRI, for real: a containerd with its CRI
plugin (own root, state and socket; tests/cri_node.py), pods and containers
created through the CRI exactly as the kubelet creates them (its labels and
annotations, host network so no CNI), the real probe, enricher and alerter.
Events and alerts must carry pod, namespace, labels, owner, image and flags."""
from __future__ import annotations

import asyncio
import os
import uuid

import orjson
import pytest

from services.alerter.config import AlerterConfig
from services.alerter.service import AlerterService
from services.enricher.cgroups import cgroup2_root
from services.enricher.config import EnricherConfig
from services.enricher.cri import CriClient
from services.enricher.cri_proto import runtime_v1_pb2 as pb
from services.enricher.lookups import Mount
from shared import subjects
from tests.cri_node import BB_IMAGE, ContainerdNode, Kubelet, containerd_missing
from tests.pipeline import Pipeline, new_node

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="runs containerd: needs root")]

RULES = """
- rule: CRI test exec in the web deployment
  desc: a process of tag {tag} in a Deployment's pod, by Kubernetes identity only
  condition: >
    evt.type = exec and proc.cmdline contains "{tag}" and k8s.ns.name = "{ns}"
    and k8s.deployment.name = "web" and k8s.pod.label[app] = "web"
    and container.image.repository = "localhost/eunomia-bb" and container.privileged = false
  output: >
    web exec (pod=%k8s.pod.name ns=%k8s.ns.name rs=%k8s.rs.name deploy=%k8s.deployment.name
    container=%container.name image=%container.image)
  priority: WARNING
- rule: CRI test exec in a privileged DaemonSet pod
  desc: privileged containers of a DaemonSet
  condition: >
    evt.type = exec and proc.cmdline contains "{tag}" and container.privileged = true
    and k8s.daemonset.name = "agent" and k8s.ns.name = "{ns}"
  output: privileged exec (pod=%k8s.pod.name ds=%k8s.daemonset.name)
  priority: ERROR
"""


@pytest.fixture
async def containerd_node(tmp_path):
    why = containerd_missing()
    if why:
        pytest.fail(why)
    async with ContainerdNode(tmp_path) as node:
        kubelet = Kubelet(node.socket, str(tmp_path / "pods"))
        try:
            yield node, kubelet
        finally:
            await kubelet.close()


def _pid_of(resp: pb.ContainerStatusResponse) -> int:
    return int(orjson.loads(resp.info["info"])["pid"])


async def _container_cgroup_inode(kubelet: Kubelet, cid: str) -> tuple[int, int]:
    """(pid, inode of its cgroup-v2 directory) of a running container."""
    r = await kubelet.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid, verbose=True))
    pid = _pid_of(r)
    with open(f"/proc/{pid}/cgroup") as f:
        path = next(line[3:].strip() for line in f if line.startswith("0::"))
    return pid, os.stat(f"{cgroup2_root()}{path}").st_ino


async def test_cri_client_reads_pods_like_the_kubelet_made_them(containerd_node):
    node, kubelet = containerd_node
    ns = f"shop-{uuid.uuid4().hex[:6]}"
    pod = await kubelet.run_pod("web-7d4b9c8f5d-x2x9q", ns, labels={"app": "web", "pod-template-hash": "7d4b9c8f5d"})
    cid = await kubelet.create_container(pod, "app", ["/bin/sh", "-c", "sleep 60"], mounts=(("/etc", "/host-etc"),))
    await kubelet.start(cid)
    async with CriClient((node.socket,), timeout=10) as cri:
        info = await cri.get(cid)
        assert info is not None, cri.failures
        assert Mount("/etc", "/host-etc", False) in (info.mounts or ()), info.mounts  # the runtime's binds
        assert (info.id, info.name, info.image) == (cid, "app", BB_IMAGE)
        assert info.image_id and info.image_id.startswith("sha256:")
        assert (info.privileged, info.host_network, info.host_pid, info.host_ipc) == (False, True, False, False)
        assert info.labels["io.kubernetes.pod.namespace"] == ns   # the kubelet's container labels
        k = info.k8s
        assert (k["pod"], k["namespace"], k["container"]) == ("web-7d4b9c8f5d-x2x9q", ns, "app")
        assert k["labels"] == {"app": "web", "pod-template-hash": "7d4b9c8f5d"}
        assert k["pod_uid"] == kubelet.pods[pod].metadata.uid
        assert k["owner"] == {"kind": "ReplicaSet", "name": "web-7d4b9c8f5d"}
        assert k["workload"] == {"kind": "Deployment", "name": "web"}
        # the sandbox's own (pause) container is answered from PodSandboxStatus
        sandbox = await cri.get(pod)
        assert sandbox is not None and sandbox.name == "POD" and sandbox.k8s["pod"] == "web-7d4b9c8f5d-x2x9q"
        assert await cri.get("0" * 64) is None and cri.failures == {"not_found": 1}
        assert cri.missing_reason("0" * 64) == "not_found"
        # containerd 1.6 has no GetContainerEvents: the watcher polls ListContainers and looks up new ones
        cri.poll_s = 0.2
        watcher = asyncio.create_task(cri.watch())
        try:
            cid2 = await kubelet.create_container(pod, "side", ["/bin/sh", "-c", "sleep 60"])
            for _ in range(200):
                if cri.cached(cid2)[0]:
                    break
                await asyncio.sleep(0.1)
            assert cri.cached(cid2)[1] is not None and cri.cached(cid2)[1].name == "side"
            assert cri.events_supported is False and cri.runtime_name == "containerd"
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
    async with CriClient(("/nonexistent/containerd.sock",)) as cri:
        assert await cri.get(cid) is None and cri.failures == {"socket_missing": 1}


async def test_enricher_marks_and_counts_containers_without_metadata(containerd_node, nats_server):
    """Raw events of a real containerd container's cgroup: with the CRI socket they carry the pod;
    without any runtime API they say why their metadata is missing, and it is counted."""
    node, kubelet = containerd_node
    ns = f"jobs-{uuid.uuid4().hex[:6]}"
    pod = await kubelet.run_pod("backup-28712345-k2v7q", ns,
                                labels={"job-name": "backup-28712345", "controller-uid": "x"})
    cid = await kubelet.create_container(pod, "dump", ["/bin/sh", "-c", "sleep 60"])
    await kubelet.start(cid)
    pid, ino = await _container_cgroup_inode(kubelet, cid)
    raw = [{"kind": "open", "pid": pid, "cgroup_id": ino, "path": "/etc/hostname", "flags": 0, "mode": 0, "ret": 3}]

    cfg = EnricherConfig(runtime_sockets=("/nonexistent.sock",), cri_sockets=(node.socket,), lookup_timeout_s=10)
    async with Pipeline(nats_server.url, probe=False, enricher_cfg=cfg) as p:
        await p.publish_raw(raw)
        ev = await p.wait_for(lambda e: (e["container"] or {}).get("id") == cid, timeout=30)
        assert ev["container"]["runtime"] == "containerd" and ev["container"]["name"] == "dump"
        assert ev["container"]["metadata_missing"] is None
        assert ev["k8s"]["namespace"] == ns and ev["k8s"]["labels"]["job-name"] == "backup-28712345"
        assert ev["k8s"]["owner"] == {"kind": "Job", "name": "backup-28712345"}
        assert ev["k8s"]["workload"] == {"kind": "CronJob", "name": "backup"}
        reply = await p.bus.request_json(subjects.ctl_enricher(p.node), {"op": "containers"})
        row = next(c for c in reply["containers"] if c["id"] == cid)
        assert row["k8s"]["pod"] == "backup-28712345-k2v7q" and row["cgroup_id"] == ino

    cfg = EnricherConfig(runtime_sockets=("/nonexistent.sock",), cri_sockets=())
    async with Pipeline(nats_server.url, probe=False, enricher_cfg=cfg) as p:
        await p.publish_raw(raw + raw)
        evs = await p.wait_for_all(lambda e: (e["container"] or {}).get("id") == cid, n=2, timeout=30)
        for ev in evs:
            assert ev["container"]["name"] is None and ev["k8s"] is None
            assert ev["container"]["metadata_missing"] == "no_runtime_api"
        # counted once per container and reason, not per event
        assert p.enricher.stats.get("enricher_metadata_missing_total", reason="no_runtime_api") == 1


@pytest.mark.bpf
async def test_events_and_alerts_of_cri_pods_carry_kubernetes_identity(containerd_node, tmp_path):
    """The real probe sees processes in CRI containers; events and alerts name the pod, namespace,
    labels, owner and image, also for a container that exits at once."""
    from shared.natsserver import NatsServer, NatsServerConfig, free_port

    node_, kubelet = containerd_node
    tag = f"eunomia-cri-{uuid.uuid4().hex[:8]}"
    ns = f"shop-{uuid.uuid4().hex[:6]}"
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(tag=tag, ns=ns))
    node = new_node()
    cfg = EnricherConfig(runtime_sockets=("/nonexistent.sock",), cri_sockets=(node_.socket,), lookup_timeout_s=10,
                         cri_poll_s=0.5)
    async with NatsServer(NatsServerConfig(port=free_port(), store_dir=tmp_path / "js")) as srv:
        alerter = AlerterService(AlerterConfig(rules=(rules,), reload_check_s=0, subject=f"eunomia.event.{node}.>",
                                               queue_group=f"q{uuid.uuid4().hex[:8]}"),
                                 Pipeline.common_for(srv.url, node))
        async with Pipeline(srv.url, node, enricher_cfg=cfg, extra=[alerter]) as p:
            await p.collect("eunomia.alert.>", n=0)
            web = await kubelet.run_pod("web-7d4b9c8f5d-x2x9q", ns,
                                        labels={"app": "web", "pod-template-hash": "7d4b9c8f5d"})
            app = await kubelet.create_container(web, "app", ["/bin/sh", "-c", f"cat /dev/null {tag}; sleep 60"])
            await kubelet.start(app)
            # a container that lives a few milliseconds
            short = await kubelet.create_container(web, "once", ["/bin/echo", tag, "short"])
            await kubelet.start(short)
            agent = await kubelet.run_pod("agent-k8x2p", ns, privileged=True, host_pid=True, labels={
                "app": "agent", "controller-revision-hash": "6d5f8b7c9", "pod-template-generation": "1"})
            priv = await kubelet.create_container(agent, "agent", ["/bin/sh", "-c", f"cat /dev/null {tag}; sleep 60"],
                                                  privileged=True)
            await kubelet.start(priv)

            def exec_in(cid: str, argv0: str):
                return lambda e: (e["kind"] == "exec" and (e["container"] or {}).get("id") == cid
                                  and e["argv"][:1] == [argv0] and tag in e["argv"])
            ev = await p.wait_for(exec_in(app, "cat"), timeout=60)
            c, k = ev["container"], ev["k8s"]
            assert (c["name"], c["image"], c["runtime"], c["privileged"]) == ("app", BB_IMAGE, "containerd", False)
            assert c["host_network"] is True and c["metadata_missing"] is None
            assert (k["pod"], k["namespace"], k["container"]) == ("web-7d4b9c8f5d-x2x9q", ns, "app")
            assert k["labels"] == {"app": "web", "pod-template-hash": "7d4b9c8f5d"}
            assert k["owner"] == {"kind": "ReplicaSet", "name": "web-7d4b9c8f5d"}
            assert k["workload"] == {"kind": "Deployment", "name": "web"}
            assert k["pod_uid"] == kubelet.pods[web].metadata.uid

            once = await p.wait_for(exec_in(short, "/bin/echo"), timeout=60)
            assert once["container"]["name"] == "once" and once["k8s"]["pod"] == "web-7d4b9c8f5d-x2x9q"

            pe = await p.wait_for(exec_in(priv, "cat"), timeout=60)
            assert pe["container"]["privileged"] is True and pe["container"]["host_pid"] is True
            assert pe["k8s"]["owner"] == {"kind": "DaemonSet", "name": "agent"}

            alerts = await p.collect("eunomia.alert.>", lambda a: a["rule"] == "CRI test exec in the web deployment",
                                     timeout=30)
            a = alerts[0]
            assert f"pod=web-7d4b9c8f5d-x2x9q ns={ns} rs=web-7d4b9c8f5d deploy=web container=app" in a["output"]
            assert a["k8s"]["namespace"] == ns and a["event"]["container"]["id"] == app
            alerts = await p.collect("eunomia.alert.>", lambda a: a["rule"] == "CRI test exec in a privileged "
                                     "DaemonSet pod", timeout=30)
            assert "pod=agent-k8x2p ds=agent" in alerts[0]["output"]
            # the web rule holds only for the web pod: the privileged agent's exec did not raise it
            assert not [x for x in p._by_subject["eunomia.alert.>"].items
                        if x["rule"] == "CRI test exec in the web deployment"
                        and x["event"]["container"]["id"] == priv]
