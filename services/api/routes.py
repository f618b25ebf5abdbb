"""HTTP handlers: /api/v1/* (token required), /healthz, /metrics, the dashboard."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nats.errors
from aiohttp import web

from services.perf import formats
from services.perf import view as perfview
from services.perf.client import alert_counts, request_profile, stored_profile
from services.store.client import StoreQueryError, StoreUnavailable
from shared import log

from . import auth, openapi, params

if TYPE_CHECKING:
    from .service import ApiService

_log = log.get("api.routes")
WEB_DIR = Path(__file__).parent / "web"
SVC_KEY: web.AppKey["ApiService"] = web.AppKey("svc")


def _svc(request: web.Request) -> "ApiService":
    return request.app[SVC_KEY]


async def _store_call(request: web.Request, spec: dict, call) -> web.Response:
    svc = _svc(request)
    try:
        filters = params.parse(request.query, spec)
    except params.BadParam as e:
        svc.stats.inc("api_bad_requests_total", param=e.param if e.param in spec else "unknown")
        return web.json_response({"error": str(e)}, status=400)
    try:
        result = await call(svc.store, filters)
    except StoreQueryError as e:
        svc.stats.inc("api_store_refused_total")
        return web.json_response({"error": f"store refused the query: {e}"}, status=400)
    except (StoreUnavailable, nats.errors.Error, ConnectionError) as e:
        svc.stats.inc("api_store_unavailable_total")
        return web.json_response({"error": f"store unavailable: {e or type(e).__name__}"}, status=503)
    return web.json_response(result)


def _items(x: Any) -> dict:
    return {"items": x if isinstance(x, list) else []}


async def events(request: web.Request) -> web.Response:
    return await _store_call(request, params.EVENT_PARAMS, lambda s, f: s.events(**f))


async def alerts(request: web.Request) -> web.Response:
    return await _store_call(request, params.ALERT_PARAMS, lambda s, f: s.alerts(**f))


async def containers(request: web.Request) -> web.Response:
    async def call(s, f):
        return _items(await s.containers())
    return await _store_call(request, {}, call)


async def process_tree(request: web.Request) -> web.Response:
    async def call(s, f):
        return _items(await s.process_tree(**f))
    return await _store_call(request, params.TREE_PARAMS, call)


async def network_graph(request: web.Request) -> web.Response:
    return await _store_call(request, params.GRAPH_PARAMS, lambda s, f: s.network_graph(**f))


async def top(request: web.Request) -> web.Response:
    """Per-container table of `eunomia top` (?sort=cpu|events|block|connects|runq|name, ?node, ?namespace)."""
    svc = _svc(request)
    q = request.query
    sort = q.get("sort", "cpu")
    if sort not in perfview.SORT_KEYS:
        svc.stats.inc("api_bad_requests_total", param="sort")
        return web.json_response({"error": f"sort: {sort!r} not in {sorted(perfview.SORT_KEYS)}"}, status=400)
    try:
        containers = await svc.store.containers()
    except Exception as e:
        svc.stats.inc("api_store_unavailable_total")
        return web.json_response({"error": f"store unavailable: {e or type(e).__name__}"}, status=503)
    rows = perfview.top_rows(svc.perf.latest(), containers if isinstance(containers, list) else [],
                             await alert_counts(svc.store), node=q.get("node"), namespace=q.get("namespace"),
                             sort=sort)
    return web.json_response({"items": rows})


async def profile(request: web.Request) -> web.Response:
    """CPU profile of ?container=NAME or ?pod=NAME: ?seconds=N from now (1-60), ?last=N seconds of
    the probes' recent history, or ?since=T[&until=T] from the store's continuous profile;
    ?format=folded (text) | speedscope (JSON) | json (folded stacks as an object)."""
    svc = _svc(request)
    q = request.query
    fmt = q.get("format", "json")
    name, pod = q.get("container"), q.get("pod")
    try:
        if bool(name) == bool(pod):
            raise ValueError("name one of container, pod")
        if fmt not in ("json", "folded", "speedscope"):
            raise ValueError(f"format: {fmt!r} not in json, folded, speedscope")
        seconds = float(q.get("seconds", "5"))
        last = float(q["last"]) if "last" in q else None
        if not 0 < seconds <= 60 or (last is not None and not 0 < last <= 86400):
            raise ValueError("seconds must be in (0, 60], last in (0, 86400]")
        since = params.parse_time("since", q["since"]) if "since" in q else None
        until = params.parse_time("until", q["until"]) if "until" in q else None
        if until is not None and since is None:
            raise ValueError("until needs since")
        if since is not None and (last is not None or "seconds" in q):
            raise ValueError("since/until read the store: not with seconds or last")
        if since is not None and until is not None and since > until:
            raise ValueError("since is later than until")
    except ValueError as e:  # params.BadParam too
        svc.stats.inc("api_bad_requests_total", param="profile")
        return web.json_response({"error": str(e)}, status=400)
    try:
        containers = await svc.store.containers()
        if since is not None:
            prof = await stored_profile(svc.store, containers if isinstance(containers, list) else [], name=name,
                                        pod=pod, since_ns=since, until_ns=until)
        else:
            prof = await request_profile(svc.bus, containers if isinstance(containers, list) else [], name=name,
                                         pod=pod, seconds=seconds,
                                         since_ns=time.time_ns() - int(last * 1e9) if last is not None else None)
    except perfview.NotFound as e:
        return web.json_response({"error": str(e)}, status=404)
    except (StoreUnavailable, nats.errors.Error, ConnectionError) as e:
        svc.stats.inc("api_store_unavailable_total")
        return web.json_response({"error": f"store unavailable: {e or type(e).__name__}"}, status=503)
    if prof["errors"] and not prof["samples"]:
        return web.json_response({"error": "; ".join(prof["errors"])}, status=502)
    if fmt == "folded":
        return web.Response(text=formats.folded_text(prof["folded"]), content_type="text/plain")
    if fmt == "speedscope":
        return web.json_response(formats.speedscope(prof["folded"], name or pod))
    return web.json_response(prof)


async def alerts_ws(request: web.Request) -> web.StreamResponse:
    return await _svc(request).hub.serve(request)


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(openapi.document())


async def healthz(request: web.Request) -> web.Response:
    """200 while the API reaches the bus, else 503 (a load balancer or probe takes it out)."""
    svc = _svc(request)
    up = svc.bus.nc.is_connected
    return web.json_response({"status": "ok" if up else "unhealthy", "service": "api", "node": svc.common.node,
                              "bus_connected": up}, status=200 if up else 503)


async def metrics(request: web.Request) -> web.Response:
    svc = _svc(request)
    if svc.cfg.metrics_auth:
        why = auth.check(request, svc.token)
        if why:
            return auth.unauthorized(why)
    text = await svc.metrics.render()
    return web.Response(text=text, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@web.middleware
async def api_auth(request: web.Request, handler):
    """Every /api route needs the bearer token (the WebSocket may pass it as ?token=)."""
    if request.path.startswith("/api/") and request.method != "OPTIONS":
        svc = _svc(request)
        why = auth.check(request, svc.token, allow_query=request.path == "/api/v1/alerts/ws")
        if why:
            svc.stats.inc("api_unauthorized_total")
            return auth.unauthorized(why)
    return await handler(request)


@web.middleware
async def errors(request: web.Request, handler):
    """JSON for every /api error; count requests by route and status (bounded labels)."""
    svc = _svc(request)
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    try:
        resp = await handler(request)
    except web.HTTPException as e:
        svc.stats.inc("api_requests_total", route=route, status=e.status)
        if request.path.startswith("/api/") and e.status >= 400:
            return web.json_response({"error": f"{e.status} {e.reason}: {request.method} {request.path}"},
                                     status=e.status)
        raise
    except Exception:
        _log.exception("handler failed: %s %s", request.method, request.path)
        resp = web.json_response({"error": "internal error (logged)"}, status=500)
    svc.stats.inc("api_requests_total", route=route, status=resp.status)
    return resp


def cors(origin: str):
    @web.middleware
    async def mw(request: web.Request, handler):
        if request.method == "OPTIONS" and request.headers.get("Origin") == origin:
            resp: web.StreamResponse = web.Response(status=204)
        else:
            resp = await handler(request)
        if request.headers.get("Origin") == origin:
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Access-Control-Allow-Headers"] = "Authorization"
            resp.headers["Access-Control-Allow-Methods"] = "GET, OPTIONS"
            resp.headers["Vary"] = "Origin"
        return resp
    return mw


def build_app(svc: "ApiService") -> web.Application:
    mws = [errors] + ([cors(svc.cfg.cors_origin)] if svc.cfg.cors_origin else []) + [api_auth]
    app = web.Application(middlewares=mws, client_max_size=64 * 1024)
    app[SVC_KEY] = svc
    r = app.router
    r.add_get("/api/v1/events", events)
    r.add_get("/api/v1/alerts", alerts)
    r.add_get("/api/v1/alerts/ws", alerts_ws)
    r.add_get("/api/v1/containers", containers)
    r.add_get("/api/v1/processes/tree", process_tree)
    r.add_get("/api/v1/network/graph", network_graph)
    r.add_get("/api/v1/top", top)
    r.add_get("/api/v1/profile", profile)
    r.add_get("/api/v1/openapi.json", openapi_json)
    r.add_get("/healthz", healthz)
    r.add_get("/metrics", metrics)
    r.add_get("/", index)
    r.add_static("/static/", WEB_DIR, append_version=False)
    return app
