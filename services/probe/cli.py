"""`eunomia probe`: run the probe standalone (as root)."""
from __future__ import annotations

import argparse
import sys

from shared.service import run_main

from .config import DEFAULT_KINDS, ProbeConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="run the eBPF probe (root): kernel events -> eunomia.raw.<node>")
    p.add_argument("--kinds", help=f"comma-separated kinds to trace (default all: {','.join(DEFAULT_KINDS)})")
    p.add_argument("--exclude-pid", type=int, action="append", default=[], help="pid never traced (repeatable)")
    p.add_argument("--exclude-cgroup", action="append", default=[],
                   help="cgroup-v2 dir whose processes are never traced, e.g. system.slice/eunomia-store.service "
                        "(repeatable)")
    p.add_argument("--ringbuf-pages", type=int, default=None, help="ring buffer size in pages (power of two)")
    p.add_argument("--syscall-profiles", action="store_true",
                   help="record each container's syscalls for `eunomia seccomp` (a BPF program on every syscall)")
    p.add_argument("--capture", choices=("plan", "all"), default="plan",
                   help="plan: emit only what the alerter's rules can use (default); all: everything")
    add_perf_args(p)
    p.set_defaults(func=_run)


def add_perf_args(p: argparse.ArgumentParser) -> None:
    """The performance options (`eunomia probe` and `eunomia up`)."""
    p.add_argument("--no-perf", action="store_true",
                   help="no performance figures (latency histograms, CPU time) and no CPU profiler")
    p.add_argument("--syscall-latency", action="store_true",
                   help="per-container syscall latency, top syscalls by total time (a BPF program on every syscall)")
    p.add_argument("--perf-detail", action="store_true",
                   help="also CPU time, run-queue latency, TCP RTT and network bytes per container (BPF programs "
                        "on every context switch and socket send/receive of the node)")
    p.add_argument("--profile-hz", type=int, default=None, help="CPU profile sampling rate (default 49; 0 = off)")


def perf_overrides(args: argparse.Namespace) -> dict:
    """ProbeConfig settings from add_perf_args' options."""
    kw: dict = {"syscall_latency": args.syscall_latency, "perf_detail": args.perf_detail}
    if args.no_perf:
        kw.update(perf=False, profile_hz=0)
    if args.profile_hz is not None:
        kw["profile_hz"] = args.profile_hz
    return kw


def _run(args: argparse.Namespace) -> int:
    from services.cli.main import common_config

    from .loader import ProbeLoadError
    from .service import ProbeService

    kw: dict = {"exclude_pids": tuple(args.exclude_pid), "exclude_cgroups": tuple(args.exclude_cgroup)}
    if args.kinds:
        kw["kinds"] = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    if args.ringbuf_pages:
        kw["ringbuf_pages"] = args.ringbuf_pages
    kw["capture"] = args.capture
    kw["syscall_profiles"] = args.syscall_profiles
    kw.update(perf_overrides(args))
    cfg, common = ProbeConfig(**kw), common_config(args)
    try:
        run_main(lambda: ProbeService(cfg, common))
    except ProbeLoadError as e:
        print(f"eunomia probe: {e}", file=sys.stderr)
        return 1
    return 0
