"""`eunomia up`."""
from __future__ import annotations

import argparse

from shared.service import run_main

from .config import ALL_SERVICES, SupervisorConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="run the whole single-node stack: embedded NATS and every service")
    p.add_argument("--only", nargs="+", choices=ALL_SERVICES, help="run only these services")
    p.add_argument("--external-nats", action="store_true", help="use --nats instead of starting nats-server")
    p.add_argument("--nats-port", type=int, default=4222, help="embedded nats-server port")
    p.add_argument("--api-host", default=None, help="API listen address (default 127.0.0.1)")
    p.add_argument("--api-port", type=int, default=None, help="API port (default 8080)")
    p.add_argument("--no-podman-api", action="store_true",
                   help="do not start `podman system service` when no container runtime API answers")
    p.add_argument("--syscall-profiles", action="store_true",
                   help="record each container's syscalls for `eunomia seccomp` (a BPF program on every syscall)")
    p.add_argument("--capture", choices=("plan", "all"), default="plan",
                   help="plan: the kernel emits only what the rules can use (default); all: every event, "
                        "for forensics")
    p.add_argument("--store", default=None, help="store URL: sqlite:///path (default) or postgresql://...")
    p.add_argument("--no-perf", action="store_true",
                   help="no performance figures (latency histograms, CPU time) and no CPU profiler")
    p.add_argument("--syscall-latency", action="store_true",
                   help="per-container syscall latency, top syscalls by total time (a BPF program on every syscall)")
    p.add_argument("--profile-hz", type=int, default=None, help="CPU profile sampling rate (default 49; 0 = off)")
    p.set_defaults(func=_up)


def _up(args: argparse.Namespace) -> int:
    from services.cli.main import common_config

    from .supervisor import Supervisor

    overrides: dict[str, dict] = {"api": {}, "store": {}, "probe": {"capture": args.capture,
                                                                              "syscall_profiles": args.syscall_profiles}}
    if args.no_perf:
        overrides["probe"].update(perf=False, profile_hz=0)
    if args.profile_hz is not None:
        overrides["probe"]["profile_hz"] = args.profile_hz
    if args.syscall_latency:
        overrides["probe"]["syscall_latency"] = True
    if args.api_host:
        overrides["api"]["host"] = args.api_host
    if args.api_port is not None:
        overrides["api"]["port"] = args.api_port
    if args.store:
        overrides["store"]["url"] = args.store
    cfg = SupervisorConfig(services=tuple(args.only or ALL_SERVICES), embedded_nats=not args.external_nats,
                           nats_port=args.nats_port, podman_api=not args.no_podman_api,
                           overrides=overrides)
    common = common_config(args)
    run_main(lambda: Supervisor(cfg, common))
    return 0
