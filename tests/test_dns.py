"""DNS: the parser on good, truncated and hostile messages; the enricher's
pairing and per-container name map (real NATS, raw events published by the
test); and bpf/dns.bpf.c in the kernel with real UDP and TCP sockets.

Other tests may run DNS at the same time: the BPF tests use their own
loopback address (127.53.x.y, port 53) and look only at it.
"""
from __future__ import annotations

import base64
import mmap
import os
import random
import socket
import struct
import threading
import time

import pytest

from services.enricher.dns import DnsTracker
from services.enricher.dnsparse import DnsError, parse
from services.enricher.names import NameMap
from shared.schema import new_event_id
from shared.stats import Stats
from tests import dnswire
from tests.pipeline import Pipeline

# --- parser -----------------------------------------------------------------------------------

def test_query_and_answer_parse():
    q = dnswire.query("Www.Example.COM", qtype=28, txid=0xBEEF)
    m = parse(q)
    assert (m.txid, m.response, m.qname, m.qtype, m.answers) == (0xBEEF, False, "www.example.com", "AAAA", [])
    a = parse(dnswire.answer(dnswire.query("cdn.example.com"), ["93.184.216.34", "2001:db8::7"],
                             cname="edge.cdn.example.net", ttl=42))
    assert a.response and a.rcode == "NOERROR" and a.qname == "cdn.example.com"
    assert [(r.name, r.type, r.ttl, r.data) for r in a.answers] == [
        ("cdn.example.com", "CNAME", 42, "edge.cdn.example.net"),
        ("edge.cdn.example.net", "A", 42, "93.184.216.34"),
        ("edge.cdn.example.net", "AAAA", 42, "2001:db8::7")]
    nx = parse(dnswire.answer(dnswire.query("nope.example"), [], rcode=3))
    assert nx.rcode == "NXDOMAIN" and nx.answers == []


def test_tcp_prefix_and_truncated_copies():
    a = dnswire.answer(dnswire.query("x.example"), ["10.0.0.1", "10.0.0.2"])
    assert [r.data for r in parse(struct.pack(">H", len(a)) + a, tcp=True).answers] == ["10.0.0.1", "10.0.0.2"]
    cut = a[:-3]  # the probe copied less than was sent
    with pytest.raises(DnsError, match="short_record"):
        parse(cut)
    m = parse(cut, complete=False)
    assert m.incomplete and [r.data for r in m.answers] == ["10.0.0.1"]


@pytest.mark.parametrize("raw,reason", [
    (b"\x12", "short_header"),
    (struct.pack(">HHHHHH", 1, 0x0100, 2, 0, 0, 0), "question_count"),
    (struct.pack(">HHHHHH", 1, 0x2800, 1, 0, 0, 0) + b"\0\0\1\0\1", "not_a_query_opcode"),
    (struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c\0\1\0\1", "bad_compression_pointer"),  # self loop
    (struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\xc0\x40\0\1\0\1", "bad_compression_pointer"),  # forward
    (struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x3fabc", "name_out_of_bounds"),
    (struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x80abc\0\0\1\0\1", "bad_label_type"),
    (struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0) + (b"\x3f" + b"a" * 63) * 5 + b"\0\0\1\0\1", "name_too_long"),
])
def test_malformed_messages_say_why(raw, reason):
    with pytest.raises(DnsError, match=reason):
        parse(raw)


def test_random_damage_never_raises_anything_else():
    rnd = random.Random(1313)
    good = [dnswire.answer(dnswire.query(f"h{i}.example.org"), ["10.1.2.3"], cname="c.example.net")
            for i in range(4)] + [dnswire.query("plain.example")]
    for i in range(20000):
        buf = bytearray(rnd.choice(good))
        for _ in range(rnd.randint(1, 6)):
            op = rnd.random()
            if op < 0.5 and buf:
                buf[rnd.randrange(len(buf))] = rnd.randrange(256)
            elif op < 0.75:
                del buf[rnd.randrange(len(buf) + 1):]
            else:
                buf[rnd.randrange(len(buf) + 1):0] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 8)))
        try:
            parse(bytes(buf), tcp=i % 7 == 0, complete=i % 2 == 0)
        except DnsError:
            pass


# --- name map and pairing -------------------------------------------------------------------------

def test_name_map_honours_ttl_floor_and_bounds():
    m = NameMap(max_scopes=2, max_names=3, min_ttl_s=10, max_ttl_s=100)
    s = 1_000_000_000
    m.learn("c1", "10.0.0.1", "a.example", 0, 0)           # TTL 0: kept for the 10 s floor
    assert m.lookup("c1", "10.0.0.1", 9 * s) == "a.example"
    assert m.lookup("c1", "10.0.0.1", 11 * s) is None
    m.learn("c1", "10.0.0.1", "a.example", 10_000, 0)      # capped at 100 s
    assert m.lookup("c1", "10.0.0.1", 99 * s) == "a.example" and m.lookup("c1", "10.0.0.1", 101 * s) is None
    assert m.lookup("c2", "10.0.0.1", 0) is None            # per container
    for i in range(5):
        m.learn("c1", f"10.0.1.{i}", f"n{i}.example", 60, 0)
    assert len(m.scope_names("c1", 0)) == 3 and m.evictions >= 2
    m.learn("c2", "10.9.9.9", "x", 60, 0)
    m.learn("c3", "10.9.9.9", "y", 60, 0)                   # third container: the least recent goes
    assert m.lookup("c1", "10.0.1.4", 0) is None and m.lookup("c3", "10.9.9.9", 0) == "y"


def raw_dns(direction: str, payload: bytes, *, ts: int, pid: int = 0, cgroup_id: int = 1, sport: int = 40000,
            server: str = "10.0.0.2", proto: str = "udp", node: str = "n1", truncated: bool = False) -> dict:
    return {"id": new_event_id(node), "ts": ts, "node": node, "kind": "dns", "pid": pid, "tid": pid, "ppid": None,
            "uid": 0, "gid": 0, "comm": "resolver" if pid else "", "cgroup_id": cgroup_id, "direction": direction,
            "family": 2, "proto": proto, "saddr": "10.0.0.5", "sport": sport, "daddr": server, "dport": 53,
            "len": len(payload), "truncated": truncated, "payload": base64.b64encode(payload).decode()}


def test_tracker_pairs_answers_with_queries_and_counts_malformed():
    stats, names = Stats("t"), NameMap()
    t = DnsTracker(stats, names)
    q = dnswire.query("api.example.com", txid=77)
    ev_q = raw_dns("query", q, ts=1_000, pid=4242)
    t.on_event(ev_q, "c1")
    assert "payload" not in ev_q and ev_q["qname"] == "api.example.com" and ev_q["qtype"] == "A"
    ev_a = raw_dns("answer", dnswire.answer(q, ["203.0.113.9"], ttl=30), ts=5_000)
    t.on_event(ev_a, "c1")
    assert (ev_a["pid"], ev_a["comm"], ev_a["latency_ns"], ev_a["rcode"], ev_a["answers"], ev_a["ttl"]) == \
        (4242, "resolver", 4_000, "NOERROR", ["203.0.113.9"], 30)
    assert names.lookup("c1", "203.0.113.9", 5_000) == "api.example.com"
    # another port, another transaction: not paired
    other = raw_dns("answer", dnswire.answer(dnswire.query("x.example", txid=78), ["203.0.113.10"]), ts=6_000,
                    sport=40001)
    t.on_event(other, "c1")
    assert other["latency_ns"] is None and other["pid"] == 0
    assert stats.total("enricher_dns_unpaired_answers_total") == 1
    bad = raw_dns("query", b"\x00\x01garbage", ts=7_000, pid=1)
    t.on_event(bad, "c1")
    assert bad["malformed"] == "short_header" and bad["qname"] is None
    notb64 = raw_dns("query", b"", ts=7_000, pid=1)
    notb64["payload"] = "***"
    t.on_event(notb64, "c1")
    assert notb64["malformed"] == "short_header"
    assert stats.total("enricher_dns_malformed_total") == 2


async def test_enricher_names_connects_and_flows_of_the_container_that_resolved(nats_server):
    """Real NATS and the real enricher: a DNS answer, then a connect and a kernel flow to the address."""
    async with Pipeline(nats_server.url, probe=False) as p:
        now = time.time_ns()
        q = dnswire.query("db.internal.example", txid=9)
        conn = {"id": new_event_id(p.node), "ts": now + 2, "node": p.node, "kind": "connect", "pid": os.getpid(),
                "tid": os.getpid(), "ppid": None, "uid": 0, "gid": 0, "comm": "app", "cgroup_id": 1, "family": 2,
                "daddr": "198.51.100.20", "dport": 5432, "saddr": None, "sport": None, "proto": "tcp", "ret": 0,
                "fd": 3}
        flow = {**conn, "id": new_event_id(p.node), "kind": "flow", "pid": 0, "direction": "connect", "count": 1,
                "failed": 0, "first_ts": now, "last_ts": now + 3}
        other = {**conn, "id": new_event_id(p.node), "daddr": "198.51.100.21"}
        await p.publish_raw([
            raw_dns("query", q, ts=now, pid=os.getpid(), node=p.node),
            raw_dns("answer", dnswire.answer(q, ["198.51.100.20"], ttl=5), ts=now + 1, node=p.node),
            conn, flow, other,
            raw_dns("query", b"\xff" * 5, ts=now + 4, pid=os.getpid(), node=p.node)])
        ans = await p.wait_for(lambda e: e["kind"] == "dns" and e["direction"] == "answer" and e["txid"] == 9, timeout=60)
        assert ans["answers"] == ["198.51.100.20"] and ans["pid"] == os.getpid() and ans["latency_ns"] == 1
        assert ans["proc"]["exe"]  # the query's process, although the answer came without one
        got = await p.wait_for(lambda e: e["kind"] == "connect" and e["daddr"] == "198.51.100.20", timeout=30)
        assert got["dname"] == "db.internal.example"
        fl = await p.wait_for(lambda e: e["kind"] == "flow" and e["daddr"] == "198.51.100.20", timeout=30)
        assert fl["dname"] == "db.internal.example"
        assert (await p.wait_for(lambda e: e["kind"] == "connect" and e["daddr"] == "198.51.100.21", timeout=30))["dname"] is None
        bad = await p.wait_for(lambda e: e["kind"] == "dns" and e.get("malformed"), timeout=30)
        assert bad["malformed"] == "short_header"
        assert p.enricher.stats.get("enricher_dns_malformed_total", reason="short_header") == 1


# --- in the kernel ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def probe_bpf():
    if os.geteuid() != 0:
        pytest.skip("loads BPF programs: needs root")
    from services.probe import loader
    from services.probe.decode import KIND_NUMBERS
    from services.probe.dns_attach import DnsAttachment
    from services.probe.ringbuf import RingReader
    plan = loader.plan_sources(loader.BPF_DIR)
    b = loader.compile_and_attach(plan, 64, 1, loader.BPF_DIR)
    att = DnsAttachment(b).attach()
    assert att.error is None, att.error
    ring = RingReader(b[b"events"].map_fd, 64 * mmap.PAGESIZE)
    yield b, ring, KIND_NUMBERS["dns"]
    att.close()
    ring.close()
    b.cleanup()


def switch(b, kind: int, on: bool) -> None:
    t = b[b"kind_on"]
    t[t.Key(kind)] = t.Leaf(1 if on else 0)


def drain_dns(ring, addr: str, want: int, timeout: float = 20.0) -> list[dict]:
    from services.probe.decode import Decoder
    dec, out, end = Decoder("t"), [], time.monotonic() + timeout
    while time.monotonic() < end and len(out) < want:
        for rec in ring.drain():
            ev = dec.decode(rec)
            if ev["kind"] == "dns" and ev["daddr"] == addr:
                out.append(ev)
        time.sleep(0.05)
    return out


def test_udp_and_tcp_dns_are_captured_with_the_process_and_cgroup(probe_bpf):
    b, ring, kind = probe_bpf
    addr = f"127.53.{random.randint(1, 254)}.{random.randint(1, 254)}"
    switch(b, kind, True)
    ring.drain()
    with dnswire.Responder(addr, {"svc.example": "192.0.2.44"}):
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.settimeout(10)
        c.sendto(dnswire.query("svc.example", txid=0x5151), (addr, 53))
        reply = c.recv(4096)
        c.close()
    assert parse(reply).answers[0].data == "192.0.2.44"
    # TCP: a length-prefixed query and answer on a stream (the responder side is a thread of ours)
    srv = socket.socket()
    srv.bind((addr, 53))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        n = struct.unpack(">H", conn.recv(2))[0]
        q = conn.recv(n)
        a = dnswire.answer(q, ["192.0.2.45"])
        conn.sendall(struct.pack(">H", len(a)) + a)
        conn.close()
    th = threading.Thread(target=serve)
    th.start()
    t = socket.create_connection((addr, 53), timeout=10)
    q = dnswire.query("tcp.example", txid=0x5252)
    t.sendall(struct.pack(">H", len(q)) + q)
    got = b""
    while len(got) < 2 or len(got) < 2 + struct.unpack(">H", got[:2])[0]:
        chunk = t.recv(4096)
        if not chunk:
            break
        got += chunk
    t.close()
    th.join(10)
    srv.close()
    evs = drain_dns(ring, addr, 4)
    by = {(e["proto"], e["direction"]): e for e in evs}
    assert set(by) == {("udp", "query"), ("udp", "answer"), ("tcp", "query"), ("tcp", "answer")}, evs
    uq, ua = by[("udp", "query")], by[("udp", "answer")]
    assert uq["pid"] == os.getpid() and uq["dport"] == 53 and uq["saddr"] == "127.0.0.1"
    assert ua["pid"] == 0 and ua["sport"] == uq["sport"]  # answers come without a process: paired later
    assert uq["cgroup_id"] == ua["cgroup_id"] == own_cgroup_id()
    assert parse(base64.b64decode(uq["payload"])).qname == "svc.example"
    assert [r.data for r in parse(base64.b64decode(ua["payload"])).answers] == ["192.0.2.44"]
    ta = by[("tcp", "answer")]
    assert [r.data for r in parse(base64.b64decode(ta["payload"]), tcp=True).answers] == ["192.0.2.45"]
    assert not any(e["truncated"] for e in evs)


def test_switched_off_dns_is_counted_not_sent(probe_bpf):
    b, ring, kind = probe_bpf
    addr = f"127.54.{random.randint(1, 254)}.{random.randint(1, 254)}"
    switch(b, kind, False)
    before = sum(b[b"filtered"][b[b"filtered"].Key(kind)])
    try:
        with dnswire.Responder(addr, {"off.example": "192.0.2.1"}):
            c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            c.settimeout(10)
            c.sendto(dnswire.query("off.example"), (addr, 53))
            c.recv(4096)
            c.close()
        assert drain_dns(ring, addr, 1, timeout=1.0) == []
        assert sum(b[b"filtered"][b[b"filtered"].Key(kind)]) >= before + 2
    finally:
        switch(b, kind, True)


def test_long_messages_are_cut_at_512_bytes_and_marked(probe_bpf):
    b, ring, kind = probe_bpf
    addr = f"127.55.{random.randint(1, 254)}.{random.randint(1, 254)}"
    switch(b, kind, True)
    ring.drain()
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind((addr, 53))
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    q = dnswire.query("big.example", txid=3)
    c.sendto(q, (addr, 53))
    _, peer = srv.recvfrom(4096)
    big = dnswire.answer(q, [f"10.0.{i // 250}.{i % 250}" for i in range(60)])  # 60 A records: > 512 bytes
    assert len(big) > 512
    srv.sendto(big, peer)
    c.recv(4096)
    c.close()
    srv.close()
    evs = drain_dns(ring, addr, 2)
    ans = next(e for e in evs if e["direction"] == "answer")
    raw = base64.b64decode(ans["payload"])
    assert ans["truncated"] and ans["len"] == len(big) and len(raw) == 512 and raw == big[:512]
    m = parse(raw, complete=False)
    assert m.incomplete and 0 < len(m.answers) < 60


def own_cgroup_id() -> int:
    path = next(line[3:] for line in open("/proc/self/cgroup").read().splitlines() if line.startswith("0::"))
    root = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"
    return os.stat(root + path).st_ino
