"""A realistic mix of enriched events, shaped as the probe + enricher emit them (shared/schema.py).

Kinds in proportions seen on a busy node with --capture all (opens dominate),
containers with labels, some in Kubernetes pods, processes with parent chains,
library/config/log/temp paths, outbound connections and kernel flows.
"""
from __future__ import annotations

import random
import string

KIND_WEIGHTS = {"open": 52, "exec": 6, "fork": 6, "exit": 6, "connect": 8, "accept": 3, "flow": 4, "unlink": 3,
                "rename": 2, "chmod": 2, "dup": 2, "setuid": 1, "socket": 2, "signal": 1, "mount": 1, "chdir": 1}
IMAGES = ["docker.io/library/nginx:1.25", "docker.io/library/postgres:15", "docker.io/library/redis:7",
          "quay.io/prometheus/node-exporter:v1.7", "ghcr.io/acme/api:2.3.1", "ghcr.io/acme/worker:2.3.1",
          "docker.io/library/python:3.11-slim", "registry.k8s.io/coredns/coredns:v1.11.1"]
PROGRAMS = {
    "nginx": (["/usr/sbin/nginx", "-g", "daemon off;"], ["/etc/nginx/nginx.conf", "/var/log/nginx/access.log",
                                                          "/usr/share/nginx/html/index.html", "/var/cache/nginx/"]),
    "postgres": (["/usr/lib/postgresql/15/bin/postgres", "-D", "/var/lib/postgresql/data"],
                 ["/var/lib/postgresql/data/base/16384/", "/var/lib/postgresql/data/pg_wal/", "/etc/passwd"]),
    "redis-server": (["/usr/local/bin/redis-server", "*:6379"], ["/data/dump.rdb", "/data/appendonly.aof"]),
    "python3": (["/usr/local/bin/python3", "-m", "worker", "--queue", "jobs"],
                ["/usr/local/lib/python3.11/", "/app/worker/", "/tmp/tmp", "/proc/self/status"]),
    "sh": (["/bin/sh", "-c", "curl -fsS http://api:8080/healthz"], ["/etc/ld.so.cache", "/bin/"]),
    "curl": (["/usr/bin/curl", "-fsS", "http://10.0.3.7:8080/healthz"], ["/etc/ssl/certs/ca-certificates.crt",
                                                                         "/etc/resolv.conf", "/etc/hosts"]),
    "node_exporter": (["/bin/node_exporter", "--path.rootfs=/host"], ["/host/proc/", "/host/sys/class/net/"]),
    "coredns": (["/coredns", "-conf", "/etc/coredns/Corefile"], ["/etc/coredns/Corefile", "/etc/hosts"]),
}
LIBS = ["/lib/x86_64-linux-gnu/libc.so.6", "/etc/ld.so.cache", "/lib/x86_64-linux-gnu/libpthread.so.0",
        "/usr/lib/x86_64-linux-gnu/libssl.so.3", "/lib/x86_64-linux-gnu/libz.so.1", "/proc/self/maps"]


def _hex(r: random.Random, n: int) -> str:
    return "".join(r.choice("0123456789abcdef") for _ in range(n))


class EventMix:
    def __init__(self, seed: int = 1, containers: int = 24, node: str = "node-a") -> None:
        self.r = random.Random(seed)
        self.node = node
        self.seq = 0
        self.boot = _hex(self.r, 12)
        self.containers = []
        self.peers: dict[str, list[str]] = {}
        for i in range(containers):
            prog = list(PROGRAMS)[i % len(PROGRAMS)]
            image = IMAGES[i % len(IMAGES)]
            name = f"{prog.replace('_', '-')}-{i}"
            k8s = {"pod": f"{name}-{_hex(self.r, 5)}", "namespace": ["prod", "staging", "kube-system"][i % 3],
                   "labels": {"app": prog, "pod-template-hash": _hex(self.r, 10)}} if i % 2 else None
            c = {"id": _hex(self.r, 64), "name": name, "image": image, "runtime": "containerd" if k8s else "podman",
                 "labels": {"app": prog, "version": "2.3.1", "team": ["core", "data", "web"][i % 3]}}
            pids = [self.r.randrange(100, 60000) for _ in range(4)]
            self.peers[c["id"]] = [(f"10.0.{self.r.randrange(8)}.{self.r.randrange(2, 250)}",
                                    self.r.choice([80, 443, 5432, 6379, 8080, 53])) for _ in range(12)]
            self.containers.append((c, k8s, prog, pids, 1000 + i))
        self.kinds = list(KIND_WEIGHTS)
        self.weights = list(KIND_WEIGHTS.values())

    def event(self, ts: int) -> dict:
        r = self.r
        self.seq += 1
        host = r.random() < 0.1
        c, k8s, prog, pids, cg = self.containers[r.randrange(len(self.containers))]
        peers = self.peers[c["id"]]
        if host:
            c, k8s, prog, pids, cg = None, None, "systemd-journald", [412], 1
            args, paths = ["/lib/systemd/systemd-journald"], ["/var/log/journal/", "/run/systemd/journal/"]
        else:
            args, paths = PROGRAMS[prog]
        pid = r.choice(pids)
        kind = r.choices(self.kinds, self.weights)[0]
        comm = prog[:15]
        anc = [{"pid": pid - 1, "comm": "containerd-shim" if not host else "systemd", "exe": "/usr/bin/containerd-shim",
                "args": ["/usr/bin/containerd-shim-runc-v2", "-namespace", "k8s.io", "-id", (c or {}).get("id", "")[:64]]},
               {"pid": 1, "comm": "systemd", "exe": "/lib/systemd/systemd"}]
        ev = {"id": f"{self.node}-{self.boot}-{self.seq:x}", "ts": ts, "node": self.node, "kind": kind, "pid": pid,
              "tid": pid + r.randrange(3), "ppid": pid - 1, "uid": 0 if host else 101, "gid": 0 if host else 101,
              "comm": comm, "cgroup_id": cg,
              "proc": {"exe": args[0], "args": args, "cmdline": " ".join(args), "name": comm, "cwd": "/",
                       "ppid": pid - 1, "pname": anc[0]["comm"], "pexe": anc[0]["exe"],
                       "pcmdline": " ".join(anc[0]["args"]), "ancestors": anc},
              "container": c, "k8s": k8s}
        if kind in ("open", "unlink", "chmod", "chdir"):
            base = r.choice(paths + LIBS)
            if base.endswith("/"):
                base += r.choice(["", "tmp"]) + "".join(r.choices(string.ascii_lowercase + string.digits, k=8))
            ev["path"] = base
            ev["ret"] = r.choice([3, 4, 5, 7, -2]) if kind == "open" else 0
            if kind == "open":
                ev.update(flags=r.choice([0, 0o2101, 0o100002]), mode=0o644, dirfd=-100)
            if kind == "chmod":
                ev["mode"] = 0o755
        elif kind == "exec":
            ev.update(filename=args[0], argv=args, ret=0, argv_truncated=False)
        elif kind == "fork":
            ev.update(child_pid=pid + r.randrange(1, 50), clone_flags=0x1200011)
        elif kind == "exit":
            ev["exit_code"] = r.choice([0, 0, 0, 1])
        elif kind in ("connect", "accept", "flow"):
            # peers: a dozen services per container, now and then an address outside the cluster
            peer, port = r.choice(peers) if r.random() < 0.97 else \
                (f"{r.randrange(1, 224)}.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(1, 255)}", 443)
            ev.update(family=2, proto="tcp", daddr=peer, dport=port, saddr=f"10.88.0.{cg % 250}",
                      sport=r.randrange(32768, 61000))
            if kind == "flow":
                ev.update(direction=r.choice(["connect", "accept"]), count=r.randrange(1, 40), failed=0,
                          first_ts=ts - 5_000_000_000, last_ts=ts)
            else:
                ev.update(ret=0, fd=r.randrange(3, 40))
        elif kind == "rename":
            p = r.choice(paths) + "tmp" + _hex(r, 6)
            ev.update(oldpath=p, newpath=p[:-9] + "final", ret=0, flags=0)
        elif kind == "dup":
            ev.update(syscall="dup2", oldfd=r.randrange(3, 30), newfd=r.choice([0, 1, 2]), fd_type="other", ret=0)
        elif kind == "setuid":
            ev.update(syscall="setresuid", uid=101, euid=101, suid=101, ret=0)
        elif kind == "socket":
            ev.update(family=17, type=3, protocol=768, ret=5)
        elif kind == "signal":
            ev.update(sig=15, target_pid=r.choice(pids), ret=0)
        elif kind == "mount":
            ev.update(source="overlay", target=f"/var/lib/containers/storage/overlay/{_hex(r, 64)}/merged",
                      fstype="overlay", flags=0, ret=0)
        return ev

    def events(self, n: int, start_ts: int, span_ns: int) -> list[dict]:
        step = max(1, span_ns // max(n, 1))
        return [self.event(start_ts + i * step + self.r.randrange(step)) for i in range(n)]

    def alert(self, ev: dict) -> dict:
        self.seq += 1
        rule, prio = self.r.choice([("Shell in container", "warning"), ("Read sensitive file", "error"),
                                    ("Outbound to unusual port", "notice"), ("Write below etc", "critical")])
        return {"id": f"alert-{self.boot}-{self.seq:x}", "ts": ev["ts"] + 1000, "node": ev["node"], "kind": "alert",
                "pid": ev["pid"], "rule": rule, "priority": prio, "output": f"{rule} (comm={ev['comm']} pid={ev['pid']})",
                "tags": ["container", "mitre"], "event": ev, "container": ev["container"], "k8s": ev["k8s"]}
