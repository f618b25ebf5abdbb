"""What the whole single-node monitor (`eunomia up`: embedded nats-server,
probe, enricher, alerter, store, api) costs real workloads on this node.

    python -m bench.overhead_bench [--quick] [--rounds 2] [--wrk-seconds 10] [--opens 300000] [--execs 3000]
                                   [--perf-phase]

Phases alternate in one run, untraced then traced (off, on, off, on, ...;
each "on" starts a fresh `eunomia up` with its own data dir and ports, waits
until the API answers and probe events flow, and stops it with SIGINT after),
so drift on the machine hits both sides alike. Workloads, each timed by itself:
  nginx  nginx-light serving one 4 KB file (access_log off) to `wrk -t1 -c32`: req/s
  exec   fork + execve(/bin/true) + waitpid, N times (static C helper): seconds
  walk   `find /usr -xdev > /dev/null`, a few times: seconds
  open   open()/close() of one file, N times (static C helper): seconds
  syscall  getppid(), N times (static C helper): seconds; no program of ours acts on it, so this
         is what every syscall of the node pays for the attach points (the floor) and for the
         programs that run on every syscall (raw sys_enter's ia32 check)
Printed: traced/untraced ratios (medians over rounds), the monitor's CPU
(utime+stime of the `eunomia up` process tree, nats-server included) during
each traced workload, its RSS idle, right after the open burst and after an
idle wait, and the monitor's own event/drop counters from /metrics (every
series whose name says probe events, filtered, dropped, lost or dedup, so new
counters show up by themselves). Figures are printed next to their targets
(nginx >= 0.95x, open <= 1.2x, exec <= 1.1x, monitor CPU <= 5 % of a core
under nginx, idle RSS <= 150 MB), never asserted. --quick is a one-round smoke
run. --floor adds a phase with empty programs on the probe's attach points: the
kernel's floor, which no work in our programs can beat. --perf-phase adds a traced phase with `--no-perf` per round and prints
what the performance features (histograms, CPU time, profiler) cost. Other load on the machine makes every ratio noisy: the load average is
printed with each phase. Baseline (shared/ENVIRONMENT.md): nginx alone
~38-42k req/s; an empty BPF program on raw_syscalls:sys_enter alone ~0.8x.
Needs root, nginx-light, wrk and gcc (deploy/bootstrap.sh installs them).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from services.supervisor.config import ALL_SERVICES
from shared.natsserver import free_port

EUNOMIA = Path(sys.executable).with_name("eunomia")
READY_TIMEOUT_S = 180
STOP_TIMEOUT_S = 60

# One helper for both loops; prints the loop's own wall-clock seconds.
HELPER_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
extern char **environ;
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv) {
    long n = atol(argv[2]);
    char *args[] = {"/bin/true", NULL};
    if (argc > 3) close(open(argv[3], O_RDONLY | O_CREAT, 0600));
    double t = now();
    for (long i = 0; i < n; i++) {
        if (!strcmp(argv[1], "open")) { close(open(argv[3], O_RDONLY)); continue; }
        if (!strcmp(argv[1], "syscall")) { syscall(SYS_getppid); continue; }
        pid_t p = fork();
        if (p == 0) { execve(args[0], args, environ); _exit(127); }
        waitpid(p, NULL, 0);
    }
    printf("%.6f\n", now() - t);
    return 0;
}
"""
HELPER_PY = """
import os, sys, time
mode, n = sys.argv[1], int(sys.argv[2])
if mode == "open":
    os.close(os.open(sys.argv[3], os.O_RDONLY | os.O_CREAT, 0o600))
t = time.perf_counter()
for _ in range(n):
    if mode == "open":
        os.close(os.open(sys.argv[3], os.O_RDONLY))
    elif mode == "syscall":
        os.getppid()
    else:
        os.waitpid(os.posix_spawn("/bin/true", ["/bin/true"], dict(os.environ)), 0)
print(time.perf_counter() - t)
"""
NGINX_CONF = """daemon off;
user root;
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    server {{ listen 127.0.0.1:{port}; root {d}/www; }}
}}
"""
# Counters worth printing (summed by name): whatever the probe emitted or counted
# in kernel, and anything filtered, dropped or lost anywhere in the stack.
COUNTERS = re.compile(r"probe_\w*events|container_events|filtered|dropped|lost|dedup")
SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{.*\})?\s+(\S+)$", re.M)


# --- the workloads ---------------------------------------------------------------

def build_helper(tmp: Path) -> list[str]:
    """Command of the loop helper: static C when gcc can build it, else Python."""
    src, exe = tmp / "loops.c", tmp / "loops"
    src.write_text(HELPER_C)
    if shutil.which("gcc") and subprocess.run(["gcc", "-O2", "-static", "-o", str(exe), str(src)]).returncode == 0:
        return [str(exe)]
    print("note: gcc -static failed: the loops run in Python", flush=True)
    return [sys.executable, "-c", HELPER_PY]


def printed_seconds(cmd: list[str]) -> float:
    return float(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def walk(times: int) -> float:
    t = time.perf_counter()
    for _ in range(times):
        subprocess.run(["find", "/usr", "-xdev"], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


class Nginx:
    """A private nginx (config, pid, logs, docroot in a tmp dir) on a free loopback port."""

    def __init__(self, tmp: Path, workers: int) -> None:
        self.dir, self.port = tmp / "nginx", free_port()
        (self.dir / "www").mkdir(parents=True)
        (self.dir / "www" / "f.html").write_bytes(b"x" * 4096)
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(NGINX_CONF.format(workers=workers, d=self.dir, port=self.port))

    def __enter__(self) -> "Nginx":
        self.proc = subprocess.Popen(["nginx", "-p", str(self.dir), "-c", str(self.conf), "-e", str(self.dir / "error.log")])
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/f.html", timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"nginx did not start: {(self.dir / 'error.log').read_text()}") from None
                time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGQUIT)
        self.proc.wait(10)

    def wrk(self, seconds: int) -> float:
        """Requests per second, wrk's own figure."""
        out = subprocess.run(["wrk", "-t1", "-c32", f"-d{seconds}s", f"http://127.0.0.1:{self.port}/f.html"],
                             check=True, capture_output=True, text=True).stdout
        if "Non-2xx" in out or "Socket errors" in out:
            print(f"note: wrk saw errors:\n{out}", flush=True)
        return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


@dataclass
class Workload:
    name: str
    unit: str
    run: Callable[[], float]   # the figure: req/s or seconds
    target: str
    higher_is_better: bool = False


def workloads(args: argparse.Namespace, helper: list[str], nginx: Nginx, target: Path) -> list[Workload]:
    # The open loop comes last: the RSS right after its burst, and then idle, is measured.
    return [
        Workload("nginx", "req/s", lambda: nginx.wrk(args.wrk_seconds), ">= 0.95x", True),
        Workload("exec", "s", lambda: printed_seconds([*helper, "exec", str(args.execs)]), "<= 1.1x"),
        Workload("walk", "s", lambda: walk(args.walks), ""),
        Workload("syscall", "s", lambda: printed_seconds([*helper, "syscall", str(args.syscalls)]), ""),
        Workload("open", "s", lambda: printed_seconds([*helper, "open", str(args.opens), str(target)]), "<= 1.2x"),
    ]


# --- the monitor under test ------------------------------------------------------

def proc_stat(pid: int) -> list[str]:
    """/proc/<pid>/stat fields after the command name (index 0 is field 3, state)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def proc_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for d in os.listdir("/proc"):
        try:
            children[int(proc_stat(int(d))[1])].append(int(d))
        except (ValueError, OSError):
            continue
    out, todo = [], [root]
    while todo:
        out.append(todo.pop())
        todo += children[out[-1]]
    return out


def cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        try:
            f = proc_stat(pid)
            ticks += int(f[11]) + int(f[12])  # utime, stime
        except OSError:
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mb(pids: list[int]) -> float:
    kb = 0
    for pid in pids:
        try:
            kb += int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))
        except (OSError, AttributeError):
            pass
    return kb / 1024


class Stack:
    """`eunomia up` as a subprocess with its own data dir and free ports."""

    def __init__(self, data: Path, extra: tuple[str, ...] = ()) -> None:
        self.data, self.api_port = data, free_port()
        self.cmd = [str(EUNOMIA), "--data-dir", str(data), "up", "--nats-port", str(free_port()),
                    "--api-port", str(self.api_port), "--no-podman-api", *extra]

    def __enter__(self) -> "Stack":
        self.data.mkdir(parents=True)
        self.log = self.data / "eunomia.log"
        t0 = time.monotonic()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__()
            raise
        self.ready_s = time.monotonic() - t0
        self.pids = proc_tree(self.proc.pid)  # eunomia up and its nats-server
        return self

    def __exit__(self, *exc: object) -> None:
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print(f"note: eunomia up still running {STOP_TIMEOUT_S} s after SIGINT: killed; its log ends:\n"
                  + self.log_tail(), flush=True)
            for pid in proc_tree(self.proc.pid):  # its nats-server too, not orphaned
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.wait()
        self.stop_s = time.monotonic() - t0

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def metrics_text(self) -> str:
        token = (self.data / "api-token").read_text().strip()
        req = urllib.request.Request(f"http://127.0.0.1:{self.api_port}/metrics",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.read().decode()

    def counters(self) -> dict[str, float]:
        sums: dict[str, float] = defaultdict(float)
        for name, _labels, value in SAMPLE.findall(self.metrics_text()):
            if COUNTERS.search(name):
                sums[name] += float(value)
        return dict(sums)

    def _ready(self) -> bool:
        try:
            text = self.metrics_text()
        except OSError:  # no token file yet, or the API not listening yet
            return False
        up = set(re.findall(r'^eunomia_service_up\{[^}]*service="(\w+)"[^}]*\} 1(?:\.0)?$', text, re.M))
        events = sum(float(v) for n, _, v in SAMPLE.findall(text) if n == "eunomia_probe_events_total")
        return up >= set(ALL_SERVICES) and events > 0

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("eunomia up did not get ready (API up, every service up, probe events > 0):\n"
                                 + self.log_tail())
            subprocess.run(["/bin/true"])  # something for the probe to see
            time.sleep(0.5)


# --- phases ----------------------------------------------------------------------

@dataclass
class Phase:
    values: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (monitor CPU s, wall s)
    rss: dict[str, float] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)
    ready_s: float = 0.0
    stop_s: float = 0.0


def untraced(wls: list[Workload]) -> Phase:
    return Phase(values={w.name: w.run() for w in wls})


def floor(wls: list[Workload], tracepoints: bool = True, raw: bool = True) -> Phase:
    """Empty programs on the probe's attach points (bench/tracepoint_floor.py): the kernel's floor."""
    from bench.tracepoint_floor import EmptyPrograms
    with EmptyPrograms(tracepoints, raw):
        return untraced(wls)


def traced(wls: list[Workload], data: Path, args: argparse.Namespace, extra: tuple[str, ...] = ()) -> Phase:
    with Stack(data, extra) as st:
        ph = Phase(ready_s=st.ready_s)
        time.sleep(args.settle)
        ph.rss["idle"] = rss_mb(st.pids)
        for w in wls:
            c0, t0 = cpu_seconds(st.pids), time.perf_counter()
            ph.values[w.name] = w.run()
            ph.cpu[w.name] = (cpu_seconds(st.pids) - c0, time.perf_counter() - t0)
        ph.rss["after open"] = rss_mb(st.pids)
        c0 = cpu_seconds(st.pids)
        time.sleep(args.idle_wait)
        ph.cpu[f"{args.idle_wait:g} s after"] = (cpu_seconds(st.pids) - c0, args.idle_wait)
        ph.rss[f"{args.idle_wait:g} s later"] = rss_mb(st.pids)
        ph.counters = st.counters()
    ph.stop_s = st.stop_s
    return ph


# --- report ----------------------------------------------------------------------

def load() -> str:
    """The machine's 1-minute load: other work on it makes every figure noisier."""
    return f"(load average {os.getloadavg()[0]:.2f})"


def median(phases: list[Phase], get: Callable[[Phase], float]) -> float:
    return statistics.median(get(p) for p in phases)


def row(label: str, cells: list[str], width: int = 12) -> str:
    return f"{label:<24}" + "".join(f"{c:>{width}}" for c in cells)


def report_perf(wls: list[Workload], on: list[Phase], noperf: list[Phase]) -> None:
    """What the performance features (histograms, CPU time, 49 Hz profiler) add to the monitor."""
    print("\nperformance features: traced with them (default) vs traced with --no-perf, medians")
    print(row("workload", ["no-perf", "perf", "ratio"]))
    for w in wls:
        fmt = "{:,.0f}" if w.higher_is_better else "{:.3f}"
        a, b = median(noperf, lambda p, w=w: p.values[w.name]), median(on, lambda p, w=w: p.values[w.name])
        print(row(f"{w.name} ({w.unit})", [fmt.format(a), fmt.format(b), f"{b / a:.2f}x"]))
    print(row("monitor CPU during", ["no-perf %", "perf %", ""]))
    for name in on[0].cpu:
        pct = [100 * median(ph, lambda p, name=name: p.cpu[name][0]) / median(ph, lambda p, name=name: p.cpu[name][1])
               for ph in (noperf, on)]
        print(row(name, [f"{pct[0]:.1f} %", f"{pct[1]:.1f} %", ""]))
    print(row("idle RSS (MB)", [f"{median(noperf, lambda p: p.rss['idle']):.0f}",
                                f"{median(on, lambda p: p.rss['idle']):.0f}", ""]))


def report(wls: list[Workload], off: list[Phase], on: list[Phase], floors: list[Phase],
           floor_tp: list[Phase], floor_raw: list[Phase]) -> None:
    n = len(off)
    print(f"\neunomia up, start to ready (s): {'  '.join(f'{p.ready_s:.1f}' for p in on)}; "
          f"SIGINT to exit (s): {'  '.join(f'{p.stop_s:.1f}' for p in on)}")
    print("\nworkloads: figures per round (untraced | traced), ratio of medians traced/untraced")
    print(row("workload", [*(f"off {i + 1}" for i in range(n)), *(f"on {i + 1}" for i in range(n)), "ratio", "target"]))
    for w in wls:
        fmt = "{:,.0f}" if w.higher_is_better else "{:.3f}"
        ratio = median(on, lambda p, w=w: p.values[w.name]) / median(off, lambda p, w=w: p.values[w.name])
        cells = [fmt.format(p.values[w.name]) for p in off + on]
        print(row(f"{w.name} ({w.unit})", [*cells, f"{ratio:.2f}x", w.target]))
    if floors:
        print("\nthe kernel's floor: empty programs on the same attach points, ratio of medians to untraced")
        split = ["tp only", "raw only"] if floor_tp else []
        print(row("workload", [*(f"floor {i + 1}" for i in range(n)), "floor", *split, "eunomia"]))
        for w in wls:
            fmt = "{:,.0f}" if w.higher_is_better else "{:.3f}"
            base = median(off, lambda p, w=w: p.values[w.name])
            ratios = [median(ph, lambda p, w=w: p.values[w.name]) / base
                      for ph in (floors, *((floor_tp, floor_raw) if floor_tp else ()), on)]
            print(row(f"{w.name} ({w.unit})", [*(fmt.format(p.values[w.name]) for p in floors),
                                               *(f"{r:.2f}x" for r in ratios)]))

    print("\nmonitor CPU (eunomia up + nats-server) while traced, medians over rounds")
    print(row("during", ["wall s", "CPU s", "% of a core", "target"]))
    for name in on[0].cpu:
        cpu = median(on, lambda p, name=name: p.cpu[name][0])
        wall = median(on, lambda p, name=name: p.cpu[name][1])
        target = "<= 5 %" if name == "nginx" else ""
        print(row(name, [f"{wall:.2f}", f"{cpu:.2f}", f"{100 * cpu / wall:.1f} %", target]))

    print("\nmonitor RSS (MB, eunomia up + nats-server), per round")
    print(row("when", [*(f"round {i + 1}" for i in range(n)), "target"]))
    for name in on[0].rss:
        print(row(name, [*(f"{p.rss[name]:.0f}" for p in on), "<= 150" if name == "idle" else ""]))

    print("\nmonitor counters from /metrics at the end of each traced phase (summed over labels)")
    names = sorted({k for p in on for k in p.counters}) or ["(none exported)"]
    width = max(map(len, names)) + 2
    print(f"{'counter':<{width}}" + "".join(f"{f'round {i + 1}':>14}" for i in range(n)))
    for name in names:
        print(f"{name:<{width}}" + "".join(f"{p.counters.get(name, 0):>14,.0f}" for p in on))


def main() -> None:
    full = dict(rounds=2, wrk_seconds=10, opens=300_000, execs=3000, walks=3, syscalls=3_000_000, settle=3.0,
                idle_wait=10.0)
    quick = dict(rounds=1, wrk_seconds=3, opens=100_000, execs=1000, walks=1, syscalls=1_000_000, settle=2.0,
                 idle_wait=5.0)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="~1 minute smoke run: one round, smaller sizes (each option names its quick value)")
    for k, v in full.items():
        ap.add_argument("--" + k.replace("_", "-"), type=type(v), default=None, help=f"default {v}, quick {quick[k]}")
    ap.add_argument("--nginx-workers", type=int, default=1, help="nginx worker processes (wrk takes the other core)")
    ap.add_argument("--perf-phase", action="store_true",
                    help="also a traced phase per round with `eunomia up --no-perf`: what the performance "
                         "features cost")
    ap.add_argument("--floor", action="store_true",
                    help="also a phase per round with empty programs on the probe's attach points "
                         "(bench/tracepoint_floor.py): what the attach points alone cost")
    ap.add_argument("--floor-split", action="store_true",
                    help="with --floor: also the floor of the syscall tracepoints alone and of the raw ones alone")
    ap.add_argument("--only", default="", help="comma-separated workloads to run (nginx,exec,walk,open,syscall); default all")
    args = ap.parse_args()
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if os.geteuid() != 0:
        raise SystemExit("overhead_bench starts `eunomia up` (BPF): run as root")
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: run `make bootstrap`")

    tmp = Path(tempfile.mkdtemp(prefix="overhead-bench-"))
    try:
        helper = build_helper(tmp)
        with Nginx(tmp, args.nginx_workers) as nginx:
            wls = workloads(args, helper, nginx, tmp / "f")
            if args.only:
                names = set(args.only.split(","))
                if names - {w.name for w in wls}:
                    raise SystemExit(f"--only: unknown workload(s) {sorted(names - {w.name for w in wls})}")
                wls = [w for w in wls if w.name in names]
            nginx.wrk(1)  # warm-up: caches, nginx workers, the file tree
            walk(1)
            off, on, noperf, floors, floor_tp, floor_raw = [], [], [], [], [], []
            for i in range(args.rounds):
                print(f"round {i + 1}/{args.rounds}: untraced ... {load()}", flush=True)
                off.append(untraced(wls))
                print(f"round {i + 1}/{args.rounds}: traced (eunomia up) ... {load()}", flush=True)
                on.append(traced(wls, tmp / f"data{i}", args))
                if args.floor:
                    print(f"round {i + 1}/{args.rounds}: empty programs on the probe's attach points ... {load()}",
                          flush=True)
                    floors.append(floor(wls))
                    if args.floor_split:
                        print(f"round {i + 1}/{args.rounds}: floor, syscall tracepoints only / raw only ... "
                              f"{load()}", flush=True)
                        floor_tp.append(floor(wls, raw=False))
                        floor_raw.append(floor(wls, tracepoints=False))
                if args.perf_phase:
                    print(f"round {i + 1}/{args.rounds}: traced, --no-perf ... {load()}", flush=True)
                    noperf.append(traced(wls, tmp / f"noperf{i}", args, ("--no-perf",)))
        report(wls, off, on, floors, floor_tp, floor_raw)
        if noperf:
            report_perf(wls, on, noperf)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
