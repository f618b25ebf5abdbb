"""Probe overhead and throughput: storms of open()/close() and of exec (also
with a 40-variable environment, the exec environment scan on and off), run
untraced and then traced by the real probe (real BPF, real nats-server), in
one run. Prints the slowdown ratio of each storm, the events per second the
probe delivered to the bus and what was dropped.

    python -m bench.probe_bench [--opens 300000] [--execs 2000] [--drain 100000] [--ringbuf-pages 16384]

Baseline (shared/ENVIRONMENT.md): a plain ring buffer into a counting Python
callback did ~185k events/s and the traced open loop ran 3.5x slower.
Numbers compare within one run; they are not absolute targets. Needs root.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from services.probe.config import ProbeConfig
from services.probe.decode import KIND_NUMBERS
from services.probe.service import ProbeService
from shared import subjects
from shared.config import CommonConfig
from shared.natsserver import NatsServer, NatsServerConfig, free_port

NODE = "bench"

OPEN_DRIVER = """
import os, sys, time
n = int(sys.argv[1]); p = sys.argv[2]
fd = os.open(p, os.O_RDONLY | os.O_CREAT, 0o600); os.close(fd)
t = time.process_time()
for _ in range(n):
    os.close(os.open(p, os.O_RDONLY))
print(time.process_time() - t)
"""

EXEC_DRIVER = """
import os, sys, time
n = int(sys.argv[1])
t = time.perf_counter()
for _ in range(n):
    pid = os.posix_spawn("/bin/true", ["/bin/true"], {})
    os.waitpid(pid, 0)
print(time.perf_counter() - t)  # wall clock: the children's exec work is not this process's CPU
"""


# The same storm with an environment of the size shells and images have (40
# variables, none watched, so no execenv event): the cost of the exec environment scan alone.
ENV_DRIVER = EXEC_DRIVER.replace('{})', 'ENV)').replace(
    "n = int(sys.argv[1])", "n = int(sys.argv[1]); ENV = {f'VAR_{i}': 'x' * 20 for i in range(40)}")


def run_driver(code: str, *args: str) -> tuple[float, int]:
    """(seconds the driver's loop took, driver pid). The open storm reports CPU
    time: BPF programs run inside the driver's syscalls, so that is the
    overhead, and it does not depend on what else the machine runs."""
    p = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    out, _ = p.communicate()
    if p.returncode:
        raise SystemExit(f"driver failed with {p.returncode}")
    return float(out.strip()), p.pid


class Counter:
    """Counts raw events of the storm's process on the bus, with arrival times."""

    def __init__(self) -> None:
        self.pid = -1
        self.kind = ""
        self.n = 0
        self.last = 0.0

    async def cb(self, msg) -> None:
        hits = 0
        for ev in orjson.loads(msg.data):
            if ev["kind"] == self.kind and (ev["pid"] == self.pid or ev.get("ppid") == self.pid):
                hits += 1
        if hits:
            self.n += hits
            self.last = time.perf_counter()

    def reset(self, kind: str) -> None:
        self.kind, self.pid, self.n, self.last = kind, -1, 0, 0.0


async def traced_storm(svc: ProbeService, counter: Counter, kind: str, code: str, *args: str) -> dict:
    counter.reset(kind)
    lost0 = svc.stats.total("probe_lost_events_total")
    qdrop0 = svc.stats.total("probe_queue_dropped_events_total")
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, *args, stdout=asyncio.subprocess.PIPE)
    counter.pid = proc.pid  # events are matched when they arrive, after this is set
    out, _ = await proc.communicate()
    elapsed = float(out.decode().strip())
    # Drain: wait until nothing new has arrived for a second.
    seen = -1
    while seen != counter.n:
        seen = counter.n
        await asyncio.sleep(1.0)
    svc.read_counters()
    span = (counter.last or loop.time()) - t0
    return {"elapsed": elapsed, "delivered": counter.n, "rate": counter.n / span if span > 0 else 0.0,
            "lost": svc.stats.total("probe_lost_events_total") - lost0,
            "queue_dropped": svc.stats.total("probe_queue_dropped_events_total") - qdrop0}


async def main_async(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="probe-bench-"))
    target = str(tmp / "f")
    print(f"untraced: {args.opens} open/close, {args.execs} exec ...", flush=True)
    open_base, _ = run_driver(OPEN_DRIVER, str(args.opens), target)
    exec_base, _ = run_driver(EXEC_DRIVER, str(args.execs))
    env_base, _ = run_driver(ENV_DRIVER, str(args.execs))

    async with NatsServer(NatsServerConfig(port=free_port(), store_dir=None)) as srv:
        common = CommonConfig(nats_url=srv.url, node=NODE, data_dir=tmp)
        # every event out (no dedup, whole stream): this bench measures delivery, not filtering
        cfg = ProbeConfig(ringbuf_pages=args.ringbuf_pages, kinds=("exec", "exit", "fork", "open", "execenv"),
                          capture="all")
        svc = ProbeService(cfg, common)
        stop = asyncio.Event()
        async with svc:
            counter = Counter()
            await svc.bus.nc.subscribe(subjects.raw(NODE), cb=counter.cb, pending_msgs_limit=100_000)
            task = asyncio.create_task(svc.run(stop))
            print("traced ...", flush=True)
            o = await traced_storm(svc, counter, "open", OPEN_DRIVER, str(args.opens), target)
            e = await traced_storm(svc, counter, "exec", EXEC_DRIVER, str(args.execs))
            # the environment scan on (capture all watches DANGEROUS_ENV), then off
            env_on = await traced_storm(svc, counter, "exec", ENV_DRIVER, str(args.execs))
            kind_on = svc.bpf[b"kind_on"]
            kind_on[kind_on.Key(KIND_NUMBERS["execenv"])] = kind_on.Leaf(0)
            env_off = await traced_storm(svc, counter, "exec", ENV_DRIVER, str(args.execs))
            # Pipeline capacity: fill the ring with the reader paused, then time the drain
            # (decode, hand-over, batching, NATS publish) with nothing else competing.
            counter.reset("open")
            svc.reader_paused.set()
            _, counter.pid = run_driver(OPEN_DRIVER, str(args.drain), target)
            svc.reader_paused.clear()
            t0, cpu0 = time.perf_counter(), time.process_time()
            while counter.n < args.drain and time.perf_counter() - t0 < 60:
                await asyncio.sleep(0.01)
            cpu = time.process_time() - cpu0  # all our threads: reader, loop, NATS client, counter
            drain = {"n": counter.n, "rate": counter.n / ((counter.last or time.perf_counter()) - t0),
                     "cpu_rate": counter.n / cpu if cpu > 0 else 0.0}
            stop.set()
            await task

    # Untraced again, after unloading: the baseline is the faster of the two runs
    # (other load on the machine only ever makes a run slower).
    open_base = min(open_base, run_driver(OPEN_DRIVER, str(args.opens), target)[0])
    exec_base = min(exec_base, run_driver(EXEC_DRIVER, str(args.execs))[0])
    env_base = min(env_base, run_driver(ENV_DRIVER, str(args.execs))[0])
    print()
    print("open: driver CPU seconds; exec: wall-clock seconds")
    print(f"{'storm':<10}{'untraced s':>12}{'traced s':>10}{'slowdown':>10}{'events':>10}"
          f"{'delivered/s':>13}{'lost':>8}{'q-drop':>8}")
    for name, base, r, want in (("open", open_base, o, args.opens), ("exec", exec_base, e, args.execs)):
        print(f"{name:<10}{base:>12.3f}{r['elapsed']:>10.3f}{r['elapsed'] / base:>9.2f}x"
              f"{r['delivered']:>10}{r['rate']:>13,.0f}{int(r['lost']):>8}{int(r['queue_dropped']):>8}")
        if r["delivered"] + r["lost"] + r["queue_dropped"] < want:
            print(f"  note: {want - r['delivered']} {name} events neither delivered nor counted as lost")
    print(f"exec with a 40-variable environment: untraced {env_base:.3f} s; traced without the environment scan "
          f"{env_off['elapsed']:.3f} s ({env_off['elapsed'] / env_base:.2f}x), with it {env_on['elapsed']:.3f} s "
          f"({env_on['elapsed'] / env_base:.2f}x; scan/no scan {env_on['elapsed'] / env_off['elapsed']:.2f}x), "
          f"{env_on['delivered']} exec events, {int(env_on['lost'])} lost, {int(env_on['queue_dropped'])} queue-dropped")
    print(f"\npipeline drain (ring filled while paused): {drain['n']} of {args.drain} events at "
          f"{drain['rate']:,.0f} events/s wall clock, {drain['cpu_rate']:,.0f} events per CPU-second "
          f"(ring {args.ringbuf_pages} pages)")
    print(f"\nbaseline (ENVIRONMENT.md): open loop 3.5x slower traced; 185,000 events/s into a counting "
          f"callback. open slowdown vs baseline: {3.5 / (o['elapsed'] / open_base):.2f}x better; "
          f"drain rate vs baseline: {drain['rate'] / 185_000:.2f}x wall clock, "
          f"{drain['cpu_rate'] / 185_000:.2f}x per CPU-second")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--opens", type=int, default=300_000)
    ap.add_argument("--execs", type=int, default=2000)
    ap.add_argument("--drain", type=int, default=100_000, help="events for the drain measurement")
    ap.add_argument("--ringbuf-pages", type=int, default=16384, help="64 MiB: holds the drain test's events")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("probe_bench loads BPF programs: run as root")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
