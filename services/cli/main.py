"""The `eunomia` command. Each service package adds its own subcommands
through `services/<name>/cli.py: register(subparsers)`; each subcommand sets
`func(args) -> int`."""
from __future__ import annotations

import argparse
import importlib
import sys

from shared import log
from shared.config import CommonConfig, ConfigError

# Packages that contribute subcommands, in help order. Missing ones are skipped.
COMMAND_MODULES = [
    "services.supervisor.cli",   # up
    "services.probe.cli",        # probe
    "services.enricher.cli",     # enricher, events
    "services.alerter.cli",      # alerter, alerts, rules
    "services.store.cli",        # store
    "services.api.cli",          # api
    "services.seccomp.cli",      # seccomp
    "services.perf.cli",         # top, profile
]


def common_config(args: argparse.Namespace) -> CommonConfig:
    kw = {}
    if args.nats:
        kw["nats_url"] = args.nats
    if args.node:
        kw["node"] = args.node
    if args.data_dir:
        kw["data_dir"] = args.data_dir
    return CommonConfig(**kw)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eunomia", description="eBPF runtime monitor for containers")
    p.add_argument("--nats", help="NATS URL(s), comma separated (env EUNOMIA_NATS)")
    p.add_argument("--node", help="node name (env EUNOMIA_NODE, default hostname)")
    p.add_argument("--data-dir", help="data directory (env EUNOMIA_DATA, default /var/lib/eunomia)")
    p.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING, ERROR")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):
                continue
            raise
        mod.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log.setup(args.log_level)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"eunomia: configuration error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
