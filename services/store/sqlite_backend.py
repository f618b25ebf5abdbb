"""SQLite backend: one file, WAL; every call runs in a thread, never on the event loop.

One writer thread (one connection) and one reader thread (another
connection): WAL lets queries run while a batch is being written.
"""
from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

from . import derive, query
from .backend import RetentionResult, WriteResult, container_dict, tree_from_rows
from .tables import (AGED, CAPPED, CONTAINER_META_SELECT, CONTAINER_SELECT, DDL, GRAPH_NAMES_SELECT, MAX_TREE_ROWS,
                     PROCESS_SELECT, TABLES, statements)

_SQL = statements(query.SQLITE)


class _Conn:
    """A connection owned by one single-thread executor."""

    def __init__(self, path: str, name: str) -> None:
        self.path = path
        self.pool = ThreadPoolExecutor(1, thread_name_prefix=f"sqlite-{name}")
        self.db: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        if self.db is None:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=30000")
        return self.db

    async def call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, lambda: fn(self._open(), *args))

    async def close(self) -> None:
        def shut(db: sqlite3.Connection) -> None:
            db.close()
            self.db = None
        if self.db is not None:
            await self.call(shut)
        self.pool.shutdown(wait=True)


class SqliteBackend:
    name = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self._w = _Conn(path, "write")
        self._r = _Conn(path, "read")

    async def open(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)

        def init(db: sqlite3.Connection) -> None:
            for stmt in DDL:
                db.execute(stmt)
        await self._w.call(init)

    async def close(self) -> None:
        await self._r.close()
        await self._w.close()

    def is_transient(self, exc: BaseException) -> bool:
        # locked, disk full or I/O errors; data errors are IntegrityError, DataError, ...
        return isinstance(exc, (sqlite3.OperationalError, OSError))

    # -- writes -------------------------------------------------------------
    async def write(self, events: list[dict], alerts: list[dict]) -> WriteResult:
        return await self._w.call(_write, events, alerts)

    async def retain(self, cutoff_ts: int, max_rows: int, max_bytes: int) -> RetentionResult:
        return await self._w.call(_retain, cutoff_ts, max_rows, max_bytes)

    # -- queries ------------------------------------------------------------
    async def events(self, params: dict) -> dict:
        sql, args, limit = query.events_sql(query.SQLITE, params)
        rows = await self._r.call(lambda db: db.execute(sql, args).fetchall())
        return query.page(rows, limit, orjson.loads)

    async def alerts(self, params: dict) -> dict:
        sql, args, limit = query.alerts_sql(query.SQLITE, params)
        rows = await self._r.call(lambda db: db.execute(sql, args).fetchall())
        return query.page(rows, limit, orjson.loads)

    async def containers(self) -> list[dict]:
        rows = await self._r.call(lambda db: db.execute(CONTAINER_SELECT).fetchall())
        return [container_dict(r) for r in rows]

    async def process_tree(self, params: dict) -> list[dict]:
        tq = query.tree_query(params)
        where, args = [], []
        if tq.container is not None:
            where.append("(container_id LIKE ? OR container_id IN (SELECT id FROM containers WHERE name = ?))")
            args += [tq.container + "%" if query._HEX.match(tq.container) else "\x01", tq.container]
        if tq.pid is not None:
            where.append("node IN (SELECT node FROM processes WHERE pid = ?)")
            args.append(tq.pid)
        if tq.node is not None:
            where.append("node = ?")
            args.append(tq.node)
        sql = f"{PROCESS_SELECT} WHERE {' AND '.join(where)} ORDER BY pid LIMIT {MAX_TREE_ROWS}"
        rows = await self._r.call(lambda db: db.execute(sql, args).fetchall())
        return tree_from_rows(rows, tq)

    async def network_graph(self, params: dict) -> dict:
        since = query.graph_since(params)

        def read(db: sqlite3.Connection):
            edges = db.execute("SELECT src, dst, port, proto, origin, count, last_seen FROM connections "
                               "WHERE last_seen >= ?", (since,)).fetchall()
            ips = dict(db.execute("SELECT ip, container_id FROM container_ips").fetchall())
            names = dict(db.execute("SELECT id, name FROM containers").fetchall())
            dns = db.execute(GRAPH_NAMES_SELECT).fetchall()
            meta = derive.container_meta(db.execute(CONTAINER_META_SELECT).fetchall())
            return edges, ips, names, dns, meta
        return derive.build_graph(*await self._r.call(read))

    async def counts(self) -> dict:
        def read(db: sqlite3.Connection) -> dict:
            out = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
            out["db_bytes"] = _db_bytes(db)
            return out
        return await self._r.call(read)


def _write(db: sqlite3.Connection, events: list[dict], alerts: list[dict]) -> WriteResult:
    res = WriteResult()
    db.execute("BEGIN IMMEDIATE")
    try:
        new = []
        for ev in derive.unique_by_id(events):
            if db.execute(_SQL["event"], derive.event_row(ev)).rowcount:
                new.append(ev)
        for al in derive.unique_by_id(alerts):
            res.alerts += db.execute(_SQL["alert"], derive.alert_row(al)).rowcount
        res.events = len(new)
        res.duplicates = len(events) + len(alerts) - res.events - res.alerts
        d = derive.derive(new)
        db.executemany(_SQL["container"], d.container_rows())
        db.executemany(_SQL["connection"], d.connection_rows())
        db.executemany(_SQL["ip"], d.ip_rows())
        db.executemany(_SQL["ip_name"], d.ip_name_rows())
        db.executemany(_SQL["process"], d.process_rows())
        db.executemany(_SQL["exit"], d.exit_rows())
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return res


def _db_bytes(db: sqlite3.Connection) -> int:
    pages = db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
    return pages * db.execute("PRAGMA page_size").fetchone()[0]


def _retain(db: sqlite3.Connection, cutoff_ts: int, max_rows: int, max_bytes: int) -> RetentionResult:
    res = RetentionResult()

    def count(table: str, n: int) -> None:
        if n > 0:
            res.deleted[table] = res.deleted.get(table, 0) + n

    db.execute("BEGIN IMMEDIATE")
    try:
        for table, col in AGED:
            count(table, db.execute(f"DELETE FROM {table} WHERE {col} < ?", (cutoff_ts,)).rowcount)
        for table in CAPPED:
            row = db.execute(f"SELECT ts FROM {table} ORDER BY ts DESC LIMIT 1 OFFSET ?", (max_rows,)).fetchone()
            if row:
                count(table, db.execute(f"DELETE FROM {table} WHERE ts <= ?", (row[0],)).rowcount)
        # over the size limit: keep the newest rows that fit (live size = rows x sampled row size,
        # as freed pages stay in the file until VACUUM)
        n = db.execute("SELECT count(*) FROM events").fetchone()[0]
        per_row = db.execute("SELECT avg(length(body)) * 2 FROM (SELECT body FROM events "
                             "ORDER BY ts DESC LIMIT 1000)").fetchone()[0]
        if n and per_row and n * per_row > max_bytes:
            row = db.execute("SELECT ts FROM events ORDER BY ts DESC LIMIT 1 OFFSET ?",
                             (int(max_bytes / per_row),)).fetchone()
            if row:
                count("events", db.execute("DELETE FROM events WHERE ts <= ?", (row[0],)).rowcount)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return res
