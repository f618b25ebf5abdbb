"""Fault tests on loopback with real services on a real nats-server.

- Garbage on every subject a service reads (raw.*, event.*, alert.*, ctl.*,
  store.*, stats.*): each service logs it, counts it in the heartbeat it
  publishes on eunomia.stats.<service>.<node>, and goes on with good input.
- SIGKILL an alerter replica while events flow: the other replica keeps
  alerting, no event is alerted twice, the restarted replica rejoins.
- SIGKILL the enricher while raw events flow: a restarted enricher carries on.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os

import orjson
import pytest

from services.alerter.config import AlerterConfig
from services.alerter.service import AlerterService
from services.api.config import ApiConfig
from services.api.service import ApiService
from services.enricher.config import EnricherConfig
from services.enricher.service import EnricherService
from services.store.config import StoreConfig
from services.store.service import StoreService
from shared import bus as busmod
from shared import partition, subjects
from shared.config import CommonConfig
from shared.schema import new_event_id
from shared.stats import Stats
from tests.cluster import ServiceProcess, until, wait_heartbeat

MAX_PAYLOAD = 1024 * 1024   # nats-server default max_payload
NO_SOCKET = ("/nonexistent/eunomia-test.sock",)


def garbage() -> dict[str, bytes]:
    """Messages no service may choke on. Each is refused as a whole message."""
    return {
        "not JSON": b"this is not json {",
        "object, not array": b'{"id": "x", "ts": 1}',
        "wrong types": orjson.dumps([{"id": 5, "ts": "yesterday", "node": None, "kind": 7, "pid": "x"}]),
        "array of junk": b'[1, "a", null, [], {}]',
        "deep nesting": b"[" * 100_000 + b"]" * 100_000,
        "binary": bytes(range(256)) * 64,
        "empty": b"",
        "near max_payload": b'["' + b"x" * (MAX_PAYLOAD - 4096) + b'"]',
        "huge number": b'[{"id": "a", "ts": 1' + b"0" * 5000 + b', "node": "n", "kind": "open", "pid": 1}]',
    }


def schema_valid_but_wrong(node: str) -> list[dict]:
    """Passes the bus check (head fields) but not each service's own checks."""
    return [{"id": "bad-" + "z" * 300, "ts": -5, "node": node, "kind": "open.*>", "pid": -1, "proc": "str",
             "container": 5, "k8s": [], "path": {"x": 1}, "cgroup_id": "abc"}]


def good_raw(node: str, path: str) -> dict:
    return {"id": new_event_id(node), "ts": 1_764_000_000_000_000_000, "node": node, "kind": "open",
            "pid": os.getpid(), "tid": os.getpid(), "ppid": os.getppid(), "uid": 0, "gid": 0, "comm": "pytest",
            "cgroup_id": None, "path": path, "flags": 0, "mode": 0, "ret": 3}


GOOD_RULE = """
- rule: Good file opened
  desc: the marker file of the fault test
  condition: evt.type = open and fd.name startswith /etc/eunomia-fault-good
  output: opened %fd.name
  priority: WARNING
"""

EXEC_RULE = """
- rule: Any exec
  desc: one alert per exec event (stateless)
  condition: evt.type = exec
  output: exec %proc.exe pid %proc.pid
  priority: NOTICE
"""


def counter(snap: dict, name: str, **labels) -> float:
    """A counter's value in a heartbeat snapshot (sum over series matching `labels`)."""
    want = {k: str(v) for k, v in labels.items()}
    return sum(v for lab, v in snap.get("counters", {}).get(name, []) if want.items() <= lab.items())


async def test_garbage_on_every_subject_is_logged_counted_and_survived(nats_server, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="eunomia")
    node = "fm1"
    rules = tmp_path / "good.yaml"
    rules.write_text(GOOD_RULE)
    common = CommonConfig(nats_url=nats_server.url, node=node, data_dir=tmp_path, stats_interval=0.2)
    bad = garbage()
    heartbeats: dict[str, dict] = {}
    alerts: list[dict] = []

    async def on_stats(msg):
        try:
            snap = orjson.loads(msg.data)
            if isinstance(snap, dict) and snap.get("node") in (node, "fm2") and isinstance(snap.get("counters"), dict):
                heartbeats[msg.subject] = snap
        except orjson.JSONDecodeError:
            pass

    async def on_alerts(subject, batch):
        alerts.extend(batch)

    store = StoreService(StoreConfig(url=f"sqlite:///{tmp_path / 'store.db'}", ack_wait_s=1.0), common)
    enricher = EnricherService(EnricherConfig(runtime_sockets=NO_SOCKET, seed_from_proc=False), common)
    alerter = AlerterService(AlerterConfig(rules=(rules,), throttle_window_s=0, reload_check_s=0), common)
    # a partitioned replica (owns every partition) reads eunomia.pevent.<p>.>
    palerter = AlerterService(AlerterConfig(rules=(rules,), replica=0, replicas=1, reload_check_s=0),
                              dataclasses.replace(common, node="fm2"))
    api = ApiService(ApiConfig(port=0), common)
    services = [store, enricher, alerter, palerter, api]
    stop = asyncio.Event()
    async with busmod.connect(nats_server.url, Stats("fault-test")) as bus:
        await bus.nc.subscribe(subjects.STATS_ALL, cb=on_stats)
        await bus.subscribe_batches(subjects.ALERT_ALL, on_alerts)
        async with store, enricher, alerter, palerter, api:
            tasks = [asyncio.create_task(s.run(stop), name=s.name) for s in services]
            try:
                # 1. garbage on every subject family the services read
                families = {
                    "raw": subjects.raw(node),                 # enricher
                    "event": subjects.event(node, "open"),             # alerter, store (EVENTS stream)
                    "alert": subjects.alert("critical"),               # store (ALERTS stream), api live
                    "stats": subjects.stats("garbage", node),          # api metrics, probe exclusion
                    "pevent": f"{partition.PEVENT}.host.{node}.open",   # partitioned alerters (mapped)
                }
                for subject in families.values():
                    for data in bad.values():
                        await bus.publish(subject, data)
                    await bus.publish(subject, orjson.dumps(schema_valid_but_wrong(node)))
                replies = {}
                for subject in (subjects.ctl_enricher(node), subjects.CTL_ALERTER, subjects.store("events"),
                                subjects.store("alerts")):
                    for label, data in bad.items():
                        if label in ("near max_payload", "empty"):
                            continue  # an empty request body means "no parameters"; big ones are tested above
                        msg = await bus.nc.request(subject, data, timeout=5)
                        replies[(subject, label)] = orjson.loads(msg.data)
                await bus.nc.flush()

                # 2. good input afterwards still goes all the way: raw -> event -> alert -> store
                await bus.publish_batch(subjects.raw(node), [good_raw(node, "/etc/eunomia-fault-good")])
                await until(lambda: any(a.get("rule") == "Good file opened" for a in alerts), 15, "the good alert")
                await until(lambda: store.stats.total("events_stored_total") >= 1
                            and store.stats.total("alerts_stored_total") >= 1, 15, "the good event and alert stored")
                await asyncio.sleep(0.6)  # let every service send a heartbeat with its latest counters
                assert not [t.get_name() for t in tasks if t.done()], "a service died"
            finally:
                stop.set()
                await asyncio.gather(*tasks)

    # every bad control request got an error reply naming the problem
    for (subject, label), reply in replies.items():
        assert isinstance(reply, dict) and (reply.get("error") or reply.get("ok") is False), (subject, label, reply)

    n_bad, n_req = len(bad), len(bad) - 2
    hb = {s: heartbeats.get(subjects.stats(s, node), {}) for s in ("enricher", "alerter", "store", "api")}
    # the enricher checks batch items itself: a message is dropped by the bus, or its items by the enricher
    assert counter(hb["enricher"], "bus_malformed_total", subject="eunomia.raw.fm1") >= 1
    assert counter(hb["enricher"], "bus_malformed_total", subject="eunomia.raw.fm1") \
        + counter(hb["enricher"], "enricher_malformed_total") >= n_bad
    assert counter(hb["enricher"], "ctl_errors_total") == n_req
    assert counter(hb["alerter"], "bus_malformed_total", subject="eunomia.event.fm1") == n_bad
    assert counter(hb["alerter"], "ctl_errors_total") == n_req
    p = partition.partition_of("host", node)
    palerter_hb = heartbeats.get(subjects.stats("alerter", "fm2"), {})
    assert counter(palerter_hb, "bus_malformed_total", subject=f"eunomia.pevent.{p}") == n_bad
    assert counter(hb["store"], "malformed_total", stream="EVENTS") == n_bad + 1
    assert counter(hb["store"], "malformed_total", stream="ALERTS") == n_bad + 1
    assert counter(hb["store"], "bad_queries_total") == 2 * n_req
    assert counter(hb["api"], "api_stats_malformed_total") >= n_bad
    assert counter(hb["api"], "bus_malformed_total", subject="eunomia.alert.critical") == n_bad
    assert counter(hb["store"], "events_stored_total") >= 1 and counter(hb["alerter"], "alerts_total") >= 1

    # and said so in the log, naming the subject
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for subject in ("eunomia.raw.fm1", "eunomia.event.fm1.open", "eunomia.alert.critical",
                    "eunomia.stats.garbage.fm1"):
        assert subject in logged, f"nothing logged about garbage on {subject}"


async def test_alerter_replica_killed_and_restarted_while_events_flow(nats_server, tmp_path):
    rules = tmp_path / "exec.yaml"
    rules.write_text(EXEC_RULE)
    kw = {"rules": [str(rules)], "throttle_window_s": 0, "reload_check_s": 0}
    reps = [ServiceProcess("alerter", nats_server.url, f"fa{i}", tmp_path, **kw) for i in range(2)]
    alerts: list[dict] = []

    async def on_alerts(subject, batch):
        alerts.extend(batch)

    def exec_event(n: int) -> dict:
        return {"id": f"ev{n}", "ts": 1_764_000_000_000_000_000 + n, "node": "fe", "kind": "exec", "pid": 10 + n,
                "comm": "x", "filename": "/bin/x", "argv": ["x"], "ret": 0, "container": None, "k8s": None,
                "proc": {"exe": "/bin/x", "name": "x", "args": ["x"], "cmdline": "x"}}

    sent = 0

    async def send(batches: int) -> list[str]:
        nonlocal sent
        ids = []
        for _ in range(batches):
            batch = [exec_event(sent + i) for i in range(10)]
            sent += 10
            ids += [e["id"] for e in batch]
            await bus.publish_batch(subjects.event("fe", "exec"), batch)
            await asyncio.sleep(0.01)
        await bus.nc.flush()
        return ids

    def alerted_by(prefix: str, ids: list[str]) -> int:
        s = set(ids)
        return sum(1 for a in alerts if a["event"]["id"] in s and a["id"].startswith(prefix + "-"))

    async with busmod.connect(nats_server.url, Stats("t")) as bus:
        await bus.subscribe_batches(subjects.ALERT_ALL, on_alerts)
        try:
            for r in reps:
                r.start()
            for r in reps:
                await wait_heartbeat(bus.nc, r)
            phase1 = await send(30)
            await until(lambda: len(alerts) >= len(phase1), 15, "phase 1 alerts")
            assert alerted_by("fa0", phase1) and alerted_by("fa1", phase1), "the queue group shares the load"

            reps[1].kill()
            phase2 = await send(30)      # only fa0 is left
            await until(lambda: alerted_by("fa0", phase2) == len(phase2), 15, "fa0 alerting alone")

            reps[1].start()
            await wait_heartbeat(bus.nc, reps[1])
            phase3 = await send(30)
            await until(lambda: alerted_by("fa0", phase3) + alerted_by("fa1", phase3) == len(phase3), 15,
                        "phase 3 alerts")
            await asyncio.sleep(0.3)
        finally:
            for r in reps:
                r.stop()

    event_ids = [a["event"]["id"] for a in alerts if a.get("rule") == "Any exec"]
    assert len(event_ids) == len(set(event_ids)), "an event was alerted twice"
    assert set(event_ids) == set(phase1 + phase2 + phase3), "an event was not alerted"
    assert alerted_by("fa1", phase3) > 0, "the restarted replica did not rejoin the queue group"


async def test_enricher_killed_and_restarted_carries_on(nats_server, tmp_path):
    node = "fk1"
    enricher = ServiceProcess("enricher", nats_server.url, node, tmp_path, runtime_sockets=list(NO_SOCKET),
                              seed_from_proc=False)
    out: list[dict] = []

    async def on_events(subject, batch):
        out.extend(batch)

    async with busmod.connect(nats_server.url, Stats("t")) as bus:
        await bus.subscribe_batches(f"{subjects.PREFIX}.event.{node}.>", on_events)

        async def send(tag: str, n: int) -> set[str]:
            evs = [good_raw(node, f"/tmp/{tag}/{i}") for i in range(n)]
            await bus.publish_batch(subjects.raw(node), evs)
            await bus.nc.flush()
            return {e["id"] for e in evs}

        try:
            enricher.start()
            first = await wait_heartbeat(bus.nc, enricher)
            before = await send("before", 50)
            await until(lambda: before <= {e["id"] for e in out}, 15, "events enriched before the kill")
            enricher.kill()
            await send("down", 50)   # nobody listens on raw.* now: the live path is at-most-once
            enricher.start()
            second = await wait_heartbeat(bus.nc, enricher)
            after = await send("after", 50)
            await until(lambda: after <= {e["id"] for e in out}, 15, "events enriched after the restart")
            await asyncio.sleep(0.3)
        finally:
            enricher.stop()

    assert first["pid"] != second["pid"]
    ids = [e["id"] for e in out]
    assert len(ids) == len(set(ids)), "an event was enriched twice"
    assert all(e["proc"] and e["proc"]["name"] for e in out if e["id"] in after), "restarted enricher lost its wits"


@pytest.mark.bpf
@pytest.mark.timeout(120)
async def test_probe_survives_garbage_on_ctl_and_stats(nats_server, tmp_path, caplog):
    from services.probe.config import ProbeConfig
    from services.probe.service import ProbeService

    caplog.set_level(logging.WARNING, logger="eunomia")
    node = "fp1"
    bad = garbage()
    execs: list[dict] = []
    heartbeat: dict = {}

    async def on_exec(subject, batch):
        execs.extend(batch)

    async def on_stats(msg):
        heartbeat.update(orjson.loads(msg.data))

    common = CommonConfig(nats_url=nats_server.url, node=node, data_dir=tmp_path, stats_interval=0.2)
    probe = ProbeService(ProbeConfig(kinds=("exec",)), common)
    stop = asyncio.Event()
    async with busmod.connect(nats_server.url, Stats("t")) as bus:
        await bus.subscribe_batches(subjects.raw(node), on_exec)
        await bus.nc.subscribe(subjects.stats("probe", node), cb=on_stats)
        async with probe:
            task = asyncio.create_task(probe.run(stop))
            try:
                replies = []
                for label, data in bad.items():
                    await bus.publish(subjects.stats("garbage", node), data)
                    if label not in ("near max_payload", "empty"):
                        replies.append(orjson.loads((await bus.nc.request(subjects.ctl_probe(node), data, 5)).data))
                # type confusion inside a well-formed snapshot: pids that are no pids
                for pid in ("1" + "0" * 25, str(2**64 - 1), str(2**40), "-3", '"1"', "null", "1.5"):
                    await bus.publish(subjects.stats("garbage", node), f'{{"node": "{node}", "pid": {pid}}}'.encode())
                await bus.nc.flush()
                # still tracing: a fresh exec is seen
                proc = await asyncio.create_subprocess_exec("/bin/true")
                await proc.wait()
                await until(lambda: any(e["pid"] == proc.pid for e in execs), 15, "the exec after the garbage")
                await asyncio.sleep(0.5)
                assert not task.done(), "the probe died"
                # announcements on the stats subjects do not steer the probe (services/probe/exclusion.py)
                assert probe.excluded == {os.getpid()}
            finally:
                stop.set()
                await task
    assert all("error" in r for r in replies), replies
    assert counter(heartbeat, "ctl_errors_total") == len(replies)
