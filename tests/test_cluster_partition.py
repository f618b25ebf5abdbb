"""Partitioned stateful rules: NATS subject mapping puts every event of one
container on one partition, and each alerter replica owns some partitions.

Real parts: nats-server with the mapping (shared/partition.py), the real
enricher on a real podman container, two real alerter replicas."""
from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import orjson
import pytest

from services.alerter.config import AlerterConfig
from services.alerter.service import AlerterService
from services.enricher.config import EnricherConfig
from services.enricher.service import EnricherService
from shared import bus as busmod
from shared import partition, subjects
from shared.cgroupfs import cgroup2_root
from shared.config import CommonConfig
from shared.stats import Stats
from tests import containers, events
from tests.cluster import ServiceProcess, until, wait_heartbeat

NODE = "pn1"
O_CREAT = 0o100
DROP_RULE = """
- rule: Drop and execute
  desc: a file created in the container is then executed (a sequence over two events)
  condition: evt.type = exec and proc.is_exe_upper_layer = true
  output: dropped binary %proc.exe executed in %container.id
  priority: CRITICAL
"""


def cgroup_inode(pid: int) -> int:
    path = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    v2 = next(line.split("::", 1)[1] for line in path if line.startswith("0::"))
    return os.stat(f"{cgroup2_root()}{v2}").st_ino


def raw_open(pid: int, cgid: int, path: str) -> dict:
    return events.raw_event("open", node=NODE, pid=pid, ppid=0, comm="sleep", cgroup_id=cgid, path=path,
                            flags=0, mode=0, ret=3)


@pytest.mark.podman
async def test_enricher_publishes_each_container_on_its_partition(nats_server, bb_image, podman_socket, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setenv("EUNOMIA_PARTITIONS", str(partition.DEFAULT_PARTITIONS))
    name = f"g2-part-{uuid.uuid4().hex[:8]}"
    containers.run(["sleep", "120"], name=name, detach=True)
    try:
        cid = containers.inspect_id(name)
        cpid = int(containers.subprocess.run(["podman", "inspect", "-f", "{{.State.Pid}}", name],
                                             capture_output=True, text=True, check=True).stdout)
        common = CommonConfig(nats_url=nats_server.url, node=NODE, data_dir=tmp_path, stats_interval=0.5)
        got: dict[str, list[dict]] = {}

        async def on(subject, events):
            got.setdefault(subject, []).extend(events)

        async with busmod.connect(nats_server.url, Stats("t")) as bus:
            await bus.subscribe_batches(f"{partition.PEVENT}.>", on)
            await bus.subscribe_batches(subjects.event(NODE, "open"), on)
            await bus.nc.flush()
            svc = EnricherService(EnricherConfig(runtime_sockets=(podman_socket,), seed_from_proc=False), common)
            async with svc:
                stop = asyncio.Event()
                task = asyncio.create_task(svc.run(stop))
                await bus.publish_batch(subjects.raw(NODE), [
                    raw_open(cpid, cgroup_inode(cpid), "/etc/in-container"),
                    raw_open(os.getpid(), cgroup_inode(os.getpid()), "/etc/on-host")])
                await until(lambda: sum(map(len, got.values())) >= 4, 15, "enriched events")
                stop.set()
                await task
    finally:
        containers.remove(name)

    in_ctr = f"{partition.PEVENT}.{partition.partition_of(cid, NODE)}.{cid}.{NODE}.open"
    on_host = f"{partition.PEVENT}.{partition.partition_of('host', NODE)}.host.{NODE}.open"
    assert [e["path"] for e in got.get(in_ctr, [])] == ["/etc/in-container"], got.keys()
    assert got[in_ctr][0]["container"]["id"] == cid
    assert [e["path"] for e in got.get(on_host, [])] == ["/etc/on-host"], got.keys()
    # the plain event subject (stream, store, queue-group alerters) still carries both
    assert sorted(e["path"] for e in got[subjects.event(NODE, "open")]) == ["/etc/in-container", "/etc/on-host"]


def container_ids_on_replicas(replicas: int) -> list[str]:
    """One container id per replica (the same hash nats-server uses)."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < replicas:
        cid = f"{i:064x}"
        found.setdefault(partition.replica_of(cid, NODE, replicas), cid)
        i += 1
    return [found[r] for r in range(replicas)]


def enriched(kind: str, cid: str, **kw) -> dict:
    return events.enriched_event(kind, ctr=events.container(f"c-{cid[-4:]}", cid, image="bb", labels={}), node=NODE,
                                 pid=77, cgroup_id=5, **kw)


async def test_stateful_rule_sees_every_event_of_its_container_at_one_replica(nats_server, tmp_path):
    rules = tmp_path / "drop.yaml"
    rules.write_text(DROP_RULE)
    a, b = container_ids_on_replicas(2)
    seqs = 15
    alerts: list[dict] = []

    async def on_alert(subject, batch):
        alerts.extend(batch)

    def alerter(i: int) -> AlerterService:
        cfg = AlerterConfig(rules=(rules,), replica=i, replicas=2, throttle_window_s=0, reload_check_s=0)
        return AlerterService(cfg, CommonConfig(nats_url=nats_server.url, node=f"r{i}", data_dir=tmp_path))

    async with busmod.connect(nats_server.url, Stats("t")) as bus:
        await bus.subscribe_batches(subjects.ALERT_ALL, on_alert)
        r0, r1 = alerter(0), alerter(1)
        async with r0, r1:
            # each half of a sequence in its own message, both containers interleaved
            for n in range(seqs):
                for cid in (a, b):
                    drop = enriched("open", cid, path=f"/tmp/drop{n}", flags=O_CREAT | 1, mode=0o755, ret=3)
                    await bus.publish_batch(partition.publish_subject(drop, NODE, "open"), [drop])
            for n in range(seqs):
                for cid in (a, b):
                    run = enriched("exec", cid, filename=f"/tmp/drop{n}", argv=[f"/tmp/drop{n}"], ret=0)
                    run["proc"] = dict(run["proc"], exe=f"/tmp/drop{n}", name=f"drop{n}")
                    await bus.publish_batch(partition.publish_subject(run, NODE, "exec"), [run])
            await until(lambda: len(alerts) >= 2 * seqs, 15, f"{2 * seqs} alerts")
            await asyncio.sleep(0.3)  # nothing more may arrive (no duplicates)
            evaluated = [r0.stats.total("events_evaluated_total"), r1.stats.total("events_evaluated_total")]

    by_replica = {"r0": set(), "r1": set()}
    for al in alerts:
        by_replica[al["id"].split("-")[0]].add(al["container"]["id"])
    assert len(alerts) == 2 * seqs, "every drop-then-exec sequence alerts exactly once"
    assert by_replica == {"r0": {a}, "r1": {b}}, "each container is evaluated by exactly one replica"
    assert evaluated == [2 * seqs, 2 * seqs], "each replica saw all and only its container's events"
    assert {(al["container"]["id"], al["event"]["proc"]["exe"]) for al in alerts} == \
        {(c, f"/tmp/drop{n}") for c in (a, b) for n in range(seqs)}


async def test_eunomia_alerter_cli_takes_its_replica_from_the_deploy_env(nats_server, tmp_path):
    """The deploy/ contract: `eunomia alerter` with EUNOMIA_ALERTER_REPLICA/_REPLICAS set
    (a StatefulSet pod index) consumes only its partitions."""
    rules = tmp_path / "drop.yaml"
    rules.write_text(DROP_RULE)
    a, b = container_ids_on_replicas(2)
    reps = [ServiceProcess("alerter", nats_server.url, f"ca{i}", tmp_path, cli=["--rules", str(rules)],
                           env={"EUNOMIA_ALERTER_REPLICA": str(i), "EUNOMIA_ALERTER_REPLICAS": "2",
                                "EUNOMIA_PARTITIONS": str(partition.DEFAULT_PARTITIONS)}) for i in range(2)]
    alerts: list[dict] = []

    async def on_alert(subject, batch):
        alerts.extend(batch)

    async with busmod.connect(nats_server.url, Stats("t")) as bus:
        await bus.subscribe_batches(subjects.ALERT_ALL, on_alert)
        try:
            for r in reps:
                r.start()
            for r in reps:
                await wait_heartbeat(bus.nc, r)
            for cid in (a, b):
                drop = enriched("open", cid, path="/tmp/dropped", flags=O_CREAT | 1, mode=0o755, ret=3)
                await bus.publish_batch(partition.publish_subject(drop, NODE, "open"), [drop])
            for cid in (a, b):
                run = enriched("exec", cid, filename="/tmp/dropped", argv=["/tmp/dropped"], ret=0)
                run["proc"] = dict(run["proc"], exe="/tmp/dropped", name="dropped")
                await bus.publish_batch(partition.publish_subject(run, NODE, "exec"), [run])
            await until(lambda: len(alerts) >= 2, 15, "two alerts")
            await asyncio.sleep(0.3)
        finally:
            for r in reps:
                r.stop()
    assert sorted((al["id"].split("-")[0], al["container"]["id"]) for al in alerts) == [("ca0", a), ("ca1", b)]


def test_replica_assignment_is_a_partition_of_the_partitions():
    for replicas in (1, 2, 3, 4, 6, 12):
        owned = [set(partition.owned_partitions(i, replicas)) for i in range(replicas)]
        assert set().union(*owned) == set(range(partition.DEFAULT_PARTITIONS))
        assert sum(map(len, owned)) == partition.DEFAULT_PARTITIONS
    with pytest.raises(partition.ConfigError, match="replica: 2 not in"):
        AlerterConfig(replica=2, replicas=2)
    assert orjson.loads(orjson.dumps(partition.mapping(3)))  # plain JSON-able for other configs
