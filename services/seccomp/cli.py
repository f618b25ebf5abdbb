"""`eunomia seccomp CONTAINER [-o FILE]`: a seccomp profile from what the container did."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("seccomp", help="generate a seccomp profile from the syscalls a container made")
    p.add_argument("container", metavar="CONTAINER", help="container name or id (prefix)")
    p.add_argument("-o", "--output", help="write the profile to FILE (default: stdout)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the probe (default 5)")
    p.add_argument("--no-baseline", action="store_true",
                   help="allow only what was recorded, without the minimum a container needs to start")
    p.add_argument("--reset", action="store_true", help="forget the container's record after reading it")
    p.set_defaults(func=_seccomp)


def _seccomp(args: argparse.Namespace) -> int:
    from services.cli.main import common_config

    from .generate import GenerateError, GenerateOptions, generate

    opts = GenerateOptions(container=args.container, timeout=args.timeout, baseline=not args.no_baseline,
                           reset=args.reset)
    try:
        res = asyncio.run(generate(common_config(args), opts))
    except GenerateError as e:
        print(f"eunomia seccomp: {e}", file=sys.stderr)
        return 1
    if res.unknown:
        print(f"eunomia seccomp: warning: syscall numbers without an x86_64 name left out: {res.unknown}",
              file=sys.stderr)
    text = json.dumps(res.profile, indent=2) + "\n"
    if args.output:
        try:
            _write_atomically(Path(args.output), text)
        except OSError as e:
            print(f"eunomia seccomp: cannot write {args.output}: {e.strerror or e}", file=sys.stderr)
            return 1
        n = len(res.profile["syscalls"][0]["names"])
        print(f"eunomia seccomp: {n} syscalls allowed for {res.container.name or res.container.id[:12]} "
              f"(cgroup {res.container.cgroup_id}, via {res.container.source}) -> {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
