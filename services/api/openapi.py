"""The OpenAPI 3 document of the HTTP API (hand-written, built from params.py)."""
from __future__ import annotations

from typing import Any

from . import params

_INT_PARAMS = {"pid", "limit"}


def _query(spec: dict) -> list[dict]:
    out = []
    for name in spec:
        schema: dict[str, Any] = {"type": "integer"} if name in _INT_PARAMS else {"type": "string"}
        if name == "limit":
            schema.update(minimum=1, maximum=params.MAX_LIMIT, default=params.DEFAULT_LIMIT)
        if name == "priority":
            schema["enum"] = list(params.PRIORITIES)
        out.append({"name": name, "in": "query", "required": False,
                    "description": params.DESCRIPTIONS.get(name, name), "schema": schema})
    return out


def _json(ref: str, desc: str) -> dict:
    return {"description": desc, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


_ERRORS = {
    "400": _json("Error", "a parameter is invalid; `error` names it and says why"),
    "401": _json("Error", "missing or invalid bearer token"),
    "503": _json("Error", "the store did not answer"),
}


def _get(op: str, summary: str, query: dict, ok: dict, tag: str) -> dict:
    return {"get": {"operationId": op, "summary": summary, "tags": [tag], "parameters": _query(query),
                    "responses": {"200": ok, **_ERRORS}}}


def document(version: str = "0.1.0") -> dict:
    obj = {"type": "object", "additionalProperties": True}
    return {
        "openapi": "3.0.3",
        "info": {"title": "Eunomia API", "version": version,
                 "description": "Events, alerts, containers, process trees and network graph of the "
                                "Eunomia eBPF runtime monitor. Every /api route needs `Authorization: "
                                "Bearer <token>` (the token is in <data_dir>/api-token)."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/events": _get("listEvents", "Search stored events, newest first", params.EVENT_PARAMS,
                                   _json("Page", "one page of events"), "events"),
            "/api/v1/alerts": _get("listAlerts", "Search stored alerts, newest first", params.ALERT_PARAMS,
                                   _json("Page", "one page of alerts"), "alerts"),
            "/api/v1/containers": _get("listContainers", "Containers seen in events", {},
                                       _json("ContainerList", "containers"), "containers"),
            "/api/v1/processes/tree": _get("processTree", "Process tree of a container or below a pid",
                                           params.TREE_PARAMS,
                                           _json("ProcessList", "root processes with children"), "processes"),
            "/api/v1/network/graph": _get("networkGraph", "Network graph: containers, hosts, external endpoints",
                                          params.GRAPH_PARAMS, _json("Graph", "nodes and edges"), "network"),
            "/api/v1/top": _get("top", "Per-container performance table (eunomia top), sorted descending",
                                {"sort": None, "node": None, "namespace": None},
                                _json("Page", "rows: container, node, cpu (cores), events_s, block_bytes_s, "
                                              "file_bytes_s, net_bytes_s, connects_s, runq_p99_ms, oom_kills, "
                                              "alerts"), "performance"),
            "/api/v1/profile": {"get": {
                "operationId": "profile", "summary": "CPU profile of a container or a pod's containers",
                "description": "Samples for `seconds` from now, returns the probes' recent profile of the "
                               "last `last` seconds, or the store's continuous profile from `since` to `until` "
                               "(windows of probe.profile_window_s, kept as long as events). "
                               "format=json: {samples, truncated, folded: {stack: n}, ...}; "
                               "folded: text, one `frame;frame;... count` line per stack; speedscope: "
                               "speedscope's JSON file format.",
                "tags": ["performance"], "parameters": _query({"container": None, "pod": None, "seconds": None,
                                                               "last": None, "since": None, "until": None,
                                                               "format": None}),
                "responses": {"200": {"description": "the profile", "content": {
                    "application/json": {"schema": obj}, "text/plain": {"schema": {"type": "string"}}}},
                    **_ERRORS, "404": _json("Error", "no such container known to the store"),
                    "502": _json("Error", "no probe answered")}}},
            "/api/v1/alerts/ws": {"get": {
                "operationId": "liveAlerts", "summary": "Live alerts over WebSocket",
                "description": "Upgrade to a WebSocket; each text frame is {\"type\": \"hello\"|\"alert\", "
                               "\"alert\": {...}}. Token by header or ?token=. A client that falls a full "
                               "queue behind is closed with code 1013.",
                "tags": ["alerts"],
                "parameters": [{"name": "token", "in": "query", "required": False,
                                "description": "bearer token (browsers cannot set WebSocket headers)",
                                "schema": {"type": "string"}}],
                "responses": {"101": {"description": "switching protocols"}, "401": _ERRORS["401"],
                              "503": _json("Error", "too many clients")}}},
            "/api/v1/openapi.json": {"get": {"operationId": "openapi", "summary": "This document", "tags": ["meta"],
                                             "responses": {"200": {"description": "OpenAPI 3 document",
                                                                   "content": {"application/json": {
                                                                       "schema": obj}}},
                                                           "401": _ERRORS["401"]}}},
            "/healthz": {"get": {"operationId": "healthz", "summary": "Liveness (no auth)", "tags": ["meta"],
                                 "security": [],
                                 "responses": {"200": {"description": "ok", "content": {
                                     "application/json": {"schema": obj}}}}}},
            "/metrics": {"get": {"operationId": "metrics",
                                 "summary": "Prometheus metrics aggregated from every service's heartbeat",
                                 "tags": ["meta"], "security": [],
                                 "responses": {"200": {"description": "Prometheus text format 0.0.4",
                                                       "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"],
                          "properties": {"error": {"type": "string"}}},
                "Page": {"type": "object", "required": ["items", "next_cursor"], "properties": {
                    "items": {"type": "array", "items": obj},
                    "next_cursor": {"type": "string", "nullable": True}}},
                "ContainerList": {"type": "object", "required": ["items"], "properties": {
                    "items": {"type": "array", "items": {"$ref": "#/components/schemas/Container"}}}},
                "Container": {"type": "object", "properties": {
                    "id": {"type": "string"}, "name": {"type": "string"}, "image": {"type": "string"},
                    "runtime": {"type": "string"}, "node": {"type": "string"},
                    "cgroup_id": {"type": "integer", "nullable": True},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "first_seen": {"type": "integer"}, "last_seen": {"type": "integer"},
                    "events": {"type": "integer"}}},
                "ProcessList": {"type": "object", "required": ["items"], "properties": {
                    "items": {"type": "array", "items": {"$ref": "#/components/schemas/Process"}}}},
                "Process": {"type": "object", "properties": {
                    "pid": {"type": "integer"}, "ppid": {"type": "integer", "nullable": True},
                    "exe": {"type": "string", "nullable": True}, "comm": {"type": "string", "nullable": True},
                    "args": {"type": "array", "items": {"type": "string"}},
                    "children": {"type": "array", "items": {"$ref": "#/components/schemas/Process"}}}},
                "Graph": {"type": "object", "required": ["nodes", "edges"], "properties": {
                    "nodes": {"type": "array", "items": {"type": "object", "properties": {
                        "id": {"type": "string"}, "label": {"type": "string"}, "kind": {"type": "string"}}}},
                    "edges": {"type": "array", "items": {"type": "object", "properties": {
                        "source": {"type": "string"}, "target": {"type": "string"},
                        "port": {"type": "integer", "nullable": True}, "proto": {"type": "string", "nullable": True},
                        "count": {"type": "integer"}}}}}},
            },
        },
    }
