"""Bus path throughput: events/s through the enricher and the alerter over a
real nats-server, against a minimal relay measured in the same run.

    python -m bench.pipeline_bench [--events 200000] [--window 50000]

Cases, each on a fresh nats-server (JetStream store in a tmp dir):
  relay      subscribe eunomia.raw.<node> (shared.bus), republish every batch
             unchanged on eunomia.event.<node>.<kind> (the baseline)
  enricher   the real EnricherService, durable publishing into the EVENTS stream
  enr-core   the same with no EVENTS stream: publishing falls back to core NATS
  alerter    the real AlerterService (default rules) on pre-enriched events

A driver subprocess (so it does not share the service's event loop) publishes
N realistic raw events with shared.bus.Batcher (256 a batch) — ~70% open,
plus fork/exec/connect/exit of real pids — and times from the first publish
to the last event out (counted on eunomia.event.>, ids checked once each; for
the alerter, its `events_evaluated_total` plus the events of kinds it skips
undecoded). It keeps at most --window events
in flight so no buffer overflows (a driver the server cut off as a
slow consumer shows as bus_disconnects_total and missing events). Numbers compare within one run.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from shared import subjects
from shared.bus import Batcher, connect
from shared.config import CommonConfig
from shared.gc_tuning import settle_gc, tune_gc
from shared.heap import tune_malloc
from shared.natsserver import NatsServer, NatsServerConfig, free_port
from shared.schema import new_event_id
from shared.service import run_loop
from shared.stats import Stats
from shared.streams import ensure_streams

NODE = "bench"
LOSS_COUNTERS = ("bus_slow_consumer_dropped_total", "bus_malformed_total", "handler_errors_total",
                 "bus_publish_failed_events_total", "enricher_dropped_events_total",
                 "enricher_malformed_total", "enricher_batch_errors_total", "rule_errors_total",
                 "bus_disconnects_total")
EVENT_ID = re.compile(rb'\{"id":"(' + NODE.encode() + rb'-[^"]+)"')  # container ids are 64 hex, no node
CONTAINER = {"id": "b" * 64, "name": "bench-web", "image": "localhost/bench:latest", "runtime": "podman",
             "labels": {"app": "web"}}


# --- the baseline ------------------------------------------------------------

class Relay:
    """raw.<node> -> event.<node>.<kind>, batches unchanged (the same bus code paths)."""
    name = "relay"

    def __init__(self, common: CommonConfig) -> None:
        self.common, self.stats = common, Stats("relay")

    async def __aenter__(self) -> "Relay":
        self._conn = connect(self.common.servers, self.stats, "bench-relay")
        self.bus = await self._conn.__aenter__()
        await self.bus.subscribe_batches(subjects.raw(self.common.node), self._on_raw)
        await self.bus.nc.flush()
        return self

    async def _on_raw(self, subject: str, events: list[dict]) -> None:
        await self.bus.publish_batch(subjects.event(self.common.node, subject.rsplit(".", 1)[1]), events)

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()

    async def __aexit__(self, *exc: object) -> None:
        await self._conn.__aexit__(*exc)


# --- the driver (a subprocess) -------------------------------------------------

def _head(kind: str, pid: int, ppid: int, comm: str) -> dict:
    return {"id": new_event_id(NODE), "ts": 0, "node": NODE, "kind": kind, "pid": pid, "tid": pid,
            "ppid": ppid, "uid": 0, "gid": 0, "comm": comm, "cgroup_id": 1}


def make_events(n: int, parents: list[int], children: list[int], enriched: bool) -> list[tuple[str, dict]]:
    """(subject, event) in publish order: process lifecycles, 9 of 13 events opens."""
    out: list[tuple[str, dict]] = []
    paths = ("/etc/ld.so.cache", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/etc/passwd", "/proc/self/status",
             "/var/log/app/access.log", "/tmp/work.dat", "/usr/share/zoneinfo/UTC", "/etc/hosts")
    i = 0
    while len(out) < n:
        parent, child = parents[i % len(parents)], children[i % len(children)]
        shell = i % 200 == 0  # now and then a shell in a container: the alerter raises (throttled) alerts
        exe, comm = ("/bin/sh", "sh") if shell else ("/usr/bin/python3", "python3")
        lifecycle = [
            {**_head("fork", parent, 1, "bash"), "child_pid": child, "clone_flags": 17},
            {**_head("exec", child, parent, comm), "filename": exe, "argv": [exe, "-c", f"job {i}"],
             "ret": 0, "argv_truncated": False},
        ]
        for k in range(5):
            lifecycle.append({**_head("open", child, parent, comm), "path": paths[(i + k) % len(paths)],
                              "flags": 0o2101 if k == 4 else 0, "mode": 0o644, "ret": 3 + k, "dirfd": -100})
        lifecycle.append({**_head("connect", child, parent, comm), "family": 2, "daddr": "10.0.0.7",
                          "dport": 5432, "saddr": None, "sport": None, "proto": None, "ret": 0, "fd": 8})
        for k in range(4):
            lifecycle.append({**_head("open", parent, 1, "bash"), "path": paths[(i + k + 3) % len(paths)],
                              "flags": 0, "mode": 0, "ret": 4, "dirfd": -100})
        lifecycle.append({**_head("exit", child, parent, comm), "exit_code": 0})
        for ev in lifecycle:
            if enriched:
                own = ev["pid"] == child
                ev["proc"] = {"exe": exe if own else "/usr/bin/bash", "args": [exe, "-c", f"job {i}"] if own else
                              ["bash"], "cmdline": f"{exe} -c job {i}" if own else "bash", "name": ev["comm"],
                              "cwd": "/srv", "ppid": ev["ppid"], "pname": "bash" if own else "init",
                              "pexe": "/usr/bin/bash" if own else "/sbin/init",
                              "pcmdline": "bash" if own else "/sbin/init",
                              "ancestors": [{"pid": parent, "comm": "bash", "exe": "/usr/bin/bash", "args": ["bash"]},
                                            {"pid": 1, "comm": "init", "exe": "/sbin/init", "args": ["/sbin/init"]}]
                              if own else [{"pid": 1, "comm": "init", "exe": "/sbin/init", "args": ["/sbin/init"]}]}
                ev["container"] = CONTAINER if i % 2 == 0 else None
                ev["k8s"] = None
            out.append((subjects.event(NODE, ev["kind"]) if enriched else subjects.raw(NODE), ev))
        i += 1
    return out[:n]


def count_kinds(n: int, kinds: frozenset[str]) -> int:
    """How many of make_events(n)'s events are of `kinds` (its lifecycles repeat)."""
    cycle = [ev["kind"] for _, ev in make_events(13, [1], [2], False)]
    assert cycle[0] == "fork" and cycle[-1] == "exit" and len(cycle) == 13
    full, rest = divmod(n, len(cycle))
    return full * sum(k in kinds for k in cycle) + sum(k in kinds for k in cycle[:rest])


async def drive(a: argparse.Namespace) -> dict:
    """Publish N events; wait until all are out (or 10 s of no progress); report times."""
    events = make_events(a.events, [int(p) for p in a.parents.split(",")],
                         [int(p) for p in a.children.split(",")], a.mode == "enriched")
    stats = Stats("bench-driver")
    seen: set[bytes] = set()
    st = {"received": 0, "dup": 0, "t_last": 0.0, "bytes": 0, "checks": 0, "regex_bad": 0}

    async def on_event(msg) -> None:  # enricher/relay output
        # Event ids (each event's first key) by regex, not a full decode: this process
        # shares the CPUs with the service measured. Checked against a decode now and then.
        ids = EVENT_ID.findall(msg.data)
        if st["checks"] < 20:
            st["checks"] += 1
            if [ev["id"].encode() for ev in orjson.loads(msg.data)] != ids:
                st["regex_bad"] += 1  # reported: the count would not be trustworthy
        st["received"] += len(ids)
        st["bytes"] += len(msg.data)
        n = len(seen)
        seen.update(ids)
        st["dup"] += len(ids) - (len(seen) - n)
        st["t_last"] = time.time()

    skipped = set(a.skip_kinds.split(",")) if a.skip_kinds else set()
    skipped_sent = 0   # events of kinds the alerter does not decode: done once sent

    async def on_stats(msg) -> None:  # the alerter's heartbeat: progress for the window
        snap = orjson.loads(msg.data)
        st["received"] = skipped_sent + int(sum(v for _, v in snap["counters"].get("events_evaluated_total", [])))

    async with connect(a.url, stats, "bench-driver") as bus:
        if a.mode == "raw":
            await bus.nc.subscribe(subjects.EVENT_ALL, cb=on_event, pending_msgs_limit=1_000_000,
                                   pending_bytes_limit=2 * 1024**3)
        else:
            await bus.nc.subscribe(subjects.stats("alerter", NODE), cb=on_stats)
        await bus.nc.flush()
        sent = 0
        t_first = time.time()
        async with Batcher(bus, 256, max_pending=a.window + 256) as batcher:
            for subject, ev in events:
                if sent % 256 == 0:
                    while sent - st["received"] > a.window:
                        await asyncio.sleep(0.0005)
                ev["ts"] = time.time_ns()
                await batcher.add(subject, ev)
                sent += 1
                skipped_sent += ev["kind"] in skipped
        t_sent = time.time()
        last, idle = -1, time.monotonic()
        while st["received"] < sent and time.monotonic() - idle < 10:
            if st["received"] != last:
                last, idle = st["received"], time.monotonic()
            await asyncio.sleep(0.001)
    return {"sent": sent, "received": st["received"], "distinct": len(seen), "dup": st["dup"], "bytes": st["bytes"],
            "regex_bad": st["regex_bad"],
            "t_first": t_first, "t_sent": t_sent, "t_last": st["t_last"],
            "driver_loss": {k: int(stats.total(k)) for k in LOSS_COUNTERS if stats.total(k)}}


# --- one case ------------------------------------------------------------------

async def run_case(name: str, a: argparse.Namespace, parents: list[int], children: list[int]) -> dict:
    from services.alerter.config import AlerterConfig
    from services.alerter.service import AlerterService
    from services.enricher.config import EnricherConfig
    from services.enricher.service import EnricherService

    with tempfile.TemporaryDirectory(prefix="eunomia-pbench-") as tmp:
        async with NatsServer(NatsServerConfig(port=free_port(), store_dir=Path(tmp) / "js")) as srv:
            common = CommonConfig(nats_url=srv.url, node=NODE, data_dir=Path(tmp) / "data",
                                  stats_interval=0.1 if name == "alerter" else 2.0)
            if name == "enricher":
                async with connect(srv.url, Stats("bench-setup"), "bench-setup") as bus:
                    await ensure_streams(bus.js)
            if name == "relay":
                svc = Relay(common)
            elif name == "alerter":
                svc = AlerterService(AlerterConfig(reload_check_s=0), common)
            else:
                svc = EnricherService(EnricherConfig(), common)
            stop = asyncio.Event()
            async with svc:
                settle_gc()  # as shared/service.run_service does once a service has started
                task = asyncio.create_task(svc.run(stop))
                done_at = None
                cpu0 = time.process_time()  # this process is the service's (the driver is a subprocess)
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bench.pipeline_bench", "--drive",
                    "enriched" if name == "alerter" else "raw", "--url", srv.url, "--events", str(a.events),
                    "--window", str(a.window), "--parents", ",".join(map(str, parents)),
                    "--children", ",".join(map(str, children)),
                    "--skip-kinds", ",".join(sorted(svc.skipped_kinds)) if name == "alerter" else "",
                    stdout=asyncio.subprocess.PIPE,
                    cwd=str(Path(__file__).resolve().parents[1]))
                if name == "alerter":  # completion seen here, not 0.1 s later in a heartbeat
                    skipped = count_kinds(a.events, svc.skipped_kinds)
                    while proc.returncode is None and done_at is None:
                        if svc.stats.total("events_evaluated_total") >= a.events - skipped:
                            done_at = time.time()
                        await asyncio.sleep(0.001)
                out, _ = await proc.communicate()
                cpu = time.process_time() - cpu0
                if proc.returncode:
                    raise RuntimeError(f"{name}: driver exited with {proc.returncode}")
                r = orjson.loads(out.splitlines()[-1])
                stop.set()
                await task
            if name == "alerter":
                r["received"] = int(svc.stats.total("events_evaluated_total")) + skipped
                r["t_last"] = done_at or time.time()
                r["alerts"] = int(svc.stats.total("alerts_total"))
            r["loss"] = {k: int(svc.stats.total(k)) for k in LOSS_COUNTERS if svc.stats.total(k)}
            r["loss"].update({f"driver {k}": v for k, v in r.pop("driver_loss").items()})
            r["retries"] = int(svc.stats.total("bus_publish_retries_total"))
            r["secs"] = r["t_last"] - r["t_first"]
            r["cpu_us"] = cpu * 1e6 / max(1, r["received"])  # the service's CPU per event, all threads
            r["rate"] = r["received"] / r["secs"] if r["secs"] > 0 else 0.0
            return r


async def bench(a: argparse.Namespace) -> int:
    # real processes for the events: this one as a parent, sleeping children as the forked ones
    kids = [subprocess.Popen(["sleep", "300"]) for _ in range(8)]
    try:
        parents, children = [os.getpid()], [k.pid for k in kids]
        rows = {}
        for name in a.cases.split(","):
            rows[name] = await run_case(name, a, parents, children)
    finally:
        for k in kids:
            k.kill()
            k.wait()
    base = rows["relay"]["rate"] if "relay" in rows else float("nan")
    print(f"pipeline bench: {a.events} events, batches of 256, window {a.window}, "
          f"{os.cpu_count()} cpus")
    print(f"{'case':<10} {'sent':>8} {'out':>8} {'secs':>7} {'events/s':>10} {'ratio':>6} {'cpu µs/ev':>9}  notes")
    ok = True
    for name, r in rows.items():
        notes = []
        if r["received"] != r["sent"]:
            ok = False
            notes.append(f"MISSING {r['sent'] - r['received']}")
        if name != "alerter" and (r["distinct"] != r["sent"] or r["dup"]):
            ok = False
            notes.append(f"distinct ids {r['distinct']}, dups {r['dup']}")
        if r["regex_bad"]:
            ok = False
            notes.append(f"id regex disagreed with a decode in {r['regex_bad']} messages")
        if r["loss"]:
            ok = False
            notes.append(f"loss {r['loss']}")
        if r["retries"]:
            notes.append(f"retries {r['retries']}")
        if name == "alerter":
            notes.append(f"alerts {r['alerts']}")
        elif r["received"]:
            notes.append(f"{r['bytes'] / r['received']:.0f} B/event out")
        print(f"{name:<10} {r['sent']:>8} {r['received']:>8} {r['secs']:>7.2f} {r['rate']:>10,.0f} "
              f"{r['rate'] / base:>6.2f} {r['cpu_us']:>9.1f}  {'; '.join(notes) or 'ok'}")
    print("ratios vs relay: " + ", ".join(f"{n} {rows[n]['rate'] / base:.2f}" for n in rows if n != "relay"))
    print("cpu µs/ev: the service process's CPU (all its threads) per event, from the driver's start to its "
          "exit; the driver and nats-server share the 2 cores, so 1e6 / (cpu µs/ev) is what one free core could "
          "take")
    if "enricher" in rows and "enr-core" in rows:
        print(f"JetStream acks cost: enricher {rows['enricher']['rate'] / rows['enr-core']['rate']:.2f}x "
              "of core-NATS enricher")
    return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--cases", default="relay,enricher,enr-core,alerter",
                   help="comma-separated cases to run (relay first: the others' ratios need it)")
    p.add_argument("--window", type=int, default=15_000,
                   help="max events in flight (enriched events are ~3 KiB: 15k stays under nats-server's 64 MiB per-client pending limit)")
    p.add_argument("--drive", choices=("raw", "enriched"), help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--parents", help=argparse.SUPPRESS)
    p.add_argument("--children", help=argparse.SUPPRESS)
    p.add_argument("--skip-kinds", default="", help=argparse.SUPPRESS)
    a = p.parse_args()
    tune_malloc()  # as every service process does before its threads start (shared/service.run_main)
    tune_gc()
    if a.drive:
        a.mode = a.drive
        print(orjson.dumps(run_loop(drive(a))).decode())
        return 0
    return run_loop(bench(a))  # the services' event loop, as shared/service.run_main runs them


if __name__ == "__main__":
    sys.exit(main())
