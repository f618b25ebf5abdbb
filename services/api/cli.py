"""`eunomia api`: the HTTP API, /metrics and the dashboard as a standalone service."""
from __future__ import annotations

import argparse
import asyncio

from shared import log
from shared.service import run_loop, stop_on_signals


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("api", help="serve the HTTP API, Prometheus /metrics and the web dashboard")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1: loopback only)")
    p.add_argument("--port", type=int, default=8080, help="listen port (default 8080)")
    p.add_argument("--token-file", help="bearer token file (default <data-dir>/api-token, created 0600)")
    p.add_argument("--cors-origin", help="allow this browser origin (CORS is off by default)")
    p.add_argument("--metrics-auth", action="store_true", help="require the token on /metrics too")
    p.set_defaults(func=_api)


def _api(args: argparse.Namespace) -> int:
    from services.cli.main import common_config

    from .config import ApiConfig
    from .service import ApiService

    cfg = ApiConfig(host=args.host, port=args.port, token_file=args.token_file, cors_origin=args.cors_origin,
                    metrics_auth=args.metrics_auth)
    common = common_config(args)
    log.setup(args.log_level)

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        svc = ApiService(cfg, common)
        async with svc:
            print(f"Eunomia API on {svc.url}/api/v1  metrics {svc.url}/metrics", flush=True)
            where = "the configured token" if cfg.token else cfg.token_path(common.data_dir)
            print(f"Dashboard: {svc.dashboard_url}  (token in {where})", flush=True)
            await svc.run(stop)

    run_loop(main())
    return 0
