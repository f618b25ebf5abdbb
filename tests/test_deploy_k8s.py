"""deploy/k8s against the Kubernetes API schemas (kubernetes-validate, strict, the newest
Kubernetes version it knows), the CRI socket mount, and the user rules ConfigMap: its rules
compile with the shipped ones, and a ConfigMap update as the kubelet writes it (atomic
symlink swap) reaches a running alerter through its hot reload."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from services.alerter.config import DEFAULT_RULES_DIR, AlerterConfig
from services.alerter.engine.loader import load_rules
from services.alerter.service import AlerterService
from services.cli.main import build_parser
from shared.config import CommonConfig
from tests.test_deploy import DEPLOY, DOCS, find

K8S_VERSION = kubernetes_validate.latest_version()
CRI_SOCKETS = {"containerd": "/run/containerd/containerd.sock", "CRI-O": "/run/crio/crio.sock"}


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: f"{d['_file']}:{d['kind']}/{d['metadata']['name']}")
def test_manifest_is_valid_for_current_kubernetes(doc):
    manifest = {k: v for k, v in doc.items() if k != "_file"}
    try:
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        pytest.fail(f"{doc['_file']}: {doc['kind']}/{doc['metadata']['name']} is invalid for Kubernetes "
                    f"{K8S_VERSION}: {e.message} at {'/'.join(map(str, e.path))}")


def test_kustomization_lists_every_manifest():
    kust = yaml.safe_load((DEPLOY / "k8s/kustomization.yaml").read_text())
    assert sorted(kust["resources"]) == sorted(p.name for p in (DEPLOY / "k8s").glob("*.yaml")
                                               if p.name != "kustomization.yaml")


def _pod(kind: str, name: str) -> dict:
    return find(kind, name)["spec"]["template"]["spec"]


def test_enricher_reaches_containerd_and_crio_through_a_read_only_mount():
    pod = _pod("DaemonSet", "eunomia-node")
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    enricher = next(c for c in pod["containers"] if c["command"][1:2] == ["enricher"])
    args = build_parser().parse_args(enricher["command"][1:] + enricher["args"])
    assert args.cri_sockets, "enricher is given no CRI socket"
    mounts = [(m["mountPath"], host[m["name"]], m.get("readOnly", False))
              for m in enricher["volumeMounts"] if m["name"] in host]
    on_host = {}
    for sock in args.cri_sockets:
        mp, hp, ro = next((mp, hp, ro) for mp, hp, ro in mounts if sock.startswith(mp + "/"))
        assert ro, f"the CRI socket {sock} is on a writable mount"
        on_host[hp + sock[len(mp):]] = sock
    for runtime, path in CRI_SOCKETS.items():
        assert path in on_host, f"no CRI socket for {runtime} ({path})"
    assert enricher["securityContext"]["readOnlyRootFilesystem"] is True


def test_user_rules_come_from_a_configmap_and_compile_with_the_shipped_ones(tmp_path):
    cm = find("ConfigMap", "eunomia-user-rules")
    pod = _pod("StatefulSet", "alerter")
    vol = next(v for v in pod["volumes"] if v.get("configMap", {}).get("name") == "eunomia-user-rules")
    alerter = pod["containers"][0]
    mount = next(m for m in alerter["volumeMounts"] if m["name"] == vol["name"])
    assert "subPath" not in mount, "a subPath mount never sees ConfigMap updates"
    args = build_parser().parse_args(alerter["command"][1:] + alerter["args"])
    rules_args = [str(p) for p in args.rules]
    assert rules_args[-1] == mount["mountPath"], "user rules must come last (they override the shipped ones)"
    assert rules_args[0] == "/opt/eunomia/src/services/alerter/rules"  # the image's copy (deploy/Containerfile)
    for name, text in cm["data"].items():
        assert name.endswith(".yaml"), f"ConfigMap key {name} is not loaded (only *.yaml)"
        (tmp_path / name).write_text(text)
    rs = load_rules([DEFAULT_RULES_DIR, tmp_path])
    mine = {r.name: r for r in rs.rules if r.file.startswith(str(tmp_path))}
    assert "Shell in a production pod" in mine
    ev = {"id": "x", "ts": 1, "node": "n", "kind": "exec", "pid": 7, "comm": "sh", "argv": ["sh"],
          "proc": {"name": "sh", "exe": "/bin/sh", "args": ["sh"], "tty": 34816},
          "container": {"id": "a" * 64, "name": "app", "image": "nginx:1", "runtime": "containerd",
                        "privileged": False, "labels": {}},
          "k8s": {"pod": "web-1", "namespace": "prod", "labels": {}, "owner": None,
                  "workload": {"kind": "Deployment", "name": "web"}}}
    hits = [m.rule for m in rs.evaluate(ev)]
    assert "Shell in a production pod" in hits and "Privileged container outside kube-system" not in hits
    out = next(m.output for m in rs.evaluate(ev) if m.rule == "Shell in a production pod")
    assert "pod=web-1 ns=prod workload=Deployment/web" in out


def _kubelet_write(target: Path, files: dict[str, str], gen: int) -> None:
    """Update a ConfigMap volume as the kubelet's atomic writer does: a new timestamped directory,
    `..data` swapped to it by rename, and one symlink per key to `..data/<key>`."""
    new = target / f"..2026_12_02_00_00_0{gen}.000000000"
    new.mkdir()
    for k, v in files.items():
        (new / k).write_text(v)
    tmp = target / "..data_tmp"
    tmp.symlink_to(new.name)
    os.replace(tmp, target / "..data")
    for k in files:
        link = target / k
        if not link.is_symlink():
            link.symlink_to(f"..data/{k}")


async def test_configmap_update_reaches_the_running_alerter(nats_server, tmp_path):
    mount = tmp_path / "rules.d"
    mount.mkdir()
    _kubelet_write(mount, {"site.yaml": "[]\n"}, 1)
    cfg = AlerterConfig(rules=(DEFAULT_RULES_DIR, mount), reload_check_s=0.1)
    svc = AlerterService(cfg, CommonConfig(nats_url=nats_server.url, node="t-cm"))
    stop = asyncio.Event()
    async with svc:
        task = asyncio.create_task(svc.run(stop))
        try:
            before = {r.name for r in svc.ruleset.rules}
            rule = ("- rule: Added by ConfigMap\n  desc: d\n  condition: evt.type = exec and k8s.ns.name = prod\n"
                    "  output: o (pod=%k8s.pod.name)\n  priority: NOTICE\n")
            _kubelet_write(mount, {"site.yaml": rule, "more.yaml": "[]\n"}, 2)   # a changed key and a new one
            for _ in range(300):
                if "Added by ConfigMap" in {r.name for r in svc.ruleset.rules}:
                    break
                await asyncio.sleep(0.05)
            names = {r.name for r in svc.ruleset.rules}
            assert names == before | {"Added by ConfigMap"}
            assert not any("..data" in f or "..2026" in f for f in svc.ruleset.files), svc.ruleset.files
        finally:
            stop.set()
            await task
