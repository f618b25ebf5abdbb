"""`eunomia enricher` (the service) and `eunomia events` (live enriched events)."""
from __future__ import annotations

import argparse
import asyncio
import sys

import orjson

from shared import busauth, log, subjects, terminal
from shared.config import ConfigError
from shared.service import run_main, stop_on_signals
from shared.stats import Stats

from .config import DEFAULT_CRI_SOCKETS, DEFAULT_SOCKETS, EnricherConfig
from .format import line, matches_container

_log = log.get("events")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("enricher", help="run the enricher service (raw events -> enriched events)")
    p.add_argument("--socket", action="append", dest="sockets", metavar="PATH",
                   help=f"container runtime Engine API socket (repeatable; default {', '.join(DEFAULT_SOCKETS)})")
    p.add_argument("--cri-socket", action="append", dest="cri_sockets", metavar="PATH",
                   help=f"CRI runtime (containerd, CRI-O) gRPC socket (repeatable; default "
                        f"{', '.join(DEFAULT_CRI_SOCKETS)}; 'none' disables)")
    p.add_argument("--lookup-timeout", type=float, default=2.0, help="max wait for a container lookup, s")
    p.set_defaults(func=_enricher)

    p = sub.add_parser("events", help="print enriched events as they happen (every node unless --node)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until interrupted")
    p.add_argument("--kind", "-k", action="append", help="only this kind (repeatable)")
    p.add_argument("--container", "-c",
                   help='only this container (name, id prefix, namespace/pod/container, or "host")')
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--seconds", type=float, default=3.0, help="without --follow: listen this long (default 3)")
    p.add_argument("--count", "-n", type=int, default=0, help="stop after this many events")
    p.set_defaults(func=_events)


def _enricher(args: argparse.Namespace) -> int:
    from services.cli.main import common_config

    from .service import EnricherService

    kw = {"lookup_timeout_s": args.lookup_timeout}
    if args.sockets:
        kw["runtime_sockets"] = tuple(args.sockets)
    if args.cri_sockets:
        kw["cri_sockets"] = tuple(s for s in args.cri_sockets if s != "none")
    cfg, common = EnricherConfig(**kw), common_config(args)
    run_main(lambda: EnricherService(cfg, common))
    return 0


def _events(args: argparse.Namespace) -> int:
    from services.cli.main import common_config

    common = common_config(args)
    for k in args.kind or ():
        if not subjects.valid_token(k):
            raise ConfigError(f"--kind: {k!r} is not a kind name")
    if args.seconds <= 0 or args.count < 0:
        raise ConfigError("--seconds must be > 0 and --count >= 0")
    try:
        return asyncio.run(follow(common, args))
    except ConnectionError as e:
        print(f"eunomia events: {e}", file=sys.stderr)
        return 1


def event_subjects(node: str | None, kinds: list[str] | None) -> list[str]:
    n = node or "*"
    if not kinds:
        return [subjects.EVENT_ALL] if node is None else [f"{subjects.PREFIX}.event.{n}.>"]
    return [subjects.event(n, k) for k in kinds]


async def follow(common, args: argparse.Namespace) -> int:
    import nats

    from shared.bus import Bus

    stop = asyncio.Event()
    stop_on_signals(stop)
    printed = 0
    out = sys.stdout

    async def handler(subject: str, events: list[dict]) -> None:
        nonlocal printed
        for ev in events:
            if args.count and printed >= args.count:
                break  # another subscription's handler got there first
            if args.container and not matches_container(ev, args.container):
                continue
            out.write(terminal.json_line(orjson.dumps(ev).decode()) + "\n" if args.json else line(ev) + "\n")
            printed += 1
            if args.count and printed >= args.count:
                stop.set()
                break
        out.flush()

    stats = Stats("events-cli")
    try:  # a few reconnect tries, then a clear error (the services' connect retries forever)
        nc = await nats.connect(servers=common.servers, name="eunomia-events", connect_timeout=3,
                                max_reconnect_attempts=4, reconnect_time_wait=0.5,
                                error_cb=_quiet, disconnected_cb=_quiet_disconnect,
                                **busauth.role_kwargs(common, busauth.ADMIN))
    except (nats.errors.NoServersError, OSError) as e:
        raise ConnectionError(f"NATS not reachable at {common.nats_url}: {e or type(e).__name__}"
                              f"{busauth.hint(common, busauth.ADMIN)}") from None
    bus = Bus(nc, stats)
    try:
        for subj in event_subjects(args.node, args.kind):  # every node unless --node is given
            await bus.subscribe_batches(subj, handler)
        await bus.nc.flush()
        print(f"listening on {common.nats_url} for {'events' if not args.kind else ', '.join(args.kind)}"
              f"{' of ' + args.container if args.container else ''} (node {args.node or '*'})",
              file=sys.stderr, flush=True)
        if args.follow:
            await stop.wait()
        else:
            try:
                await asyncio.wait_for(stop.wait(), args.seconds)
            except asyncio.TimeoutError:
                pass
            print(f"{printed} live events in {args.seconds:g} s; stored history comes from the store "
                  "(eunomia store / the API)", file=sys.stderr)
    finally:
        await bus.close()
    malformed = stats.total("bus_malformed_total")
    if malformed:
        print(f"skipped {malformed:g} malformed messages", file=sys.stderr)
    return 0


async def _quiet(e: Exception) -> None:
    _log.debug("NATS: %s", e)


async def _quiet_disconnect() -> None:
    _log.warning("disconnected from NATS")
