"""Rows derived from enriched events: table rows, containers, connections, processes.

Pure functions over a list of *newly inserted* events (duplicates were
already filtered by the id primary key), so aggregates count each event once.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.netnames import INET_FAMILY_SPELLINGS, IP_PROTO_NAMES

RANK_ANCESTOR, RANK_SEEN, RANK_FORK, RANK_EXEC = 0, 1, 2, 3
CHAINS_KEPT = 4


def dumps(v: Any) -> str:
    return orjson.dumps(v).decode()


INT64_MAX = 2**63 - 1


def _s(v: Any, n: int = 512) -> str | None:
    return None if v is None else str(v)[:n].replace("\x00", "")


def _i(v: Any) -> int | None:
    """An int that fits BIGINT, else None."""
    return v if isinstance(v, int) and not isinstance(v, bool) and -INT64_MAX <= v <= INT64_MAX else None


def unstorable(item: dict) -> str | None:
    """Why a schema-valid item still cannot be stored, or None."""
    if not 0 <= item["ts"] <= INT64_MAX - 2**20:    # room for the key's collision bumps (codec.py)
        return f"ts {item['ts']} out of range"
    if len(item["id"]) > 256 or "\x00" in item["id"]:
        return "id longer than 256 characters or with NUL"
    return None


def unique_by_id(items: list[dict]) -> list[dict]:
    """First occurrence of each id, sorted by id (a stable lock order across replicas)."""
    seen: dict[str, dict] = {}
    for it in items:
        seen.setdefault(it["id"], it)
    return [seen[k] for k in sorted(seen)]


def _container(ev: dict) -> dict:
    c = ev.get("container")
    return c if isinstance(c, dict) and isinstance(c.get("id"), str) else {}


def _k8s(ev: dict) -> dict:
    k = ev.get("k8s")
    return k if isinstance(k, dict) else {}


def endpoint_key(ev: dict) -> str:
    """Graph node of the process that made the event: its container, else its host."""
    c = _container(ev)
    return f"c:{c['id']}" if c else f"host:{ev.get('node')}"


def _routable(addr: Any) -> str | None:
    """Normalized IP text when it names a peer worth a graph node (not loopback/unspecified)."""
    if not isinstance(addr, str) or not addr:
        return None
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return None
    if ip.is_loopback or ip.is_unspecified:
        return None
    return str(ip)


def _port(v: Any) -> int:
    return v if isinstance(v, int) and 0 <= v <= 65535 else 0


@dataclass
class Derived:
    containers: dict[str, dict] = field(default_factory=dict)
    connections: dict[tuple, list] = field(default_factory=dict)   # (src, dst, port, proto, origin) -> [count, last]
    container_ips: dict[str, tuple[str, int]] = field(default_factory=dict)  # ip -> (container id, ts)
    processes: dict[tuple, tuple] = field(default_factory=dict)     # (node, pid) -> row
    exits: dict[tuple, int] = field(default_factory=dict)           # (node, pid) -> ts
    ip_names: dict[tuple, tuple[str, int]] = field(default_factory=dict)  # (src, ip) -> (DNS name, ts)
    chains: list[tuple[str, int, list]] = field(default_factory=list)  # the last (node, ts, ancestors) placed

    def container_rows(self) -> list[tuple]:
        return [(cid, c["name"], c["image"], c["runtime"], c["node"], c["cgroup_id"], c["labels"],
                 c["first_seen"], c["last_seen"], c["events"]) for cid, c in sorted(self.containers.items())]

    def connection_rows(self) -> list[tuple]:
        return [(*k, v[0], v[1]) for k, v in sorted(self.connections.items())]

    def ip_rows(self) -> list[tuple]:
        return [(ip, cid, ts) for ip, (cid, ts) in sorted(self.container_ips.items())]

    def ip_name_rows(self) -> list[tuple]:
        return [(src, ip, name, ts) for (src, ip), (name, ts) in sorted(self.ip_names.items())]

    def process_rows(self) -> list[tuple]:
        return [self.processes[k] for k in sorted(self.processes)]

    def exit_rows(self) -> list[tuple]:
        return [(ts, node, pid) for (node, pid), ts in sorted(self.exits.items())]


CONTAINER_COLS = ("id", "name", "image", "runtime", "node", "cgroup_id", "labels", "first_seen", "last_seen", "events")
CONNECTION_COLS = ("src", "dst", "port", "proto", "origin", "count", "last_seen")
IP_COLS = ("ip", "container_id", "last_seen")
IP_NAME_COLS = ("src", "ip", "name", "last_seen")  # the DNS name `src` resolved `ip` from (enricher `dname`)
PROCESS_COLS = ("node", "pid", "ppid", "container_id", "exe", "args", "comm", "ts", "rank")


def _wins(d: Derived, node: str, pid: Any, rank: int, ts: int) -> bool:
    """Whether a row for (node, pid) seen at `ts` with `rank` would replace the batch's row so far
    (asked before the row is built: most events repeat their ancestors)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid <= INT64_MAX:
        return False
    old = d.processes.get((node, pid))
    return old is None or (rank, ts) >= (old[8], old[7])


def _processes(d: Derived, ev: dict, cid: str | None) -> None:
    node, kind, ts = str(ev.get("node")), ev["kind"], ev["ts"]
    proc = ev.get("proc") if isinstance(ev.get("proc"), dict) else {}
    pid = ev.get("pid")
    rank = RANK_EXEC if kind == "exec" else RANK_SEEN
    child = _i(ev.get("child_pid")) if kind == "fork" else None
    own = (kind != "exec" or ev.get("ret", 0) in (0, None)) and _wins(d, node, pid, rank, ts)
    forked = child is not None and _wins(d, node, child, RANK_FORK, ts)
    if own or forked:
        ppid = _i(ev.get("ppid")) or _i(proc.get("ppid"))
        exe = _s(proc.get("exe") or ev.get("filename"))
        args = dumps(proc.get("args") or ev.get("argv") or [])
        comm = _s(ev.get("comm"), 64)
        if own:
            d.processes[(node, pid)] = (node, pid, ppid, cid, exe, args, comm, ts, rank)
        if forked:
            d.processes[(node, child)] = (node, child, pid, cid, exe, args, comm, ts, RANK_FORK)
    if kind == "exit" and isinstance(pid, int):
        d.exits[(node, pid)] = max(ts, d.exits.get((node, pid), 0))
    anc = proc.get("ancestors") if isinstance(proc.get("ancestors"), list) else []
    # most events repeat the ancestors of a newer event of their node, whose rows then win already
    # (an equal ts would win the tie: not skipped)
    if any(n == node and t > ts and a == anc for n, t, a in d.chains):
        return
    d.chains.append((node, ts, anc))
    if len(d.chains) > CHAINS_KEPT:
        del d.chains[0]
    for i, a in enumerate(anc):
        if not isinstance(a, dict):
            break
        apid = _i(a.get("pid"))
        if not _wins(d, node, apid, RANK_ANCESTOR, ts):
            continue
        parent = anc[i + 1].get("pid") if i + 1 < len(anc) and isinstance(anc[i + 1], dict) else None
        # an ancestor may live outside the container (conmon, runc): its container stays unknown
        d.processes[(node, apid)] = (node, apid, _i(parent), None, _s(a.get("exe")), dumps(a.get("args") or []),
                                     _s(a.get("comm"), 64), ts, RANK_ANCESTOR)


def _network(d: Derived, ev: dict, cid: str | None) -> None:
    kind, n, ts = ev["kind"], 1, ev["ts"]
    if kind == "flow":  # connects or accepts counted in the kernel: a delta of `count`
        kind, n, ts = ev.get("direction"), _i(ev.get("count")) or 0, _i(ev.get("last_ts")) or ts
        if kind not in ("connect", "accept") or n <= 0:
            return
    if kind not in ("connect", "accept", "listen") or ev.get("family") not in INET_FAMILY_SPELLINGS:
        return
    me = endpoint_key(ev)
    local = _routable(ev.get("saddr"))
    if cid and local:
        d.container_ips[local] = (cid, ts)
    if kind == "listen":
        return
    peer = _routable(ev.get("daddr"))
    if not peer:
        return
    proto = IP_PROTO_NAMES.get(ev.get("proto"), str(ev.get("proto") or "tcp").lower()[:16])
    # Flows get their own origin: build_graph takes the max over origins, so a
    # connection seen as both an event and a flow is counted once.
    origin = kind if ev["kind"] != "flow" else f"flow:{kind}"
    if kind == "connect":
        key = (me, f"ip:{peer}", _port(ev.get("dport")), proto, origin)
        name = _s(ev.get("dname"), 256)
        if name:
            d.ip_names[(me, peer)] = (name, max(ts, d.ip_names.get((me, peer), ("", 0))[1]))
    else:
        key = (f"ip:{peer}", me, _port(ev.get("sport")), proto, origin)
    cur = d.connections.setdefault(key, [0, 0])
    cur[0] += n
    cur[1] = max(cur[1], ts)


def derive(events: list[dict]) -> Derived:
    d = Derived()
    cids = []
    for ev in events:
        c = _container(ev)
        cid = c.get("id")
        cids.append(cid)
        if cid:
            agg = d.containers.get(cid)
            if agg is None:
                agg = d.containers[cid] = {
                    "name": _s(c.get("name"), 256), "image": _s(c.get("image")), "runtime": _s(c.get("runtime"), 32),
                    "node": _s(ev.get("node"), 128), "cgroup_id": _i(ev.get("cgroup_id")),
                    "labels": dumps(c.get("labels") or {}), "first_seen": ev["ts"], "last_seen": ev["ts"], "events": 0}
            agg["first_seen"] = min(agg["first_seen"], ev["ts"])
            agg["last_seen"] = max(agg["last_seen"], ev["ts"])
            agg["events"] += 1
        _network(d, ev, cid)
    # newest first: a process's row is built once per rank, not again for each later event that
    # names it (every event names its ancestors)
    for i in sorted(range(len(events)), key=lambda i: events[i]["ts"], reverse=True):
        _processes(d, events[i], cids[i])
    return d


def build_tree(rows: list[dict], root_pid: int | None = None) -> list[dict]:
    """Process rows -> forest. With root_pid, only that process's subtree."""
    by_pid = {r["pid"]: {**r, "children": []} for r in rows}
    roots, up = [], {}          # up: pid -> parent pid, for links made so far
    for p in sorted(by_pid.values(), key=lambda r: r["pid"]):
        parent = by_pid.get(p["ppid"]) if p["ppid"] != p["pid"] else None
        q = parent["pid"] if parent else None
        while q is not None and q != p["pid"]:     # pid reuse can make loops: never close one
            q = up.get(q)
        if parent and q is None:
            parent["children"].append(p)
            up[p["pid"]] = parent["pid"]
        else:
            roots.append(p)
    if root_pid is not None:
        return [by_pid[root_pid]] if root_pid in by_pid else []
    return roots


def build_graph(edges: list[tuple], ip_owner: dict[str, str], names: dict[str, str],
                ip_names: list[tuple] | None = None, meta: dict[str, dict] | None = None) -> dict:
    """Rows (src, dst, port, proto, origin, count, last_seen) -> {"nodes", "edges"}.

    Endpoints "ip:<addr>" that belong to a known container become that container;
    a connection seen from both ends (connect + accept), or as events and as
    kernel flows, is counted once (max over origins). `ip_names` rows (src, ip,
    name, last_seen) give edges their DNS `name` and external nodes their
    `names`; `meta` (container id -> {"node", "namespace", "pod"}) groups nodes."""
    dns: dict[tuple[str, str], str] = {}
    for src, ip, name, _last in sorted(ip_names or (), key=lambda r: r[3]):
        dns[(src, ip)] = name  # the newest name wins
    def resolve(key: str) -> str:
        if key.startswith("ip:") and key[3:] in ip_owner:
            return f"c:{ip_owner[key[3:]]}"
        return key

    per_origin: dict[tuple, dict[str, list]] = {}
    for src, dst, port, proto, origin, count, last in edges:
        k = (resolve(src), resolve(dst), port, proto)
        slot = per_origin.setdefault(k, {}).setdefault(origin, [0, 0])
        slot[0] += count
        slot[1] = max(slot[1], last)
    out_edges, node_ids = [], set()
    ip_labels: dict[str, set[str]] = {}
    for (s, t, port, proto), origins in sorted(per_origin.items()):
        name = dns.get((s, t[3:])) if t.startswith("ip:") else None
        out_edges.append({"source": s, "target": t, "port": port, "proto": proto,
                          "count": max(v[0] for v in origins.values()),
                          "last_seen": max(v[1] for v in origins.values()), "name": name})
        if name:
            ip_labels.setdefault(t, set()).add(name)
        node_ids.update((s, t))

    def node(key: str) -> dict:
        kind, _, rest = key.partition(":")
        if kind == "c":
            m = (meta or {}).get(rest) or {}
            return {"id": key, "label": names.get(rest) or rest[:12], "kind": "container",
                    "node": m.get("node"), "namespace": m.get("namespace"), "pod": m.get("pod")}
        if kind == "host":
            return {"id": key, "label": rest, "kind": "host", "node": rest, "namespace": None, "pod": None}
        dn = sorted(ip_labels.get(key, ()))
        return {"id": key, "label": f"{dn[0]} ({rest})" if dn else rest, "kind": "external", "names": dn,
                "node": None, "namespace": None, "pod": None}

    return {"nodes": [node(k) for k in sorted(node_ids)], "edges": out_edges}


def container_meta(rows) -> dict[str, dict]:
    """Rows (id, node, labels JSON) -> {id: {"node", "namespace", "pod"}} (Kubernetes labels where present)."""
    out = {}
    for cid, node, labels in rows:
        try:
            lab = orjson.loads(labels) if labels else {}
        except orjson.JSONDecodeError:
            lab = {}
        lab = lab if isinstance(lab, dict) else {}
        out[cid] = {"node": node, "namespace": lab.get("io.kubernetes.pod.namespace"),
                    "pod": lab.get("io.kubernetes.pod.name")}
    return out
