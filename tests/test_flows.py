"""Network flows aggregated in the kernel (bpf/net.bpf.c `flows`, services/probe/flows.py)
with real BPF and real sockets on loopback, and the store's connection rows made from them.

Every event kind stays switched off in the kernel (kind_on all 0): flows must
not depend on them. Other processes may connect at the same time, so each
test takes a baseline collect() first and looks only at its own ports.
"""
from __future__ import annotations

import errno
import os
import socket
import time
import uuid

import pytest

from services.probe import loader
from services.probe.flows import FlowReader
from services.store.derive import build_graph, derive
from shared import subjects
from tests.test_store import client_bus, cont, ev, running_store, until

NODE = f"flows{uuid.uuid4().hex[:6]}"


def load(*extra_cflags: str):
    if os.geteuid() != 0:
        pytest.skip("loads BPF programs: needs root")
    plan = loader.plan_sources(loader.BPF_DIR)
    b = loader.compile_and_attach(plan, 16, 64, loader.BPF_DIR, extra_cflags)
    assert not any(v.value for v in b[b"kind_on"].values()), "every event kind is off"
    return b


@pytest.fixture(scope="module")
def bpf():
    b = load()
    yield b
    b.cleanup()


@pytest.fixture
def reader(bpf):
    r = FlowReader(bpf, NODE)
    r.collect()  # baseline: what was counted before this test
    return r


def own_cgroup_id() -> int:
    path = next(line[3:] for line in open("/proc/self/cgroup").read().splitlines() if line.startswith("0::"))
    root = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"
    return os.stat(root + path).st_ino


def listener(host: str = "127.0.0.1") -> tuple[socket.socket, int]:
    srv = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    srv.bind((host, 0))
    srv.listen(64)
    return srv, srv.getsockname()[1]


def connect_accept(srv: socket.socket, host: str, port: int, n: int) -> None:
    for _ in range(n):
        c = socket.create_connection((host, port))
        srv.accept()[0].close()
        c.close()


def refused_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # bound, never listening: connects are refused
    return port


def of(events: list[dict], direction: str, port: int) -> list[dict]:
    """Flow events to (connect) or at (accept) `port`."""
    field = "dport" if direction == "connect" else "sport"
    return [e for e in events if e["direction"] == direction and e[field] == port]


def in_map(bpf, port: int) -> bool:
    return any(k.direction == 0 and k.rport == port for k in bpf[b"flows"].keys())


@pytest.mark.bpf
def test_connects_and_accepts_aggregate_into_one_flow_per_side(bpf, reader):
    srv, port = listener()
    before = time.time_ns()
    connect_accept(srv, "127.0.0.1", port, 5)
    events = reader.collect()
    [cn], [ac] = of(events, "connect", port), of(events, "accept", port)
    assert cn["count"] == 5 and cn["failed"] == 0 and ac["count"] == 5 and ac["failed"] == 0
    assert cn["daddr"] == "127.0.0.1" and cn["family"] == socket.AF_INET and cn["proto"] == "tcp"
    assert cn["saddr"] is None and cn["sport"] is None  # ephemeral local port: not part of a flow
    assert ac["daddr"] == "127.0.0.1" and ac["dport"] is None  # the peer's ephemeral port neither
    assert ac["saddr"] == "127.0.0.1" and ac["proto"] == "tcp"
    assert cn["cgroup_id"] == ac["cgroup_id"] == own_cgroup_id()
    assert cn["kind"] == "flow" and cn["node"] == NODE and cn["pid"] == 0 and cn["id"] != ac["id"]
    assert before - 1e6 <= cn["first_ts"] <= cn["last_ts"] == cn["ts"] <= time.time_ns()  # wall clock
    assert reader.emitted >= 2 and reader.active >= 2

    assert of(reader.collect(), "connect", port) == []  # nothing new: nothing emitted
    connect_accept(srv, "127.0.0.1", port, 2)
    events = reader.collect()
    [cn2], [ac2] = of(events, "connect", port), of(events, "accept", port)
    assert cn2["count"] == ac2["count"] == 2  # deltas: consumers add them up
    assert abs(cn2["first_ts"] - cn["first_ts"]) < 1e6 and cn2["last_ts"] > cn["last_ts"]  # same flow
    srv.close()


@pytest.mark.bpf
def test_refused_connects_are_failed_and_in_progress_ones_are_not(bpf, reader):
    port = refused_port()
    for _ in range(3):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port))
    srv, lport = listener()
    nb = socket.socket()
    nb.setblocking(False)
    assert nb.connect_ex(("127.0.0.1", lport)) in (0, errno.EINPROGRESS)
    srv.accept()[0].close()
    events = reader.collect()
    [bad] = of(events, "connect", port)
    assert bad["count"] == 3 and bad["failed"] == 3
    [ok] = of(events, "connect", lport)
    assert ok["count"] == 1 and ok["failed"] == 0
    nb.close()
    srv.close()


@pytest.mark.bpf
def test_ipv6_and_udp_flows(bpf, reader):
    srv, port = listener("::1")
    connect_accept(srv, "::1", port, 3)
    for _ in range(2):  # connect() on UDP sets the destination: a flow too
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.connect(("127.0.0.1", port))
        u.close()
    events = reader.collect()
    [ac] = of(events, "accept", port)
    by_proto = {e["proto"]: e for e in of(events, "connect", port)}
    cn, udp = by_proto["tcp"], by_proto["udp"]
    assert cn["family"] == socket.AF_INET6 and cn["daddr"] == "::1" and cn["count"] == 3
    assert ac["family"] == socket.AF_INET6 and ac["daddr"] == "::1" and ac["saddr"] == "::1" and ac["count"] == 3
    assert udp["family"] == socket.AF_INET and udp["daddr"] == "127.0.0.1" and udp["count"] == 2
    srv.close()


@pytest.mark.bpf
def test_excluded_pids_make_no_flows(bpf, reader):
    srv, port = listener()
    excluded = bpf[b"excluded"]
    me = excluded.Key(os.getpid())
    excluded[me] = excluded.Leaf(1)
    try:
        connect_accept(srv, "127.0.0.1", port, 3)
    finally:
        del excluded[me]
    assert of(reader.collect(), "connect", port) == []
    connect_accept(srv, "127.0.0.1", port, 1)
    [cn] = of(reader.collect(), "connect", port)
    assert cn["count"] == 1
    srv.close()


@pytest.mark.bpf
def test_idle_flows_are_emitted_then_pruned(bpf):
    r = FlowReader(bpf, NODE, idle_s=0.5)
    r.collect()
    srv, port = listener()
    srv2, busy = listener()
    connect_accept(srv, "127.0.0.1", port, 2)
    time.sleep(0.8)
    connect_accept(srv2, "127.0.0.1", busy, 1)
    pruned = r.pruned
    events = r.collect()
    [cn] = of(events, "connect", port)
    assert cn["count"] == 2, "an idle flow's last counts are returned before it goes"
    assert not in_map(bpf, port) and r.pruned >= pruned + 2  # its connect and accept sides
    assert in_map(bpf, busy)
    connect_accept(srv, "127.0.0.1", port, 1)
    [again] = of(r.collect(), "connect", port)
    assert again["count"] == 1 and again["first_ts"] > cn["last_ts"]  # a new flow, counted afresh
    srv.close()
    srv2.close()


@pytest.mark.bpf
def test_new_flows_in_a_full_map_are_counted():
    b = load("-DFLOWS_MAX=4")
    try:
        r = FlowReader(b, NODE)
        for i in range(8):  # 8 destinations, room for 4 flows (fewer if others connect now)
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.connect(("127.0.0.1", 40000 + i))
            u.close()
        r.collect()
        assert r.map_full >= 4 and r.active <= 4
    finally:
        b.cleanup()


def test_flow_events_feed_the_connection_rows():
    web, db = cont("web"), cont("db")
    t = time.time_ns()

    def flow(c, direction, count, last, **kw):
        return ev("flow", container=c, pid=0, ts=last, direction=direction, family=2, proto="tcp", count=count,
                  failed=0, first_ts=t, last_ts=last, **kw)

    to_db = {"daddr": "10.88.0.3", "dport": 5432, "saddr": None, "sport": None}
    at_db = {"daddr": "10.88.0.2", "dport": None, "saddr": "10.88.0.3", "sport": 5432}
    events = [
        ev("listen", container=web, ts=t, family=2, saddr="10.88.0.2", sport=80),
        flow(web, "connect", 3, t + 10, **to_db),
        flow(web, "connect", 2, t + 20, **to_db),                    # a later delta of the same flow
        flow(db, "accept", 5, t + 21, **at_db),
        ev("connect", container=web, ts=t + 15, family=2, proto="tcp", ret=0, **to_db),  # the same, as an event
        flow(web, "connect", 7, t + 30, daddr="127.0.0.1", dport=9, saddr=None, sport=None),  # loopback: no row
        flow(web, "listen", 1, t + 31, **to_db),                     # not a flow direction
    ]
    d = derive(events)
    cw, cd = f"c:{web['id']}", f"c:{db['id']}"
    assert sorted(d.connection_rows()) == sorted([
        (cw, "ip:10.88.0.3", 5432, "tcp", "flow:connect", 5, t + 20),
        ("ip:10.88.0.2", cd, 5432, "tcp", "flow:accept", 5, t + 21),
        (cw, "ip:10.88.0.3", 5432, "tcp", "connect", 1, t + 15),
    ])
    assert d.container_ips["10.88.0.3"][0] == db["id"]
    ips = {ip: cid for ip, (cid, _) in d.container_ips.items()}
    g = build_graph(d.connection_rows(), ips, {web["id"]: "web", db["id"]: "db"})
    [edge] = g["edges"]  # one connection seen from both ends, as events and as flows: counted once
    assert (edge["source"], edge["target"], edge["count"], edge["last_seen"]) == (cw, cd, 5, t + 21)


async def test_network_graph_from_flow_events(nats_server, tmp_path):
    web, db = cont("web"), cont("db")
    t = time.time_ns()
    events = [
        ev("listen", container=web, ts=t, family=2, saddr="10.88.0.2", sport=80),
        ev("flow", container=web, pid=0, ts=t + 1, direction="connect", family=2, proto="tcp", count=4, failed=1,
           daddr="10.88.0.3", dport=5432, saddr=None, sport=None, first_ts=t, last_ts=t + 1),
        ev("flow", container=db, pid=0, ts=t + 2, direction="accept", family=2, proto="tcp", count=3, failed=0,
           daddr="10.88.0.2", dport=None, saddr="10.88.0.3", sport=5432, first_ts=t, last_ts=t + 2),
    ]
    url = f"sqlite:///{tmp_path}/store.db"
    async with running_store(nats_server.url, url, tmp_path) as svc, client_bus(nats_server.url) as (bus, c):
        await bus.publish_batch(subjects.event("n1", "flow"), events)
        await until(lambda: svc.stats.total("events_stored_total") == len(events), "all stored")
        g = await c.network_graph()
    [edge] = g["edges"]
    assert (edge["source"], edge["target"], edge["port"], edge["proto"]) == (f"c:{web['id']}", f"c:{db['id']}",
                                                                           5432, "tcp")
    assert edge["count"] == 4 and edge["last_seen"] == t + 2
    assert {n["label"] for n in g["nodes"]} == {"web", "db"}
