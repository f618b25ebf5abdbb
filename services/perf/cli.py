"""`eunomia top` and `eunomia profile`: per-container performance from the probes, named by the store."""
from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time

import orjson

from shared import subjects
from shared.config import ConfigError
from shared.service import stop_on_signals

from .formats import FORMATS, folded_text, speedscope, svg
from .view import SORT_KEYS, NotFound, top_rows

COLUMNS = (("container", "CONTAINER", 24), ("node", "NODE", 10), ("cpu", "CPU", 6), ("events_s", "EV/S", 8),
           ("block_bytes_s", "BLK B/S", 10), ("file_bytes_s", "FILE B/S", 10),
           ("net_bytes_s", "NET B/S", 10), ("connects_s", "CONN/S", 7),
           ("runq_p99_ms", "RUNQ99ms", 9),
           ("oom_kills", "OOM", 4), ("alerts", "ALERTS", 6))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("top", help="live per-container table: CPU, events/s, block I/O, connects, run-queue p99")
    p.add_argument("--sort", choices=sorted(SORT_KEYS), default="cpu", help="column to sort by (default cpu)")
    p.add_argument("--node", help="only this node")
    p.add_argument("--namespace", help="only containers of this Kubernetes namespace")
    p.add_argument("--interval", type=float, default=2.0, help="refresh every N seconds (default 2)")
    p.add_argument("--once", action="store_true", help="print one table and exit")
    p.add_argument("--json", action="store_true", help="JSON rows (with --once: one array)")
    p.add_argument("--hosts", action="store_true", help="also show cgroups that are not containers")
    p.set_defaults(func=_top)

    p = sub.add_parser("profile", help="CPU profile of a container (or a pod's containers)")
    p.add_argument("container", nargs="?", help="container name or id prefix")
    p.add_argument("--pod", help="all containers of this Kubernetes pod")
    p.add_argument("--seconds", type=float, default=10.0, help="sample for N seconds from now (default 10)")
    p.add_argument("--last", type=float, help="instead, the probes' recent (continuous) profile of the last N seconds")
    p.add_argument("--since", help="instead, the store's continuous profile from this time: ISO-8601, ns since "
                                   "the epoch, or an age such as 90s, 30m, 2h, 7d")
    p.add_argument("--until", help="with --since: up to this time (default now), same forms")
    p.add_argument("--format", choices=FORMATS, default="folded", help="folded (default), speedscope, svg")
    p.add_argument("-o", "--output", help="write to this file (default stdout)")
    p.set_defaults(func=_profile)


async def _connect(common):
    import nats

    from shared.bus import Bus
    from shared.stats import Stats
    try:
        nc = await nats.connect(servers=common.servers, name="eunomia-perf-cli", connect_timeout=3,
                                max_reconnect_attempts=4, reconnect_time_wait=0.5)
    except (nats.errors.NoServersError, OSError) as e:
        raise ConnectionError(f"NATS not reachable at {common.nats_url}: {e or type(e).__name__}") from None
    return Bus(nc, Stats("perf-cli"))


async def _containers(bus) -> list[dict]:
    from services.store.client import StoreClient
    try:
        rows = await StoreClient(bus, timeout=5.0).containers()
    except Exception as e:
        print(f"eunomia: container names unavailable (store: {e or type(e).__name__})", file=sys.stderr)
        return []
    return rows if isinstance(rows, list) else []


def _table(rows: list[dict]) -> str:
    head = " ".join(f"{t:<{w}}" if k == "container" or k == "node" else f"{t:>{w}}" for k, t, w in COLUMNS)
    lines = [head]
    for r in rows:
        cells = []
        for k, _, w in COLUMNS:
            v = r.get(k)
            if k == "cpu":
                v = f"{v * 100:.1f}%"
            elif v is None:
                v = "-"
            cells.append(f"{str(v)[:w]:<{w}}" if k in ("container", "node") else f"{str(v):>{w}}")
        lines.append(" ".join(cells))
    return "\n".join(lines)


def _top(args: argparse.Namespace) -> int:
    from services.cli.main import common_config
    if args.interval < 0.2:
        raise ConfigError("--interval must be >= 0.2 s")
    try:
        return asyncio.run(top(common_config(args), args))
    except ConnectionError as e:
        print(f"eunomia top: {e}", file=sys.stderr)
        return 1


async def top(common, args: argparse.Namespace, out=None) -> int:
    from services.store.client import StoreClient

    from .client import PerfBoard, alert_counts
    out = out or sys.stdout
    stop = asyncio.Event()
    stop_on_signals(stop)
    bus = await _connect(common)
    board = PerfBoard()
    try:
        await bus.subscribe_raw(subjects.PERF_ALL, board.on_message)
        await bus.nc.flush()
        # rates need two readings at the probe: wait for a message, then one more round
        deadline = time.monotonic() + max(10.0, 3 * args.interval)
        while not stop.is_set():
            board.updated.clear()
            try:
                await asyncio.wait_for(board.updated.wait(), max(0.1, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                if not board.latest():
                    print("eunomia top: no probe sent performance figures (is a probe running with perf on?)",
                          file=sys.stderr)
                    return 1
            rows = top_rows(board.latest(), await _containers(bus), await alert_counts(StoreClient(bus, timeout=5.0)),
                            node=args.node, namespace=args.namespace, sort=args.sort, hosts=args.hosts)
            if args.once:
                if all(r["cpu"] == 0 for r in rows) and time.monotonic() < deadline - args.interval:
                    continue  # first readings carry no rates yet
                out.write((orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() if args.json
                           else _table(rows)) + "\n")
                return 0
            if args.json:
                out.write(orjson.dumps({"ts": time.time_ns(), "rows": rows}).decode() + "\n")
            else:
                out.write("\x1b[H\x1b[2J" + time.strftime("%H:%M:%S ") + f"{len(rows)} containers, "
                          f"sorted by {args.sort}\n" + _table(rows) + "\n")
            out.flush()
            try:
                await asyncio.wait_for(stop.wait(), args.interval)
            except asyncio.TimeoutError:
                pass
            deadline = time.monotonic() + max(10.0, 3 * args.interval)
        return 0
    finally:
        await bus.close()


def _profile(args: argparse.Namespace) -> int:
    from services.cli.main import common_config
    if bool(args.container) == bool(args.pod):
        raise ConfigError("name one container, or --pod NAME")
    if not 0 < args.seconds <= 600 or (args.last is not None and not 0 < args.last <= 86400):
        raise ConfigError("--seconds must be in (0, 600], --last in (0, 86400]")
    if args.until is not None and args.since is None:
        raise ConfigError("--until needs --since")
    if args.since is not None and args.last is not None:
        raise ConfigError("--since reads the store, --last the probes: not both")
    args.since_ns = when(args.since, "--since") if args.since is not None else None
    args.until_ns = when(args.until, "--until") if args.until is not None else None
    try:
        return asyncio.run(profile(common_config(args), args))
    except ConnectionError as e:
        print(f"eunomia profile: {e}", file=sys.stderr)
        return 1


def when(text: str, option: str) -> int:
    """Wall-clock ns from an age ("30m": that long ago), ns since the epoch or ISO-8601."""
    from services.api.params import parse_time
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if m:
        return time.time_ns() - int(float(m[1]) * AGE_UNITS[m[2]] * 1e9)
    try:
        return parse_time(option, text)
    except ValueError as e:
        raise ConfigError(str(e)) from None


AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


async def profile(common, args: argparse.Namespace, out=None) -> int:
    from services.store.client import StoreClient, StoreQueryError, StoreUnavailable

    from .client import request_profile, stored_profile
    bus = await _connect(common)
    try:
        since = time.time_ns() - int(args.last * 1e9) if args.last is not None else None
        stored_since = getattr(args, "since_ns", None)
        if since is None and stored_since is None:
            print(f"sampling for {args.seconds:g} s ...", file=sys.stderr, flush=True)
        try:
            if stored_since is not None:
                prof = await stored_profile(StoreClient(bus, timeout=10.0), await _containers(bus),
                                            name=args.container, pod=args.pod, since_ns=stored_since,
                                            until_ns=getattr(args, "until_ns", None))
            else:
                prof = await request_profile(bus, await _containers(bus), name=args.container, pod=args.pod,
                                             seconds=args.seconds, since_ns=since)
        except NotFound as e:
            print(f"eunomia profile: {e}", file=sys.stderr)
            return 1
        except (StoreQueryError, StoreUnavailable) as e:
            print(f"eunomia profile: store: {e}", file=sys.stderr)
            return 1
    finally:
        await bus.close()
    for err in prof["errors"]:
        print(f"eunomia profile: {err}", file=sys.stderr)
    if prof["errors"] and not prof["samples"] and len(prof["errors"]) == len(prof["containers"]):
        return 1
    title = args.pod or args.container
    if args.format == "folded":
        text = folded_text(prof["folded"])
    elif args.format == "speedscope":
        text = orjson.dumps(speedscope(prof["folded"], title)).decode()
    else:
        text = svg(prof["folded"], title)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    else:
        (out or sys.stdout).write(text)
    print(f"{prof['samples']} samples ({prof['truncated']} with truncated user stacks) at {prof.get('hz')} Hz "
          f"from {len(prof['containers'])} container(s)", file=sys.stderr)
    return 0
