"""The HTTP API: REST queries over the store, live alerts over WebSocket,
Prometheus /metrics aggregated from service heartbeats, and the web dashboard.

Routes (every /api route needs `Authorization: Bearer <token>`; the token is
`ApiConfig.token` or the file `<data_dir>/api-token`, created 0600):
  GET /api/v1/events          kind container node pid since until q limit cursor -> {"items", "next_cursor"}
  GET /api/v1/alerts          rule priority container node since until q limit cursor -> {"items", "next_cursor"}
                              limit: 1..1000 (default 100); q: words (see openapi.json); any page fits the bus
  GET /api/v1/containers      -> {"items": [container, ...]}
  GET /api/v1/processes/tree  container pid node -> {"items": [root process with "children"]}
  GET /api/v1/network/graph   since -> {"nodes", "edges"}
  GET /api/v1/alerts/ws       WebSocket (token also as ?token=): frames {"type": "hello"} then
                              {"type": "alert", "alert": {...}}; a client a full queue behind is closed (1013)
  GET /api/v1/openapi.json    the OpenAPI 3 document
  GET /healthz, GET /metrics  no auth (metrics auth optional: ApiConfig.metrics_auth)
  GET /                       the dashboard (static files in web/)
Errors are JSON {"error": "..."}: 400 names the parameter, 401 says why, 503 when no store answers.
"""
