"""Detection latency: from a behaviour in a container to its alert on the bus.

    python -m bench.detection_latency_bench [--runs 40] [--interval 0.25]

Runs the real single-node path in this process (nats-server, probe with real
BPF, enricher with the podman Engine API, alerter with the full default
ruleset) and one busybox container that performs, `--runs` times each:
  file  read of an ssh key (`Read ssh information`: an open, path-filtered in the kernel)
  exec  a program started with LD_PRELOAD in its environment (`LD_PRELOAD in exec
        environment`: the execenv + exec events, the enricher's process table)
For every alert: latency = the time the alert arrived on the bus minus the
kernel timestamp of the syscall (the event's `ts`, boot clock converted to
wall clock by the probe). The baseline, in the same run, is the same
syscall's raw event arriving on the bus from the probe (probe delivery
alone); the ratio says what enrichment and rule evaluation add.
Prints p50/p95/max per behaviour; never asserts. Needs root, podman and the
busybox image the tests build (tests/containers.py builds it when missing).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from services.alerter.config import AlerterConfig
from services.alerter.service import AlerterService
from services.enricher.config import EnricherConfig
from services.enricher.service import EnricherService
from services.probe.config import ProbeConfig
from services.probe.service import ProbeService
from shared import subjects
from shared.bus import connect
from shared.config import CommonConfig
from shared.natsserver import NatsServer, NatsServerConfig, free_port
from shared.stats import Stats

BEHAVIOURS = {"file": ("Read ssh information", "open"), "exec": ("LD_PRELOAD in exec environment", "exec")}


def script(runs: int, interval: float) -> str:
    """The container's loop: iteration i reads key i and starts cat with preload i."""
    return "\n".join([
        "sleep 2",  # the enricher learns the container first
        "mkdir -p /root/.ssh; i=0",
        f"while [ $i -lt {runs} ]; do",
        "  echo k > /root/.ssh/id_rsa.$i; cat /root/.ssh/id_rsa.$i >/dev/null",
        "  LD_PRELOAD=/tmp/bench$i.so /bin/cat /dev/null",
        f"  i=$((i+1)); sleep {interval}",
        "done",
        "sleep 2",
    ])


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def row(name: str, xs: list[float]) -> str:
    if not xs:
        return f"  {name:<22} no samples"
    return (f"  {name:<22} n={len(xs):<4} p50={statistics.median(xs):7.1f} ms  p95={pct(xs, 95):7.1f} ms  "
            f"max={max(xs):7.1f} ms")


async def main(runs: int, interval: float) -> int:
    from tests import containers  # the busybox image and the Engine API service, as the tests use them
    if os.geteuid() != 0:
        print("detection_latency_bench: needs root (BPF)", file=sys.stderr)
        return 2
    containers.build_busybox_image()
    api = containers.start_api_service()
    node = f"bench-{uuid.uuid4().hex[:6]}"
    raw_at: dict[tuple, int] = {}      # (pid, ts, kind) -> arrival of the raw event (ns)
    alerts: list[tuple[int, dict]] = []  # (arrival ns, alert)

    async def on_raw(_subject: str, events: list[dict]) -> None:
        now = time.time_ns()
        for e in events:
            if e.get("kind") in ("open", "exec"):
                raw_at[(e.get("pid"), e.get("ts"), e.get("kind"))] = now

    async def on_alert(_subject: str, batch: list[dict]) -> None:
        now = time.time_ns()
        alerts.extend((now, a) for a in batch)

    name = f"eunomia-latency-{uuid.uuid4().hex[:8]}"
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(lambda: api.terminate() if api else None)
        cleanup.callback(containers.remove, name)
        with tempfile.TemporaryDirectory() as tmp:
            async with NatsServer(NatsServerConfig(port=free_port(), store_dir=Path(tmp))) as srv:
                common = CommonConfig(nats_url=srv.url, node=node, stats_interval=1.0)
                async with connect(common.servers, Stats("bench")) as bus, contextlib.AsyncExitStack() as stack:
                    await bus.subscribe_batches(subjects.raw(node), on_raw)
                    await bus.subscribe_batches("eunomia.alert.>", on_alert)
                    await bus.nc.flush()
                    stop = asyncio.Event()
                    svcs = [ProbeService(ProbeConfig(), common),
                            EnricherService(EnricherConfig(runtime_sockets=(containers.PODMAN_SOCK,)), common),
                            AlerterService(AlerterConfig(subject=f"eunomia.event.{node}.>", throttle_window_s=0,
                                                         queue_group=f"q{uuid.uuid4().hex[:6]}"), common)]
                    tasks = []
                    for s in svcs:
                        await stack.enter_async_context(s)
                        tasks.append(asyncio.create_task(s.run(stop)))
                    await asyncio.sleep(3)  # the alerter's plan reaches the probe
                    t0 = time.monotonic()
                    r = await asyncio.to_thread(containers.run, ["sh", "-c", script(runs, interval)], name=name,
                                                check=False, timeout=runs * (interval + 2) + 120,
                                                flags=["--network", "none"])
                    await asyncio.sleep(3)  # the last alerts drain
                    stop.set()
                    await asyncio.gather(*tasks, return_exceptions=True)
    if r.returncode:
        print(f"container failed ({r.returncode}): {r.stderr}", file=sys.stderr)
    print(f"detection latency: {runs} runs of each behaviour in one container "
          f"({time.monotonic() - t0:.0f} s, load {os.getloadavg()[0]:.1f})")
    for key, (rule, kind) in BEHAVIOURS.items():
        det, base = [], []
        for at, a in alerts:
            ev = a.get("event") or {}
            if a.get("rule") != rule or ev.get("kind") != kind or not (a.get("container") or {}).get("id"):
                continue
            det.append((at - ev["ts"]) / 1e6)
            raw = raw_at.get((ev.get("pid"), ev.get("ts"), kind))
            if raw is not None:
                base.append((raw - ev["ts"]) / 1e6)
        print(f"{key}: {rule!r}")
        print(row("syscall -> alert", det))
        print(row("syscall -> raw event", base))
        if det and base:
            print(f"  ratio (p50 alert / p50 raw): {statistics.median(det) / max(statistics.median(base), 1e-3):.1f}x")
        if len(det) < runs:
            print(f"  missing: {runs - len(det)} of {runs} behaviours raised no alert")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--interval", type=float, default=0.25, help="seconds between iterations in the container")
    args = ap.parse_args()
    sys.exit(asyncio.run(main(args.runs, args.interval)))
