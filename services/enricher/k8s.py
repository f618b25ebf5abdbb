"""Kubernetes identity of a container: pod, namespace, labels and workload owner.

The kubelet labels every CRI container and sandbox with io.kubernetes.pod.*;
the pod's own labels are on its sandbox. The kubelet does not pass owner
references through the CRI, so the owner is derived from the labels the
controllers stamp on their pods and the pod's name:
  Deployment  <- ReplicaSet <- label pod-template-hash, pod "<rs>-<5>", rs "<deploy>-<hash>"
  DaemonSet   <- labels controller-revision-hash + pod-template-generation, pod "<ds>-<5>"
  StatefulSet <- label statefulset.kubernetes.io/pod-name == pod, pod "<sts>-<ordinal>"
  CronJob     <- Job <- label (batch.kubernetes.io/)job-name, job "<cronjob>-<minutes>"
  Node        <- static (mirror) pods: annotation kubernetes.io/config.source other than "api"
"""
from __future__ import annotations

import re

K8S_POD = "io.kubernetes.pod.name"
K8S_NS = "io.kubernetes.pod.namespace"
K8S_UID = "io.kubernetes.pod.uid"
K8S_CONTAINER = "io.kubernetes.container.name"
# label prefixes that are the runtime's or kubelet's bookkeeping, not the pod's labels
INTERNAL_PREFIXES = ("io.kubernetes.", "annotation.", "io.cri-containerd.", "io.container.manager")

_RANDOM_SUFFIX = re.compile(r"^(.+)-[a-z0-9]{5}$")
_ORDINAL = re.compile(r"^(.+)-(\d+)$")
_CRON_SUFFIX = re.compile(r"^(.+)-(\d{8,})$")


def pod_labels(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if not k.startswith(INTERNAL_PREFIXES)}


def owners(pod: str | None, labels: dict[str, str], annotations: dict[str, str] | None = None) -> list[dict]:
    """The pod's owner chain, nearest first: [{"kind", "name"}, ...]; [] when none can be derived."""
    if not pod:
        return []
    source = (annotations or {}).get("kubernetes.io/config.source")
    if source and source != "api":
        return [{"kind": "Node", "name": None}]   # a static pod, run by the kubelet itself
    h = labels.get("pod-template-hash")
    if h:
        m = _RANDOM_SUFFIX.match(pod)
        rs = m.group(1) if m else None
        if rs and rs.endswith("-" + h):
            return [{"kind": "ReplicaSet", "name": rs}, {"kind": "Deployment", "name": rs[:-len(h) - 1]}]
        if rs:
            return [{"kind": "ReplicaSet", "name": rs}]
    if labels.get("statefulset.kubernetes.io/pod-name") == pod:
        m = _ORDINAL.match(pod)
        if m:
            return [{"kind": "StatefulSet", "name": m.group(1)}]
    if "controller-revision-hash" in labels and "pod-template-generation" in labels:
        m = _RANDOM_SUFFIX.match(pod)
        if m:
            return [{"kind": "DaemonSet", "name": m.group(1)}]
    job = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
    if job:
        chain = [{"kind": "Job", "name": job}]
        m = _CRON_SUFFIX.match(job)
        if m:
            chain.append({"kind": "CronJob", "name": m.group(1)})
        return chain
    return []


def k8s_view(pod: str | None, namespace: str | None, uid: str | None, container: str | None,
             labels: dict[str, str], annotations: dict[str, str] | None = None) -> dict | None:
    """`k8s` of an event (shared/schema.py), or None outside Kubernetes."""
    if not pod and not namespace:
        return None
    chain = owners(pod, labels, annotations)
    return {
        "pod": pod,
        "namespace": namespace,
        "pod_uid": uid,
        "container": container,
        "labels": labels,
        "owner": chain[0] if chain else None,           # the direct controller
        "workload": chain[-1] if chain else None,       # the top one (Deployment, CronJob, ...)
    }


def k8s_of(labels: dict[str, str]) -> dict | None:
    """`k8s` from a container's labels alone (Engine API runtimes: cri-dockerd, docker, podman)."""
    return k8s_view(labels.get(K8S_POD), labels.get(K8S_NS), labels.get(K8S_UID), labels.get(K8S_CONTAINER),
                    pod_labels(labels))
