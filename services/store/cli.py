"""`eunomia store`."""
from __future__ import annotations

import argparse

from shared.service import run_main

from .config import DAY_S, StoreConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("store", help="store events and alerts (SQLite or PostgreSQL) and answer queries")
    p.add_argument("--store", default="", metavar="URL",
                   help="sqlite:///path.db (default <data-dir>/eunomia.db) or postgresql://user@host/db")
    p.add_argument("--retention-days", type=float, default=7.0, help="delete events/alerts older than this")
    p.add_argument("--max-rows", type=int, default=StoreConfig.max_rows, help="keep at most this many events")
    p.add_argument("--max-bytes", type=int, default=StoreConfig.max_bytes, help="keep the database under this size")
    p.set_defaults(func=_store)


def _store(args: argparse.Namespace) -> int:
    from services.cli.main import common_config

    from .service import StoreService

    cfg = StoreConfig(url=args.store, retention_max_age_s=args.retention_days * DAY_S, max_rows=args.max_rows,
                      max_bytes=args.max_bytes)
    common = common_config(args)
    run_main(lambda: StoreService(cfg, common))
    return 0
