"""`eunomia alerter` (the service), `eunomia alerts` (show alerts) and
`eunomia rules ...` (the engine's checker, services/alerter/rules_cli.py)."""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import orjson

from shared import busauth, subjects, terminal
from shared.priorities import PRIORITIES, at_least, normalize_priority

from .rules_cli import register_rules


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("alerter", help="run the alerter service (rules over enriched events)")
    p.add_argument("--rules", nargs="+", type=Path, help="rule files or directories (default: the shipped ruleset)")
    p.add_argument("--webhook", action="append", default=[], help="POST alerts to this URL (repeatable)")
    p.add_argument("--file", type=Path, help="append alerts as JSON lines to this file")
    p.add_argument("--stdout", action="store_true", help="print alerts as JSON lines")
    p.add_argument("--min-priority", default="DEBUG", help="raise no alerts below this priority")
    p.add_argument("--queue-group", default="alerter", help="NATS queue group shared by replicas")
    p.set_defaults(func=run_alerter)

    a = sub.add_parser("alerts", help="show alerts: recent ones (JetStream ALERTS) or live (--follow)")
    a.add_argument("--follow", "-f", action="store_true", help="print alerts as they are raised")
    a.add_argument("--json", action="store_true", help="one JSON object per line")
    a.add_argument("--priority", "-p", type=_priority_arg, metavar="|".join(PRIORITIES),
                   help="only this priority or more severe")
    a.add_argument("--last", type=int, default=20, help="without --follow: how many recent alerts (default 20)")
    a.set_defaults(func=alerts)

    register_rules(sub)


def run_alerter(args: argparse.Namespace) -> int:
    from services.cli.main import common_config
    from shared.service import run_main

    from .config import AlerterConfig
    from .service import AlerterService

    kw = dict(webhooks=tuple(args.webhook), file=args.file, stdout=args.stdout, min_priority=args.min_priority,
              queue_group=args.queue_group)
    if args.rules:
        kw["rules"] = tuple(args.rules)
    cfg, common = AlerterConfig(**kw), common_config(args)  # ConfigError: reported by main
    run_main(lambda: AlerterService(cfg, common))
    return 0


def format_alert(a: dict) -> str:
    ts = a.get("ts")
    when = time.strftime("%H:%M:%S", time.localtime(ts / 1e9)) if isinstance(ts, int) else "--:--:--"
    ctr = a.get("container") or {}
    where = ctr.get("name") or (ctr.get("id") or "")[:12] or "host"
    return terminal.escape(f"{when} {a.get('priority', '?'):<8} [{a.get('rule')}] {where}: {a.get('output')}")


def _priority_arg(v: str) -> str:
    p = normalize_priority(v)
    if p is None:
        raise argparse.ArgumentTypeError(f"{v!r} is not a priority: one of {', '.join(PRIORITIES)}")
    return p


def _wanted(a: dict, priority: str | None) -> bool:
    if not priority:
        return True
    return at_least(a.get("priority", "DEBUG"), priority)


def _print(a: dict, as_json: bool) -> None:
    sys.stdout.write(terminal.json_line(orjson.dumps(a).decode()) if as_json else format_alert(a))
    sys.stdout.write("\n")
    sys.stdout.flush()


def alerts(args: argparse.Namespace) -> int:
    from services.cli.main import common_config

    common = common_config(args)
    try:
        return asyncio.run(_alerts(args, common))
    except KeyboardInterrupt:
        return 130


async def _alerts(args: argparse.Namespace, common) -> int:
    import nats

    async def quiet(e: Exception) -> None:
        pass

    try:
        nc = await asyncio.wait_for(nats.connect(
            servers=common.servers, connect_timeout=3, max_reconnect_attempts=0, allow_reconnect=False,
            error_cb=quiet, name="eunomia-alerts", **busauth.role_kwargs(common, busauth.ADMIN)), 5)
    except Exception as e:
        print(f"eunomia alerts: cannot reach NATS at {common.nats_url}: {str(e) or type(e).__name__}"
              f"{busauth.hint(common, busauth.ADMIN)}", file=sys.stderr)
        return 1
    try:
        if args.follow:
            return await _follow(nc, args)
        return await _recent(nc, args)
    finally:
        await nc.close()


async def _follow(nc, args) -> int:
    from shared.bus import BadMessage, decode_batch

    sub = await nc.subscribe(subjects.ALERT_ALL, pending_msgs_limit=4096)
    await nc.flush()
    print(f"following alerts on {subjects.ALERT_ALL} (Ctrl-C to stop)", file=sys.stderr)
    async for msg in sub.messages:
        try:
            batch = decode_batch(msg.data)
        except BadMessage as e:
            print(f"skipped malformed message on {msg.subject}: {e}", file=sys.stderr)
            continue
        for a in batch:
            if _wanted(a, args.priority):
                _print(a, args.json)
    return 0


async def _recent(nc, args) -> int:
    from nats.js.errors import NotFoundError

    from shared.bus import BadMessage, decode_batch
    from shared.streams import ALERTS

    js = nc.jetstream()
    try:
        info = await js.stream_info(ALERTS)
    except NotFoundError:
        print(f"no {ALERTS} stream on {nc.connected_url.netloc if nc.connected_url else 'NATS'}: recent alerts "
              "are kept once the store (or `eunomia up`) has created it; use --follow for live alerts",
              file=sys.stderr)
        return 1
    except Exception as e:
        print(f"eunomia alerts: JetStream unavailable ({e}); use --follow for live alerts", file=sys.stderr)
        return 1
    found: list[dict] = []
    seq = info.state.last_seq
    while seq >= max(info.state.first_seq, 1) and len(found) < args.last:
        try:
            msg = await js.get_msg(ALERTS, seq)
            batch = decode_batch(msg.data)
        except (NotFoundError, BadMessage):
            batch = []
        found[:0] = [a for a in batch if _wanted(a, args.priority)]
        seq -= 1
    for a in found[-args.last:] if args.last > 0 else []:
        _print(a, args.json)
    if not found:
        print("no alerts stored", file=sys.stderr)
    return 0
