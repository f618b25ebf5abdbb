"""Deploy artefacts, checked statically (no Kubernetes or Docker engine here):
Kubernetes manifests, compose.yaml, systemd units, the Containerfile and the
NATS configs, which the real nats-server validates with `-t`."""
from __future__ import annotations

import configparser
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from services.cli.main import build_parser
from shared import busauth, partition
from shared.natsserver import find_binary

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SERVICES = ("probe", "enricher", "alerter", "store", "api")
PROBE_CAPS = {"BPF", "PERFMON", "SYS_ADMIN", "SYS_RESOURCE"}
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")


def k8s_docs() -> list[dict]:
    docs = []
    for f in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if f.name == "kustomization.yaml":
            continue
        for d in yaml.safe_load_all(f.read_text()):
            if d is not None:
                d["_file"] = f.name
                docs.append(d)
    return docs


DOCS = k8s_docs()


def find(kind: str, name: str) -> dict:
    hits = [d for d in DOCS if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"want exactly one {kind}/{name}, found {len(hits)}"
    return hits[0]


def containers() -> list[tuple[dict, dict]]:
    """(workload, container) for every container of every workload."""
    return [(d, c) for d in DOCS if d["kind"] in WORKLOADS for c in d["spec"]["template"]["spec"]["containers"]]


def subcommands() -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return set(sub.choices)


def check_eunomia_argv(argv: list[str], where: str) -> str:
    """`argv` (after the `eunomia` executable) must parse with the real CLI; returns the subcommand."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: `eunomia {' '.join(argv)}` is not a valid eunomia command line "
                    f"(subcommands: {sorted(subcommands())})")
    assert getattr(args, "func", None), f"{where}: `eunomia {' '.join(argv)}` runs no subcommand"
    return args.command


def env_names_read_by_code() -> set[str]:
    names = set()
    for f in [*ROOT.glob("shared/**/*.py"), *ROOT.glob("services/**/*.py")]:
        names |= set(re.findall(r"""["'](EUNOMIA_[A-Z0-9_]+)["']""", f.read_text(errors="replace")))
    return names


def nats_check(conf_text: str, tmp_path: Path, env: dict | None = None) -> str:
    """Validate a nats.conf with the real server (`-t`); returns its output."""
    f = tmp_path / "nats.conf"
    f.write_text(conf_text)
    r = subprocess.run([find_binary(), "--config", str(f), "-t"], capture_output=True, text=True, timeout=30,
                       env={**os.environ, **(env or {})})
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "is valid" in out, f"nats-server rejects the config: {out}"
    return out


# ---------------------------------------------------------------- Kubernetes

def test_every_manifest_is_well_formed():
    assert DOCS, "no manifests under deploy/k8s"
    for d in DOCS:
        where = f"{d['_file']}: {d.get('kind')}/{d.get('metadata', {}).get('name')}"
        assert d.get("apiVersion") and d.get("kind") and d["metadata"].get("name"), where
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == "eunomia", f"{where}: not in namespace eunomia"
        if d["kind"] in WORKLOADS:
            sel = d["spec"]["selector"]["matchLabels"]
            labels = d["spec"]["template"]["metadata"]["labels"]
            assert sel.items() <= labels.items(), f"{where}: selector does not match the pod labels"
            vols = {v["name"] for v in d["spec"]["template"]["spec"].get("volumes", [])}
            vols |= {t["metadata"]["name"] for t in d["spec"].get("volumeClaimTemplates", [])}
            for c in d["spec"]["template"]["spec"]["containers"]:
                assert c["image"].startswith("eunomia:"), f"{where}: image {c['image']}"
                for m in c.get("volumeMounts", []):
                    assert m["name"] in vols, f"{where}/{c['name']}: mounts undeclared volume {m['name']}"
                ports = {p["name"] for p in c.get("ports", [])}
                for probe in ("readinessProbe", "livenessProbe"):
                    port = c.get(probe, {}).get("httpGet", {}).get("port")
                    if isinstance(port, str):
                        assert port in ports, f"{where}/{c['name']}: {probe} on unknown port {port}"
    kust = yaml.safe_load((DEPLOY / "k8s/kustomization.yaml").read_text())
    assert sorted(kust["resources"]) == sorted({d["_file"] for d in DOCS})


def test_every_service_runs_a_real_eunomia_subcommand():
    ran = {}
    for w, c in containers():
        argv = [*c.get("command", []), *c.get("args", [])]
        where = f"{w['kind']}/{w['metadata']['name']}/{c['name']}"
        if argv[0] == "eunomia":
            ran[check_eunomia_argv(argv[1:], where)] = w
        else:
            assert argv[0] == "nats-server", f"{where}: runs {argv[0]}"
    assert set(SERVICES) <= set(ran), f"services without a workload: {set(SERVICES) - set(ran)}"


def test_probe_daemonset_has_host_access():
    ds = find("DaemonSet", "eunomia-node")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    probe = next(c for c in pod["containers"] if c["command"][1:2] == ["probe"])
    sc = probe["securityContext"]
    caps = set(sc.get("capabilities", {}).get("add", []))
    assert sc.get("privileged") is True or PROBE_CAPS <= caps, f"probe lacks {PROBE_CAPS - caps}"
    mounted = {host_paths[m["name"]]: m["mountPath"] for m in probe["volumeMounts"] if m["name"] in host_paths}
    for path in ("/sys/kernel/tracing", "/sys/kernel/debug", "/sys/fs/cgroup", "/lib/modules", "/usr/src"):
        assert mounted.get(path) == path, f"probe does not mount host {path}"
    for c in pod["containers"]:
        node = next(e for e in c["env"] if e["name"] == "EUNOMIA_NODE")
        assert node["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName", c["name"]
    enricher = next(c for c in pod["containers"] if c["command"][1:2] == ["enricher"])
    mounts = {m["mountPath"]: host_paths[m["name"]] for m in enricher["volumeMounts"] if m["name"] in host_paths}
    args = enricher["args"]
    socks = [args[i + 1] for i, a in enumerate(args) if a == "--socket"]
    assert socks, "enricher is given no runtime socket"
    for sock in socks:  # each socket lies under a host mount
        assert any(sock.startswith(mp + "/") for mp in mounts), f"enricher socket {sock} is not on a host mount"


def test_alerter_scales_out_with_partitions():
    w = next(w for w, c in containers() if c["command"][1:2] == ["alerter"])
    assert w["spec"]["replicas"] >= 2
    env = {e["name"]: e for e in w["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["EUNOMIA_ALERTER_REPLICAS"]["value"] == str(w["spec"]["replicas"])
    assert "pod-index" in env["EUNOMIA_ALERTER_REPLICA"]["valueFrom"]["fieldRef"]["fieldPath"]
    n = int(find("ConfigMap", "eunomia-env")["data"]["EUNOMIA_PARTITIONS"])
    assert n % w["spec"]["replicas"] == 0, "partitions do not spread evenly over the alerter replicas"


def test_nats_cluster_is_jetstream_r3_with_partition_mapping(tmp_path):
    sts = find("StatefulSet", "nats")
    assert sts["spec"]["replicas"] == 3
    svc = find("Service", sts["spec"]["serviceName"])
    assert svc["spec"]["clusterIP"] == "None"
    conf = find("ConfigMap", "nats-config")["data"]["nats.conf"]
    assert 'include "auth/auth.conf"' in conf and conf.count("/etc/nats/tls/ca.pem") == 2  # clients and routes
    assert re.search(r"cluster\s*\{[^}]*tls\s*\{[^}]*verify:\s*true", conf), "routes do not verify certificates"
    # the documented steps make what the config needs (eunomia bus init, make-certs.sh)
    creds = busauth.ensure(tmp_path / "auth", busauth.users(["node1"]))
    (tmp_path / "auth" / "auth.conf").write_text(busauth.server_authorization(creds))
    subprocess.run(["sh", str(DEPLOY / "nats/make-certs.sh"), str(tmp_path / "tls")], check=True, capture_output=True)
    out = nats_check(conf.replace("/etc/nats/tls/", f"{tmp_path}/tls/"), tmp_path, {"POD_NAME": "nats-0"})
    assert "valid" in out
    assert re.search(r"jetstream\s*\{[^}]*store_dir:\s*/data", conf), "JetStream not on the data volume"
    routes = re.findall(r"nats://(nats-\d)\.nats\.eunomia\.svc\.cluster\.local:6222", conf)
    assert sorted(routes) == ["nats-0", "nats-1", "nats-2"]
    n = int(find("ConfigMap", "eunomia-env")["data"]["EUNOMIA_PARTITIONS"])
    for src, dst in partition.mapping(n).items():
        assert f'"{src}": "{dst}"' in conf, "mapping differs from shared/partition.py"
    env = find("ConfigMap", "eunomia-env")["data"]
    assert env["EUNOMIA_STREAM_REPLICAS"] == "3"
    assert env["EUNOMIA_NATS"].count("tls://") == 3 and env["EUNOMIA_NATS_CA"]


GENERATED_SECRETS = ("eunomia-bus", "eunomia-bus-server", "eunomia-nats-tls")


def test_env_references_exist():
    readme = (DEPLOY / "README.md").read_text()
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in DOCS if d["kind"] == "ConfigMap"}
    secrets = {d["metadata"]["name"]: {**d.get("data", {}), **d.get("stringData", {})}
               for d in DOCS if d["kind"] == "Secret"}
    read = env_names_read_by_code()
    for w, c in containers():
        where = f"{w['metadata']['name']}/{c['name']}"
        names = []
        for ef in c.get("envFrom", []):
            ref = ef["configMapRef"]["name"]
            assert ref in configmaps, f"{where}: envFrom unknown ConfigMap {ref}"
            names += list(configmaps[ref])
        for e in c.get("env", []):
            names.append(e["name"])
            src = e.get("valueFrom", {})
            if "secretKeyRef" in src:
                r = src["secretKeyRef"]
                assert r["key"] in secrets.get(r["name"], {}), f"{where}: no Secret {r['name']} key {r['key']}"
            if "configMapKeyRef" in src:
                r = src["configMapKeyRef"]
                assert r["key"] in configmaps.get(r["name"], {}), f"{where}: no ConfigMap {r['name']}/{r['key']}"
        unread = {n for n in names if n.startswith("EUNOMIA_")} - read
        assert not unread, f"{where}: sets {sorted(unread)} that no code reads"
        for ref in re.findall(r"\$\((\w+)\)", " ".join([*c.get("command", []), *c.get("args", [])])):
            assert ref in names, f"{where}: command uses $({ref}), not in its env"
    for d in DOCS:
        if d["kind"] in WORKLOADS:
            for v in d["spec"]["template"]["spec"].get("volumes", []):
                if "secret" in v:
                    name = v["secret"]["secretName"]
                    # bus credentials and certificates are made at install time, never shipped
                    made = name in GENERATED_SECRETS and f"secret generic {name}" in readme
                    assert name in secrets or made, f"{d['metadata']['name']}: no Secret {v}"
                if "configMap" in v:
                    assert v["configMap"]["name"] in configmaps, f"{d['metadata']['name']}: no ConfigMap {v}"


# ------------------------------------------------------------------- compose

def test_compose_runs_every_service_against_nats(tmp_path):
    doc = yaml.safe_load((ROOT / "compose.yaml").read_text())
    svcs = doc["services"]
    assert set(SERVICES) | {"nats"} <= set(svcs)
    read = env_names_read_by_code()
    for name in SERVICES:
        s = svcs[name]
        assert "nats" in s["depends_on"], f"compose {name} does not depend on nats"
        assert s["command"][0] == "eunomia"
        assert check_eunomia_argv(s["command"][1:], f"compose {name}") == name
        assert s["environment"]["EUNOMIA_NATS"] == "nats://nats:4222"
        unread = {n for n in s["environment"] if n.startswith("EUNOMIA_")} - read
        assert not unread, f"compose {name}: sets {sorted(unread)} that no code reads"
    assert svcs["probe"]["privileged"] is True and svcs["probe"]["pid"] == "host"
    for vol in svcs["nats"]["volumes"]:
        src = vol.split(":")[0]
        if src.startswith("./"):
            assert (ROOT / src).exists(), f"compose nats mounts missing {src}"
    cmd = svcs["nats"]["command"]
    assert cmd[:3] == ["nats-server", "--config", "/etc/nats/nats.conf"] and "--store_dir" in cmd


def test_single_node_nats_conf_is_valid_and_agrees_on_partitions(tmp_path):
    conf = (DEPLOY / "nats/nats.conf").read_text()
    assert 'include "bus/auth.conf"' in conf  # the bus is authenticated
    creds = busauth.ensure(tmp_path / "bus", busauth.users(["node1"]))
    (tmp_path / "bus" / "auth.conf").write_text(busauth.server_authorization(creds))
    nats_check(conf, tmp_path)
    assert re.search(r"^jetstream\s*\{", conf, re.M)
    env = dict(line.split("=", 1) for line in (DEPLOY / "systemd/eunomia.env").read_text().splitlines()
               if line and not line.startswith("#"))
    compose_env = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["alerter"]["environment"]
    for n in (int(env["EUNOMIA_PARTITIONS"]), int(compose_env["EUNOMIA_PARTITIONS"])):
        for src, dst in partition.mapping(n).items():  # the services and the server agree on N
            assert f'"{src}": "{dst}"' in conf


def test_network_policies_fence_the_bus():
    find("NetworkPolicy", "default-deny-ingress")
    pol = find("NetworkPolicy", "nats")["spec"]
    assert pol["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "nats"}
    by_port = {r["ports"][0]["port"]: r["from"][0]["podSelector"]["matchLabels"] for r in pol["ingress"]}
    assert by_port == {4222: {"app.kubernetes.io/part-of": "eunomia"}, 6222: {"app.kubernetes.io/name": "nats"}}


def test_only_probe_and_enricher_run_as_root_in_k8s_and_each_mounts_its_bus_identity():
    for w, c in containers():
        argv = [*c.get("command", []), *c.get("args", [])]
        sc, name = c.get("securityContext", {}), argv[1] if argv[0] == "eunomia" else "nats"
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        if name in ("alerter", "store", "api"):
            assert sc.get("runAsNonRoot") is True and sc.get("runAsUser", 0) != 0, name
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), name
            vol = next(v for v in w["spec"]["template"]["spec"]["volumes"] if v["name"] == mounts["/etc/eunomia/bus"])
            assert [i["key"] for i in vol["secret"]["items"]] == [f"nats-{name}"], name  # its own identity only
        elif name in ("probe", "enricher"):
            assert "/etc/eunomia/bus" in mounts and "ALL" in sc["capabilities"]["drop"], name
        else:  # nats-server
            assert sc.get("runAsNonRoot") is True and sc["capabilities"]["drop"] == ["ALL"], name


# ------------------------------------------------------------------- systemd

def units() -> dict[str, configparser.ConfigParser]:
    out = {}
    for f in sorted((DEPLOY / "systemd").glob("eunomia*.service")):
        cp = configparser.ConfigParser(strict=False, interpolation=None)
        cp.optionxform = str
        cp.read_string(f.read_text())
        out[f.stem] = cp
    return out


def test_systemd_units_start_real_subcommands():
    us = units()
    assert set(us) == {f"eunomia-{s}" for s in SERVICES} | {"eunomia-nats"}
    for name, u in us.items():
        assert {"Unit", "Service", "Install"} <= set(u.sections()), name
        argv = shlex.split(u["Service"]["ExecStart"])
        if name == "eunomia-nats":
            assert argv[0].endswith("/nats-server") and argv[1:] == ["--config", "/etc/eunomia/nats.conf"]
            continue
        assert argv[0] == "/opt/eunomia/venv/bin/eunomia", name
        assert check_eunomia_argv(argv[1:], name) == name.removeprefix("eunomia-")
        assert "eunomia-nats.service" in u["Unit"]["After"], name
        assert u["Service"]["EnvironmentFile"] == "/etc/eunomia/eunomia.env"
        assert u["Service"]["Restart"] == "on-failure"
        svc = u["Service"]
        short = name.removeprefix("eunomia-")
        cred = "nats-" + (f"{short}-%l" if short in ("probe", "enricher") else short)
        assert svc["LoadCredential"] == f"{cred}:/etc/eunomia/bus/{cred}", name  # its own bus identity only
        if short in ("probe", "enricher"):  # root, with a bounded capability set
            assert svc["User"] == "root" and svc["CapabilityBoundingSet"].startswith("CAP_"), name
        else:  # an unprivileged user without capabilities
            assert svc["User"] == "eunomia" and svc["CapabilityBoundingSet"] == "", name
            assert svc["NoNewPrivileges"] == "yes" and svc["StateDirectoryMode"] == "0700", name
    nats = us["eunomia-nats"]["Service"]
    assert nats["User"] == "eunomia" and nats["CapabilityBoundingSet"] == ""
    target = configparser.ConfigParser(interpolation=None)
    target.read(DEPLOY / "systemd/eunomia.target")
    assert set(target["Unit"]["Wants"].split()) == {f"eunomia-{s}.service" for s in SERVICES}
    read = env_names_read_by_code()
    for line in (DEPLOY / "systemd/eunomia.env").read_text().splitlines():
        if line and not line.startswith("#"):
            assert line.split("=")[0] in read, f"eunomia.env sets {line.split('=')[0]} that no code reads"


# ------------------------------------------------------------------- image

def test_containerfile_copies_what_exists():
    text = (DEPLOY / "Containerfile").read_text()
    assert text.startswith("#") and re.search(r"^FROM \S+", text, re.M)
    for src in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for s in src.split():
            assert (ROOT / s).exists(), f"Containerfile copies missing {s}"
    assert "python3-bpfcc" in text and "pip install" in text
