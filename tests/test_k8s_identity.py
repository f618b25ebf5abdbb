"""Kubernetes identity without a cluster: owner derivation from the labels controllers put on their
pods, and the enricher's CRI client against a runtime that streams GetContainerEvents.

containerd 1.7+ / CRI-O 1.26+ (which stream events) are not in Debian 12: the streaming path is
exercised against a minimal CRI server built from the same runtime_v1.proto, served by grpcio on a
unix socket. Everything else about the CRI is tested against the real containerd (test_cri_e2e.py)."""
from __future__ import annotations

import asyncio
import os
import uuid

import grpc
import pytest

from services.enricher.cri import CriClient
from services.enricher.cri_proto import runtime_v1_pb2 as pb
from services.enricher.cri_proto import runtime_v1_pb2_grpc as pb_grpc
from services.enricher.k8s import k8s_view, owners


@pytest.mark.parametrize("pod,labels,annotations,chain", [
    ("web-7d4b9c8f5d-x2x9q", {"pod-template-hash": "7d4b9c8f5d"}, {},
     [("ReplicaSet", "web-7d4b9c8f5d"), ("Deployment", "web")]),
    ("my-api-v2-5f6b7c8d9-abcde", {"pod-template-hash": "5f6b7c8d9", "app": "api"}, {},
     [("ReplicaSet", "my-api-v2-5f6b7c8d9"), ("Deployment", "my-api-v2")]),
    ("rs-only-zz9x8", {"pod-template-hash": "other"}, {}, [("ReplicaSet", "rs-only")]),
    ("fluentd-k8x2p", {"controller-revision-hash": "6d5f8b7c9", "pod-template-generation": "3"}, {},
     [("DaemonSet", "fluentd")]),
    ("db-12", {"controller-revision-hash": "db-6d5f", "statefulset.kubernetes.io/pod-name": "db-12"}, {},
     [("StatefulSet", "db")]),
    ("backup-28712345-k2v7q", {"batch.kubernetes.io/job-name": "backup-28712345"}, {},
     [("Job", "backup-28712345"), ("CronJob", "backup")]),
    ("migrate-x7k2p", {"job-name": "migrate"}, {}, [("Job", "migrate")]),
    ("etcd-node1", {"component": "etcd"}, {"kubernetes.io/config.source": "file"}, [("Node", None)]),
    ("bare", {"app": "x"}, {"kubernetes.io/config.source": "api"}, []),
])
def test_owner_chain_from_pod_labels(pod, labels, annotations, chain):
    assert [(o["kind"], o["name"]) for o in owners(pod, labels, annotations)] == chain


def test_k8s_view_is_none_outside_kubernetes():
    assert k8s_view(None, None, None, None, {}) is None
    v = k8s_view("web-7d4b9c8f5d-x2x9q", "shop", "u1", "app", {"pod-template-hash": "7d4b9c8f5d"})
    assert v["owner"] == {"kind": "ReplicaSet", "name": "web-7d4b9c8f5d"}
    assert v["workload"] == {"kind": "Deployment", "name": "web"}


class StreamingRuntime(pb_grpc.RuntimeServiceServicer):
    """Answers as containerd >= 1.7 does for one pod; streams the events put in `self.events`."""

    def __init__(self) -> None:
        self.events: asyncio.Queue = asyncio.Queue()
        self.status_calls: list[str] = []
        self.pod = pb.PodSandboxStatus(
            id="s" * 64, metadata=pb.PodSandboxMetadata(name="agent-k8x2p", uid="u-1", namespace="ops"),
            labels={"app": "agent", "controller-revision-hash": "1", "pod-template-generation": "1",
                    "io.kubernetes.pod.name": "agent-k8x2p"},
            linux=pb.LinuxPodSandboxStatus(namespaces=pb.Namespace(options=pb.NamespaceOption(
                network=pb.NODE, pid=pb.NODE, ipc=pb.POD))))

    async def Version(self, request, context):
        return pb.VersionResponse(version="0.1.0", runtime_name="test-cri", runtime_version="1.7",
                                  runtime_api_version="v1")

    async def ContainerStatus(self, request, context):
        self.status_calls.append(request.container_id)
        info = ('{"sandboxID": "%s", "privileged": true}' % self.pod.id)   # CRI-O's verbose info shape
        return pb.ContainerStatusResponse(
            status=pb.ContainerStatus(id=request.container_id, metadata=pb.ContainerMetadata(name="agent"),
                                      image=pb.ImageSpec(image="registry.example/agent:2"),
                                      image_ref="registry.example/agent@sha256:" + "ab" * 32,
                                      labels={"io.kubernetes.container.name": "agent"}),
            info={"info": info})

    async def PodSandboxStatus(self, request, context):
        if request.pod_sandbox_id != self.pod.id:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such sandbox")
        return pb.PodSandboxStatusResponse(status=self.pod)

    async def GetContainerEvents(self, request, context):
        while True:
            yield await self.events.get()


async def test_cri_client_follows_container_events_when_the_runtime_streams_them(tmp_path):
    sock = f"/tmp/eu-cri-{uuid.uuid4().hex[:8]}.sock"
    server = grpc.aio.server()
    runtime = StreamingRuntime()
    pb_grpc.add_RuntimeServiceServicer_to_server(runtime, server)
    server.add_insecure_port(f"unix://{sock}")
    await server.start()
    try:
        async with CriClient((sock,), timeout=5, poll_s=3600) as cri:
            watcher = asyncio.create_task(cri.watch())
            try:
                cid = "c" * 64
                await runtime.events.put(pb.ContainerEventResponse(container_id=cid, container_event_type=0))
                for _ in range(200):   # looked up on the event, before anyone asks
                    if cri.cached(cid)[0]:
                        break
                    await asyncio.sleep(0.05)
                info = cri.cached(cid)[1]
                assert info is not None and cri.events_supported is True
                assert (info.name, info.image, info.privileged) == ("agent", "registry.example/agent:2", True)
                assert info.image_digest == "sha256:" + "ab" * 32
                assert (info.host_network, info.host_pid, info.host_ipc) == (True, True, False)
                assert info.k8s["labels"] == {"app": "agent", "controller-revision-hash": "1",
                                              "pod-template-generation": "1"}
                assert info.k8s["owner"] == {"kind": "DaemonSet", "name": "agent"}
                # a stopped event asks nothing; a started one of a known container neither
                await runtime.events.put(pb.ContainerEventResponse(container_id=cid, container_event_type=2))
                await runtime.events.put(pb.ContainerEventResponse(container_id=cid, container_event_type=1))
                await asyncio.sleep(0.3)
                assert runtime.status_calls == [cid]
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
    finally:
        await server.stop(None)
        if os.path.exists(sock):
            os.unlink(sock)


# Field numbers of the CRI's runtime.v1 api.proto (k8s.io/cri-api) that the enricher reads.
CRI_FIELDS = {
    "ContainerStatus": {"id": 1, "metadata": 2, "state": 3, "image": 8, "image_ref": 9, "labels": 12,
                        "annotations": 13, "image_id": 17},
    "ContainerStatusResponse": {"status": 1, "info": 2},
    "PodSandboxStatus": {"id": 1, "metadata": 2, "linux": 6, "labels": 7, "annotations": 8},
    "PodSandboxMetadata": {"name": 1, "uid": 2, "namespace": 3},
    "LinuxPodSandboxStatus": {"namespaces": 1}, "Namespace": {"options": 2},
    "NamespaceOption": {"network": 1, "pid": 2, "ipc": 3},
    "ImageSpec": {"image": 1, "user_specified_image": 18},
    "Container": {"id": 1, "pod_sandbox_id": 2},
    "ContainerEventResponse": {"container_id": 1, "container_event_type": 2},
    "LinuxContainerSecurityContext": {"privileged": 2, "namespace_options": 3},
}


def test_proto_is_wire_compatible_with_the_cri_and_its_stubs_are_fresh():
    from services.enricher.cri_proto import gen

    assert gen.fresh(), "stubs older than runtime_v1.proto: run python -m services.enricher.cri_proto.gen"
    assert pb.DESCRIPTOR.package == "runtime.v1"
    for msg, fields in CRI_FIELDS.items():
        desc = pb.DESCRIPTOR.message_types_by_name[msg]
        assert {f: desc.fields_by_name[f].number for f in fields} == fields, msg
    svc = pb.DESCRIPTOR.services_by_name["RuntimeService"]
    assert svc.full_name == "runtime.v1.RuntimeService"   # the gRPC method path the runtimes serve
