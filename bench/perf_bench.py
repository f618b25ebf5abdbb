"""What the performance features cost: CPU time of their BPF programs (kernel
bpf_stats: run_time_ns per program, read from /proc/self/fdinfo) and of their
user-space side (draining and symbolising profiles, reading histograms),
while a container burns CPU and another does TCP connects and disk writes.

    python -m bench.perf_bench [--seconds 30] [--hz 99]

Printed: per program runs/s, ns per run and % of one core; the profiler's
total (sampling program + drain/symbolisation) against the target (< 1 % of
one core at 99 Hz), and the histogram programs' total. Needs root, podman
and gcc; turns kernel.bpf_stats_enabled on for the run (restored after).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from services.probe.config import ProbeConfig
from services.probe.service import ProbeService
from shared.config import CommonConfig
from shared.natsserver import NatsServer, NatsServerConfig, free_port
from tests import containers

BURN_C = "volatile unsigned long s; __attribute__((noinline)) void burn(void) { for (unsigned long i = 0; " \
         "i < 100000000UL; i++) s += i; }\nint main(void) { for (;;) burn(); }\n"
PERF_PROGS = ("tracepoint__sched__sched_switch", "tracepoint__sched__sched_wakeup",
              "tracepoint__sched__sched_wakeup_new", "tracepoint__block__block_rq_issue",
              "tracepoint__block__block_rq_complete", "raw_tracepoint__inet_sock_set_state",
              "tracepoint__tcp__tcp_probe", "tracepoint__sock__sock_send_length",
              "tracepoint__sock__sock_recv_length", "tracepoint__oom__mark_victim")
STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


def prog_stats(bpf, names) -> dict[str, tuple[int, int]]:
    out = {}
    for name in names:
        fn = bpf.funcs.get(name.encode())
        if fn is None:
            continue
        info = Path(f"/proc/self/fdinfo/{fn.fd}").read_text()
        vals = dict(line.split(":\t") for line in info.splitlines() if ":\t" in line)
        out[name] = (int(vals.get("run_time_ns", 0)), int(vals.get("run_cnt", 0)))
    return out


class Timed:
    """Wraps a method, adding up the thread CPU time spent in it."""

    def __init__(self, obj, attr: str) -> None:
        self.cpu, self.calls = 0.0, 0
        inner = getattr(obj, attr)

        def wrapper(*a, **kw):
            t = time.thread_time()
            try:
                return inner(*a, **kw)
            finally:
                self.cpu += time.thread_time() - t
                self.calls += 1
        setattr(obj, attr, wrapper)


async def run(args) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="perf-bench-"))
    burn = tmp / "burn"
    (tmp / "burn.c").write_text(BURN_C)
    subprocess.run(["gcc", "-static", "-O0", "-fno-omit-frame-pointer", "-o", str(burn), str(tmp / "burn.c")],
                   check=True)
    containers.build_busybox_image()
    names = []
    async with NatsServer(NatsServerConfig(port=free_port(), store_dir=tmp / "js")) as srv:
        common = CommonConfig(nats_url=srv.url, node="perfbench", data_dir=tmp, stats_interval=2)
        svc = ProbeService(ProbeConfig(profile_hz=args.hz, counters_interval=2.0), common)
        async with svc:
            stop = asyncio.Event()
            task = asyncio.create_task(svc.run(stop))
            drain, collect = Timed(svc.profiler, "drain"), Timed(svc.perf, "collect")
            u = uuid.uuid4().hex[:6]
            specs = [(["/burn"], ["-v", f"{burn}:/burn:ro"]),
                     (["sh", "-c", "mkdir -p /www; httpd -p 127.0.0.1:9000 -h /www; while true; do "
                                   "wget -q -O- http://127.0.0.1:9000/ 2>/dev/null; done"], []),
                     (["sh", "-c", "while true; do dd if=/dev/zero of=/tmp/f bs=64k count=16 conv=fsync "
                                   "2>/dev/null; done"], [])]
            for i, (cmd, flags) in enumerate(specs):
                names.append(f"perfbench-{i}-{u}")
                containers.run(cmd, name=names[-1], detach=True, flags=flags)
            try:
                await asyncio.sleep(3)
                await svc.drain_profile()  # first drain: loads /proc/kallsyms once (reported apart)
                first = drain.cpu
                drain.cpu, drain.calls = 0.0, 0
                progs = ("prof_sample", *PERF_PROGS)
                s0, t0 = prog_stats(svc.bpf, progs), time.monotonic()
                await asyncio.sleep(args.seconds)
                s1, wall = prog_stats(svc.bpf, progs), time.monotonic() - t0
            finally:
                for n in names:
                    containers.remove(n)
            stop.set()
            await task
    print(f"\n{args.seconds:g} s, profiler at {args.hz} Hz on {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'program':<42}{'runs/s':>10}{'ns/run':>10}{'% core':>9}")
    totals = {"profile": 0.0, "perf": 0.0}
    for name in s1:
        ns, cnt = s1[name][0] - s0[name][0], s1[name][1] - s0[name][1]
        pct = 100 * ns / 1e9 / wall
        totals["profile" if name == "prof_sample" else "perf"] += pct
        print(f"{name:<42}{cnt / wall:>10,.0f}{(ns / cnt if cnt else 0):>10,.0f}{pct:>8.3f}%")
    user_prof = 100 * drain.cpu / wall
    user_perf = 100 * collect.cpu / wall
    print(f"{'profile drain + symbolise (user)':<42}{drain.calls / wall:>10.2f}{'':>10}{user_prof:>8.3f}%")
    print(f"{'histogram/counter read (user)':<42}{collect.calls / wall:>10.2f}{'':>10}{user_perf:>8.3f}%")
    print(f"(first drain, with the one-time /proc/kallsyms load: {first * 1000:.0f} ms CPU)")
    print(f"\nprofiler total: {totals['profile'] + user_prof:.3f} % of one core (target < 1 % at 99 Hz)")
    print(f"histograms and counters total: {totals['perf'] + user_perf:.3f} % of one core")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--hz", type=int, default=99)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("perf_bench loads BPF programs: run as root")
    before = STATS.read_text().strip()
    STATS.write_text("1")
    try:
        asyncio.run(run(args))
    finally:
        STATS.write_text(before)


if __name__ == "__main__":
    main()
