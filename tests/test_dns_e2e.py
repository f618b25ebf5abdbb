"""DNS end to end, for real: a podman container resolves a mining pool's name
from a DNS responder on the container's own loopback, then connects to the
answer. Real probe (BPF), enricher, alerter with the default rules and store
(SQLite), over a real nats-server.

The responder is tests/dnswire.py run by the host's python3 inside the
container's network namespace (`nsenter -n`: the busybox image has no DNS
server); the answered address 203.0.113.7 (TEST-NET-3) is added to the
container's loopback, so no packet leaves the container's namespace.
"""
from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from services.alerter.config import AlerterConfig
from services.alerter.service import AlerterService
from services.store.client import StoreClient
from services.store.config import StoreConfig
from services.store.service import StoreService
from tests import containers
from tests.cluster import until
from tests.pipeline import Pipeline, new_node

pytestmark = [pytest.mark.bpf, pytest.mark.podman]
POOL, ADDR, PORT = "xmr-eu1.nanopool.org", "203.0.113.7", 3333
ROOT = Path(__file__).resolve().parent.parent


def nsenter(pid: int, *argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", "-t", str(pid), "-n", *argv], capture_output=True, text=True, timeout=30,
                          check=True, **kw)


@pytest.mark.timeout(240)
async def test_container_dns_names_its_connection_graph_edge_and_raises_the_pool_alert(
        nats_server, bb_image, podman_socket, tmp_path):
    name = f"dns-e2e-{uuid.uuid4().hex[:8]}"
    node = new_node()
    common = replace(Pipeline.common_for(nats_server.url, node), data_dir=tmp_path)
    alerter = AlerterService(AlerterConfig(), common)
    store = StoreService(StoreConfig(fetch_timeout_s=0.1, lag_interval_s=0.5), common)
    responder = None
    async with Pipeline(nats_server.url, node=node, extra=[alerter, store]) as p:
        await p.collect("eunomia.alert.>", n=0)
        try:
            await asyncio.to_thread(containers.run, [
                "sh", "-c", f"while [ ! -e /tmp/go ]; do sleep 0.1; done; nslookup {POOL} 127.0.0.1; "
                            f"nc {ADDR} {PORT} </dev/null; sleep 600"], name=name, detach=True)
            cid = await asyncio.to_thread(containers.inspect_id, name)
            pid = int((await asyncio.to_thread(subprocess.run, [*containers.PODMAN, "inspect", "-f",
                                                                "{{.State.Pid}}", name],
                                               capture_output=True, text=True, check=True)).stdout)
            await asyncio.to_thread(nsenter, pid, "ip", "addr", "add", f"{ADDR}/32", "dev", "lo")
            responder = subprocess.Popen(
                ["nsenter", "-t", str(pid), "-n", sys.executable, str(ROOT / "tests/dnswire.py"), "127.0.0.1",
                 f"{POOL}={ADDR}", "--tcp-listen", f"{ADDR}:{PORT}"], stdout=subprocess.PIPE, text=True)
            assert (await asyncio.to_thread(responder.stdout.readline)).strip() == "ready"
            await asyncio.to_thread(subprocess.run, [*containers.PODMAN, "exec", name, "touch", "/tmp/go"],
                                    capture_output=True, timeout=60)

            mine = lambda e: (e.get("container") or {}).get("id") == cid  # noqa: E731
            q = await p.wait_for(lambda e: mine(e) and e["kind"] == "dns" and e["direction"] == "query"
                                 and e["qname"] == POOL and e["qtype"] == "A", timeout=60)
            assert q["daddr"] == "127.0.0.1" and q["dport"] == 53 and q["proto"] == "udp"
            assert q["proc"]["name"] == "nslookup" or q["comm"] == "nslookup", q["proc"]
            configured = "127.0.0.1" in (await asyncio.to_thread(
                subprocess.run, [*containers.PODMAN, "exec", name, "cat", "/etc/resolv.conf"],
                capture_output=True, text=True)).stdout
            assert q["resolver_configured"] is configured
            a = await p.wait_for(lambda e: mine(e) and e["kind"] == "dns" and e["direction"] == "answer"
                                 and e["qname"] == POOL and e["qtype"] == "A", timeout=30)
            assert a["answers"] == [ADDR] and a["rcode"] == "NOERROR" and a["ttl"] == 600
            assert a["pid"] == q["pid"] and a["latency_ns"] is not None and a["latency_ns"] >= 0
            assert a["container"]["name"] == name

            conn = await p.wait_for(lambda e: mine(e) and e["kind"] == "connect" and e["daddr"] == ADDR, timeout=30)
            assert conn["dname"] == POOL and conn["dport"] == PORT
            flow = await p.wait_for(lambda e: mine(e) and e["kind"] == "flow" and e["daddr"] == ADDR, timeout=30)
            assert flow["dname"] == POOL

            alerts = []  # one of each (the A and AAAA lookups may both alert)
            for rule in ("DNS lookup of a mining pool domain", "Connection to a mining pool domain"):
                alerts += await p.collect("eunomia.alert.>", lambda al, rule=rule: (al.get("container") or {}).get(
                    "id") == cid and al["rule"] == rule, n=1, timeout=30)
            assert POOL in next(al for al in alerts if al["rule"].startswith("DNS"))["output"]
            if not configured:
                await p.collect("eunomia.alert.>", lambda al: (al.get("container") or {}).get("id") == cid
                                and al["rule"] == "DNS query to an unexpected resolver", n=1, timeout=30)

            # the store's network graph: the container's edge to the pool, named
            client = StoreClient(p.bus, timeout=10)
            edge: dict = {}

            async def named_edge() -> bool:
                g = await client.network_graph()
                for e in g["edges"]:
                    if e["source"] == f"c:{cid}" and e["target"] == f"ip:{ADDR}" and e["port"] == PORT:
                        edge.update(e, nodes={n["id"]: n for n in g["nodes"]})
                        return e.get("name") == POOL
                return False
            await until(named_edge, 60, "a named graph edge from the container to the pool")
            assert edge["proto"] == "tcp" and edge["count"] >= 1
            assert edge["nodes"][f"ip:{ADDR}"]["names"] == [POOL]
            assert edge["nodes"][f"c:{cid}"]["label"] == name and edge["nodes"][f"c:{cid}"]["node"] == node
            stored = await client.events(kind="dns", container=name)
            assert any(e.get("qname") == POOL for e in stored["items"]), stored
        finally:
            if responder is not None:
                responder.terminate()
                responder.wait(10)
            await asyncio.to_thread(containers.remove, name)


async def test_events_cli_follows_dns(nats_server):
    """`eunomia events --follow --kind dns` (a real subprocess) shows a host process's query and answer."""
    import os
    import random
    import threading

    from tests import dnswire
    from tests.conftest import ROOT as REPO

    addr = f"127.56.{random.randint(1, 254)}.{random.randint(1, 254)}"
    async with Pipeline(nats_server.url) as p:
        cli = subprocess.Popen([sys.executable, "-m", "services.cli.main", "--nats", nats_server.url, "events",
                                "--follow", "--kind", "dns", "--container", "host"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            assert "listening on" in await asyncio.wait_for(asyncio.to_thread(cli.stderr.readline), 30)

            def ask() -> None:  # the client is a child process: the probe excludes this one (it runs in it)
                q = dnswire.query("cli.example").hex()
                with dnswire.Responder(addr, {"cli.example": "192.0.2.7"}):
                    subprocess.run([sys.executable, "-c", "import socket, sys; c = socket.socket(2, 2); "
                                    "c.settimeout(10); c.sendto(bytes.fromhex(sys.argv[1]), (sys.argv[2], 53)); "
                                    "c.recv(4096)", q, addr], check=True, timeout=30)
            # one reader thread: a readline awaited in `until` would block past its deadline
            lines: asyncio.Queue[str] = asyncio.Queue()
            loop = asyncio.get_running_loop()
            threading.Thread(target=lambda: [loop.call_soon_threadsafe(lines.put_nowait, ln)
                                             for ln in iter(cli.stdout.readline, "")], daemon=True).start()
            await asyncio.to_thread(ask)
            seen: list[str] = []

            async def both() -> bool:
                try:
                    line = await asyncio.wait_for(lines.get(), 1)
                except asyncio.TimeoutError:
                    return False
                if addr in line:
                    seen.append(line)
                return any("qname=cli.example" in x and "direction=query" in x for x in seen) and \
                    any("answers=192.0.2.7" in x and "rcode=NOERROR" in x for x in seen)
            try:
                await until(both, 60, "the query and the answer in `eunomia events --kind dns`")
            except AssertionError:
                raise AssertionError(f"seen: {seen}") from None
        finally:
            cli.kill()
            cli.wait()
        assert all(" dns " in x and " host " in x for x in seen), seen
        assert p.node
