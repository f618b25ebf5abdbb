"""`eunomia rules check FILE...` and `eunomia rules fields`.

The alerter's cli.py calls `register_rules(subparsers)`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register_rules(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rules", help="check rule files, list rule fields")
    rsub = p.add_subparsers(dest="rules_command", metavar="SUBCOMMAND")
    c = rsub.add_parser("check", help="load rule files (in order, later override) and report errors")
    c.add_argument("files", nargs="+", type=Path, help="rule files or directories of *.yaml")
    c.set_defaults(func=check)
    f = rsub.add_parser("fields", help="list the fields conditions and outputs can use")
    f.set_defaults(func=fields)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def check(args: argparse.Namespace) -> int:
    from .engine import RuleError, load_rules

    try:
        rs = load_rules(args.files)
    except RuleError as e:
        for err in e.errors:
            print(err, file=sys.stdout)
        print(f"{len(e.errors)} error(s)", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - an error message, never a traceback
        print(f"{args.files[0]}:1:1: cannot load rules: {type(e).__name__}: {e}", file=sys.stdout)
        print("1 error(s)", file=sys.stderr)
        return 1
    for w in rs.warnings:
        print(f"warning: {w}", file=sys.stderr)
    s = rs.summary()
    print(f"{s['rules']} rules ({s['enabled']} enabled), {s['macros']} macros, {s['lists']} lists "
          f"from {len(rs.files)} file(s)")
    per_kind = ", ".join(f"{k}={n}" for k, n in sorted(s["per_kind"].items()))
    print(f"rules per kind: {per_kind or 'none'} (any kind: {s['any_kind']})")
    _print_plan(rs.filter_plan("rules check"))
    return 0


def _print_plan(plan) -> None:
    """What the kernel will emit for these rules, and which rules force a kind to full capture."""
    bounded = {}
    for p in plan.patterns:
        bounded[p.kind] = bounded.get(p.kind, 0) + 1
    print(f"kernel filter: {len(plan.kinds)} kinds emitted: {', '.join(sorted(plan.kinds))}")
    if plan.containers_only:
        print(f"  from containers only (every rule on them asks for a container): "
              f"{', '.join(sorted(plan.containers_only))}")
    for kind, n in sorted(bounded.items()):
        print(f"  {kind}: {n} path pattern(s)")
    for what, rules in sorted(plan.full.items()):
        kind, access = what.split(" ", 1)
        print(f"  {kind} ({access}): every path sent, because of: {', '.join(repr(r) for r in rules)}")
    if plan.env:
        print(f"  execenv: exec environment variables watched: {', '.join(plan.env)}")


def fields(args: argparse.Namespace) -> int:
    from .engine.fields import ARG_NAMES, FIELDS

    for name, f in FIELDS.items():
        print(f"{name:28} {f.type:5} {f.doc}")
    print(f"{'evt.arg.NAME':28} {'any':5} NAME is one of: {', '.join(sorted(ARG_NAMES))}")
    return 0
