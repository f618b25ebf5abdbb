"""PostgreSQL backend (asyncpg): shared by store replicas in a cluster."""
from __future__ import annotations

import asyncio

import asyncpg
import orjson

from . import derive, query
from .backend import RetentionResult, WriteResult, container_dict, tree_from_rows
from .derive import ALERT_COLS, EVENT_COLS
from .tables import (AGED, CAPPED, CONTAINER_META_SELECT, CONTAINER_SELECT, DDL, GRAPH_NAMES_SELECT, MAX_TREE_ROWS,
                     PROCESS_SELECT, TABLES, statements)

_SQL = statements(query.POSTGRES)
CLOSE_TIMEOUT_S = 10
_EVENT_TYPES = ("text", "bigint", "text", "text", "bigint", "text", "text", "text", "text", "text", "text",
                "bigint", "text")
_ALERT_TYPES = ("text", "bigint", "text", "text", "int", "text", "text", "text", "text", "text")


def _bulk_insert(table: str, cols: tuple[str, ...], types: tuple[str, ...]) -> str:
    arrays = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(types))
    return (f"INSERT INTO {table} ({', '.join(cols)}) SELECT * FROM unnest({arrays}) "
            "ON CONFLICT (id) DO NOTHING RETURNING id")


_INSERT_EVENTS = _bulk_insert("events", EVENT_COLS, _EVENT_TYPES)
_INSERT_ALERTS = _bulk_insert("alerts", ALERT_COLS, _ALERT_TYPES)


def _columns(rows: list[tuple], n: int) -> list[list]:
    return [list(c) for c in zip(*rows)] if rows else [[] for _ in range(n)]


def _rowcount(status: str) -> int:
    """asyncpg status text like 'DELETE 12' -> 12."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0


class PostgresBackend:
    name = "postgresql"

    def __init__(self, url: str) -> None:
        self.url = url
        self.pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        self.pool = await asyncpg.create_pool(self.url, min_size=1, max_size=4, command_timeout=60)
        async with self.pool.acquire() as con:
            async with con.transaction():
                # replicas may start together: serialize DDL
                await con.execute("SELECT pg_advisory_xact_lock(7226061)")
                for stmt in DDL:
                    await con.execute(stmt)

    async def close(self) -> None:
        if self.pool:
            try:   # a writer cancelled mid-query can keep its connection: do not wait forever
                await asyncio.wait_for(self.pool.close(), CLOSE_TIMEOUT_S)
            except asyncio.TimeoutError:
                self.pool.terminate()
            self.pool = None

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, (OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError,
                                asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
                                asyncpg.TooManyConnectionsError, asyncpg.DeadlockDetectedError,
                                asyncpg.SerializationError, asyncpg.AdminShutdownError))

    async def write(self, events: list[dict], alerts: list[dict]) -> WriteResult:
        res = WriteResult()
        evs, als = derive.unique_by_id(events), derive.unique_by_id(alerts)
        async with self.pool.acquire() as con:
            async with con.transaction():
                new = []
                if evs:
                    ids = {r[0] for r in await con.fetch(
                        _INSERT_EVENTS, *_columns([derive.event_row(e) for e in evs], len(EVENT_COLS)))}
                    new = [e for e in evs if e["id"] in ids]
                if als:
                    res.alerts = len(await con.fetch(
                        _INSERT_ALERTS, *_columns([derive.alert_row(a) for a in als], len(ALERT_COLS))))
                res.events = len(new)
                res.duplicates = len(events) + len(alerts) - res.events - res.alerts
                d = derive.derive(new)
                for key, rows in (("container", d.container_rows()), ("connection", d.connection_rows()),
                                  ("ip", d.ip_rows()), ("ip_name", d.ip_name_rows()), ("process", d.process_rows()), ("exit", d.exit_rows())):
                    if rows:
                        await con.executemany(_SQL[key], rows)
        return res

    async def retain(self, cutoff_ts: int, max_rows: int, max_bytes: int) -> RetentionResult:
        res = RetentionResult()

        def count(table: str, n: int) -> None:
            if n > 0:
                res.deleted[table] = res.deleted.get(table, 0) + n

        async with self.pool.acquire() as con:
            async with con.transaction():
                for table, col in AGED:
                    count(table, _rowcount(await con.execute(f"DELETE FROM {table} WHERE {col} < $1", cutoff_ts)))
                for table in CAPPED:
                    ts = await con.fetchval(f"SELECT ts FROM {table} ORDER BY ts DESC LIMIT 1 OFFSET $1", max_rows)
                    if ts is not None:
                        count(table, _rowcount(await con.execute(f"DELETE FROM {table} WHERE ts <= $1", ts)))
                # PostgreSQL keeps freed pages until VACUUM: estimate live size from rows x sampled row size
                n = await con.fetchval("SELECT count(*) FROM events")
                per_row = await con.fetchval(
                    "SELECT avg(octet_length(body)) * 2 FROM (SELECT body FROM events ORDER BY ts DESC LIMIT 1000) s")
                if n and per_row and n * float(per_row) > max_bytes:
                    keep = int(max_bytes / float(per_row))
                    ts = await con.fetchval("SELECT ts FROM events ORDER BY ts DESC LIMIT 1 OFFSET $1", keep)
                    if ts is not None:
                        count("events", _rowcount(await con.execute("DELETE FROM events WHERE ts <= $1", ts)))
        return res

    async def events(self, params: dict) -> dict:
        sql, args, limit = query.events_sql(query.POSTGRES, params)
        async with self.pool.acquire() as con:
            rows = await con.fetch(sql, *args)
        return query.page(rows, limit, orjson.loads)

    async def alerts(self, params: dict) -> dict:
        sql, args, limit = query.alerts_sql(query.POSTGRES, params)
        async with self.pool.acquire() as con:
            rows = await con.fetch(sql, *args)
        return query.page(rows, limit, orjson.loads)

    async def containers(self) -> list[dict]:
        async with self.pool.acquire() as con:
            return [container_dict(r) for r in await con.fetch(CONTAINER_SELECT)]

    async def process_tree(self, params: dict) -> list[dict]:
        tq = query.tree_query(params)
        b = query.POSTGRES.builder()
        if tq.container is not None:
            prefix = tq.container + "%" if query._HEX.match(tq.container) else "\x01"
            b.add("(container_id LIKE {} OR container_id IN (SELECT id FROM containers WHERE name = {}))",
                  prefix, tq.container)
        if tq.pid is not None:
            b.add("node IN (SELECT node FROM processes WHERE pid = {})", tq.pid)
        if tq.node is not None:
            b.add("node = {}", tq.node)
        async with self.pool.acquire() as con:
            rows = await con.fetch(f"{PROCESS_SELECT}{b.where_sql()} ORDER BY pid LIMIT {MAX_TREE_ROWS}", *b.args)
        return tree_from_rows(rows, tq)

    async def network_graph(self, params: dict) -> dict:
        since = query.graph_since(params)
        async with self.pool.acquire() as con:
            edges = await con.fetch("SELECT src, dst, port, proto, origin, count, last_seen FROM connections "
                                    "WHERE last_seen >= $1", since)
            ips = {r[0]: r[1] for r in await con.fetch("SELECT ip, container_id FROM container_ips")}
            names = {r[0]: r[1] for r in await con.fetch("SELECT id, name FROM containers")}
            dns = [tuple(r) for r in await con.fetch(GRAPH_NAMES_SELECT)]
            meta = derive.container_meta([tuple(r) for r in await con.fetch(CONTAINER_META_SELECT)])
        return derive.build_graph([tuple(e) for e in edges], ips, names, dns, meta)

    async def counts(self) -> dict:
        async with self.pool.acquire() as con:
            out = {t: await con.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}
            out["db_bytes"] = int(await con.fetchval(
                "SELECT sum(pg_total_relation_size(c)) FROM unnest($1::text[]) c", list(TABLES)))
        return out
