"""`eunomia up`."""
from __future__ import annotations

import argparse

from services.probe.cli import add_perf_args, perf_overrides
from services.probe.config import PLAN_RINGBUF_PAGES
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
    p.add_argument("--ringbuf-pages", type=int, default=None,
                   help="probe ring buffer size in pages, a power of two (default 1024 with --capture plan, "
                        "4096 with --capture all)")
    p.add_argument("--store", default=None, help="store URL: sqlite:///path (default) or postgresql://...")
    add_perf_args(p)
    p.set_defaults(func=_up)
    register_bus(sub)


def _up(args: argparse.Namespace) -> int:
    from services.cli.main import common_config

    from .supervisor import Supervisor

    probe: dict = {"capture": args.capture, "syscall_profiles": args.syscall_profiles}
    if args.ringbuf_pages or args.capture == "plan":
        probe["ringbuf_pages"] = args.ringbuf_pages or PLAN_RINGBUF_PAGES
    overrides: dict[str, dict] = {"api": {}, "store": {}, "probe": probe}
    probe.update(perf_overrides(args))
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


def register_bus(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bus", help="bus identities: credentials and the nats-server authorization")
    bsub = p.add_subparsers(dest="bus_command", metavar="ACTION", required=True)
    i = bsub.add_parser("init", help="create missing credentials (0600 files in a 0700 dir) and write the "
                                     "nats-server authorization file (bcrypt hashes and permissions)")
    i.add_argument("--nodes", required=True,
                   help="comma-separated node names (each gets a probe-<node> and enricher-<node> identity)")
    i.add_argument("--creds-dir", help="credentials directory (default $EUNOMIA_NATS_CREDS or <data-dir>/bus)")
    i.add_argument("--server-config", help="write the authorization block here (default <creds-dir>/auth.conf)")
    i.add_argument("--owner", help="user that runs nats-server (gets read access to the authorization file)")
    i.set_defaults(func=_bus_init)


def _bus_init(args: argparse.Namespace) -> int:
    import os
    import shutil
    from pathlib import Path

    from services.cli.main import common_config
    from shared import busauth, subjects
    from shared.config import ConfigError

    nodes = [n.strip() for n in args.nodes.split(",") if n.strip()]
    bad = [n for n in nodes if not subjects.valid_token(n)]
    if not nodes or bad:
        raise ConfigError(f"--nodes: {bad or 'none given'} not valid node names")
    directory = Path(args.creds_dir) if args.creds_dir else busauth.creds_dir(common_config(args).data_dir)
    creds = busauth.ensure(directory, busauth.users(nodes))
    out = Path(args.server_config) if args.server_config else directory / "auth.conf"
    text = busauth.server_authorization(creds)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    if args.owner:
        shutil.chown(out, user=args.owner)
    print(f"credentials: {directory} ({len(creds)} identities: {', '.join(sorted(creds))})")
    print(f"nats-server authorization: {out} (include it from nats.conf)")
    return 0
