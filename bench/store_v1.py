"""The store's schema version 1, kept only as the baseline of bench/store_bench.py.

Events and alerts as rows with a text id primary key, string columns and the
whole JSON body as text; text search is LIKE over the body. Writes go through
the same derive code as today's backends, so the comparison is the journal's.
"""
from __future__ import annotations

import sqlite3

import asyncpg
import orjson

from services.store import derive, query
from services.store.derive import _container, _i, _k8s, _s
from services.store.tables import derived_ddl, statements

DDL = [
    """CREATE TABLE IF NOT EXISTS events (
        id TEXT PRIMARY KEY, ts BIGINT NOT NULL, node TEXT, kind TEXT NOT NULL, pid BIGINT, comm TEXT,
        container_id TEXT, container_name TEXT, image TEXT, k8s_ns TEXT, k8s_pod TEXT, cgroup_id BIGINT,
        body TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS events_ts ON events (ts, id)",
    "CREATE INDEX IF NOT EXISTS events_kind_ts ON events (kind, ts)",
    "CREATE INDEX IF NOT EXISTS events_container_ts ON events (container_id, ts)",
    "CREATE INDEX IF NOT EXISTS events_name_ts ON events (container_name, ts)",
    "CREATE INDEX IF NOT EXISTS events_pid ON events (pid)",
    """CREATE TABLE IF NOT EXISTS alerts (
        id TEXT PRIMARY KEY, ts BIGINT NOT NULL, rule TEXT NOT NULL, priority TEXT NOT NULL,
        prio_level INTEGER NOT NULL, container_id TEXT, container_name TEXT, node TEXT, output TEXT,
        body TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS alerts_ts ON alerts (ts, id)",
    "CREATE INDEX IF NOT EXISTS alerts_rule_ts ON alerts (rule, ts)",
    *derived_ddl(sqlite=False),     # version 1's derived tables (no WITHOUT ROWID)
]
EVENT_COLS = ("id", "ts", "node", "kind", "pid", "comm", "container_id", "container_name", "image",
              "k8s_ns", "k8s_pod", "cgroup_id", "body")
ALERT_COLS = ("id", "ts", "rule", "priority", "prio_level", "container_id", "container_name", "node", "output", "body")
EVENT_PARAMS = ("kind", "container", "node", "pid", "namespace", "pod", "since", "until", "q", "limit", "cursor")
ALERT_PARAMS = ("rule", "priority", "container", "node", "since", "until", "q", "limit", "cursor")


def event_row(ev: dict) -> tuple:
    c, k = _container(ev), _k8s(ev)
    return (ev["id"], ev["ts"], _s(ev.get("node"), 128), _s(ev["kind"], 64), _i(ev.get("pid")), _s(ev.get("comm"), 64),
            _s(c.get("id"), 64), _s(c.get("name"), 256), _s(c.get("image"), 512),
            _s(k.get("namespace"), 256), _s(k.get("pod"), 256), _i(ev.get("cgroup_id")), derive.dumps(ev))


def alert_row(al: dict) -> tuple:
    c = _container(al) or _container(al.get("event") or {})
    return (al["id"], al["ts"], _s(al.get("rule"), 256) or "", _s(al.get("priority"), 32) or "",
            query.prio_level(al.get("priority")), _s(c.get("id"), 64), _s(c.get("name"), 256),
            _s(al.get("node"), 128), _s(al.get("output"), 4096), derive.dumps(al))


def _like_escape(s: str) -> str:
    return "%" + s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _paged(d: query.Dialect, table: str, b: query.SqlBuilder, p: dict) -> tuple[str, list, int]:
    if "since" in p:
        b.add("ts >= {}", p["since"])
    if "until" in p:
        b.add("ts <= {}", p["until"])
    if "q" in p:
        b.add(f"(body {d.ilike} {{}} ESCAPE '\\')", _like_escape(p["q"]))
    limit = p.get("limit", query.DEFAULT_LIMIT)
    return (f"SELECT ts, id, body FROM {table}{b.where_sql()} ORDER BY ts DESC, id DESC LIMIT {b.ph(limit + 1)}",
            b.args, limit)


def _container_clause(b: query.SqlBuilder, value: str) -> None:
    if query._HEX.match(value):
        b.add("(container_id LIKE {} OR container_name = {})", value + "%", value)
    else:
        b.add("container_name = {}", value)


def events_sql(d: query.Dialect, p: dict) -> tuple[str, list, int]:
    b = d.builder()
    for param, col in (("kind", "kind"), ("node", "node"), ("pid", "pid"), ("namespace", "k8s_ns"),
                       ("pod", "k8s_pod")):
        if param in p:
            b.add(f"{col} = {{}}", p[param])
    if "container" in p:
        _container_clause(b, p["container"])
    return _paged(d, "events", b, p)


def alerts_sql(d: query.Dialect, p: dict) -> tuple[str, list, int]:
    b = d.builder()
    if "rule" in p:
        b.add("rule = {}", p["rule"])
    if "priority" in p:
        b.add("prio_level >= {}", query.prio_level(p["priority"]))
    if "container" in p:
        _container_clause(b, p["container"])
    return _paged(d, "alerts", b, p)


def _page(rows, limit: int) -> dict:
    return {"items": [orjson.loads(r[2]) for r in rows[:limit]],
            "next_cursor": f"{rows[limit - 1][0]}:{rows[limit - 1][1]}" if len(rows) > limit else None}


class SqliteV1:
    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        for s in DDL:
            self.db.execute(s)
        self.sql = statements(query.SQLITE)

    async def write(self, events: list[dict], alerts: list[dict]) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        ins_e = f"INSERT INTO events ({', '.join(EVENT_COLS)}) VALUES ({', '.join('?' * len(EVENT_COLS))}) " \
                "ON CONFLICT (id) DO NOTHING"
        ins_a = f"INSERT INTO alerts ({', '.join(ALERT_COLS)}) VALUES ({', '.join('?' * len(ALERT_COLS))}) " \
                "ON CONFLICT (id) DO NOTHING"
        new = [ev for ev in derive.unique_by_id(events) if db.execute(ins_e, event_row(ev)).rowcount]
        for al in derive.unique_by_id(alerts):
            db.execute(ins_a, alert_row(al))
        d = derive.derive(new)
        for key, rows in (("container", d.container_rows()), ("connection", d.connection_rows()),
                          ("ip", d.ip_rows()), ("process", d.process_rows()), ("exit", d.exit_rows())):
            db.executemany(self.sql[key], rows)
        db.execute("COMMIT")

    async def events(self, p: dict) -> dict:
        sql, args, limit = events_sql(query.SQLITE, p)
        return _page(self.db.execute(sql, args).fetchall(), limit)

    async def alerts(self, p: dict) -> dict:
        sql, args, limit = alerts_sql(query.SQLITE, p)
        return _page(self.db.execute(sql, args).fetchall(), limit)

    async def db_bytes(self) -> int:
        db = self.db
        return (db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]) \
            * db.execute("PRAGMA page_size").fetchone()[0]

    async def close(self) -> None:
        self.db.close()


class PostgresV1:
    def __init__(self, url: str) -> None:
        self.url = url
        self.sql = statements(query.POSTGRES)

    async def open(self) -> "PostgresV1":
        self.pool = await asyncpg.create_pool(self.url, min_size=1, max_size=2)
        async with self.pool.acquire() as con:
            for s in DDL:
                await con.execute(s)
        return self

    async def write(self, events: list[dict], alerts: list[dict]) -> None:
        def bulk(table: str, cols: tuple, types: tuple) -> str:
            arrays = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(types))
            return (f"INSERT INTO {table} ({', '.join(cols)}) SELECT * FROM unnest({arrays}) "
                    "ON CONFLICT (id) DO NOTHING RETURNING id")
        etypes = ("text", "bigint", "text", "text", "bigint", "text", "text", "text", "text", "text", "text",
                  "bigint", "text")
        atypes = ("text", "bigint", "text", "text", "int", "text", "text", "text", "text", "text")
        evs, als = derive.unique_by_id(events), derive.unique_by_id(alerts)
        async with self.pool.acquire() as con:
            async with con.transaction():
                ids = {r[0] for r in await con.fetch(bulk("events", EVENT_COLS, etypes),
                                                     *[list(c) for c in zip(*map(event_row, evs))])}
                if als:
                    await con.fetch(bulk("alerts", ALERT_COLS, atypes), *[list(c) for c in zip(*map(alert_row, als))])
                d = derive.derive([e for e in evs if e["id"] in ids])
                for key, rows in (("container", d.container_rows()), ("connection", d.connection_rows()),
                                  ("ip", d.ip_rows()), ("process", d.process_rows()), ("exit", d.exit_rows())):
                    if rows:
                        await con.executemany(self.sql[key], rows)

    async def events(self, p: dict) -> dict:
        sql, args, limit = events_sql(query.POSTGRES, p)
        async with self.pool.acquire() as con:
            return _page(await con.fetch(sql, *args), limit)

    async def alerts(self, p: dict) -> dict:
        sql, args, limit = alerts_sql(query.POSTGRES, p)
        async with self.pool.acquire() as con:
            return _page(await con.fetch(sql, *args), limit)

    async def db_bytes(self) -> int:
        async with self.pool.acquire() as con:
            return int(await con.fetchval("SELECT sum(pg_total_relation_size(c)) FROM unnest($1::text[]) c",
                                          ["events", "alerts", "containers", "connections", "container_ips",
                                           "processes"]))

    async def close(self) -> None:
        await self.pool.close()
