"""`eunomia up`."""
from __future__ import annotations

import argparse

from shared.service import run_main

from .config import ALL_SERVICES, SupervisorConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="run the whole single-node stack: embedded NATS and every service")
    p.add_argument("--only", nargs="+", choices=ALL_SERVICES, help="run only these services")
    p.add_argument("--external-nats", action="store_true", help="use --nats instead of starting nats-server")
    p.add_argument("--nats-port", type=int, default=4222)
    p.set_defaults(func=_up)


def _up(args: argparse.Namespace) -> int:
    from services.cli.main import common_config

    from .supervisor import Supervisor

    cfg = SupervisorConfig(services=tuple(args.only or ALL_SERVICES), embedded_nats=not args.external_nats,
                           nats_port=args.nats_port)
    common = common_config(args)
    run_main(lambda: Supervisor(cfg, common))
    return 0
