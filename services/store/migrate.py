"""Schema versions and the migration of version 1 databases (events/alerts with a JSON text body).

On start a backend reads `schema_version`: a newer version than ours is
refused (SchemaError, saying what to do); version 1 tables are renamed to
events_v1/alerts_v1, copied into the journals in batches (each its own
transaction, idempotent: an interrupted migration resumes on the next start)
and dropped only once copied. The derived tables did not change.
"""
from __future__ import annotations

import sqlite3
from typing import Awaitable, Callable

import orjson

from shared import log

_log = log.get("store.migrate")
BATCH = 5000
V1_TABLES = ("events", "alerts")


class SchemaError(RuntimeError):
    """The database's schema cannot be used by this store (the message says how to proceed)."""


def _load(bodies: list) -> list[dict]:
    out = []
    for b in bodies:
        try:
            out.append(orjson.loads(b))
        except orjson.JSONDecodeError:
            _log.error("migration: skipped a version 1 row whose body is not JSON: %.80r", b)
    return out


# -- SQLite -----------------------------------------------------------------

def _sqlite_tables(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def sqlite_version(db: sqlite3.Connection) -> int | None:
    tables = _sqlite_tables(db)
    if "schema_version" in tables:
        row = db.execute("SELECT max(version) FROM schema_version").fetchone()
        if row and row[0] is not None:
            return row[0]
    if "events" in tables and "id" in {r[1] for r in db.execute("PRAGMA table_info(events)")}:
        return 1
    return None


def sqlite_rename_v1(db: sqlite3.Connection) -> None:
    for t in V1_TABLES:
        if t in _sqlite_tables(db):
            db.execute(f"ALTER TABLE {t} RENAME TO {t}_v1")


def sqlite_has_v1(db: sqlite3.Connection) -> bool:
    return bool(_sqlite_tables(db) & {f"{t}_v1" for t in V1_TABLES})


def sqlite_copy_v1(db: sqlite3.Connection, write: Callable[[list[dict], list[dict]], object]) -> None:
    for t in V1_TABLES:
        if f"{t}_v1" not in _sqlite_tables(db):
            continue
        total = db.execute(f"SELECT count(*) FROM {t}_v1").fetchone()[0]
        _log.warning("migrating %d %s from schema version 1 (compressed, indexed); this runs once", total, t)
        last, done = -1, 0
        while True:
            rows = db.execute(f"SELECT rowid, body FROM {t}_v1 WHERE rowid > ? ORDER BY rowid LIMIT ?",
                              (last, BATCH)).fetchall()
            if not rows:
                break
            items = _load([r[1] for r in rows])
            write(items, []) if t == "events" else write([], items)
            last, done = rows[-1][0], done + len(rows)
            if done % (20 * BATCH) < BATCH:
                _log.info("migration: %d/%d %s", done, total, t)
        db.execute(f"DROP TABLE {t}_v1")
        _log.warning("migrated %d %s to schema version 2", done, t)


# -- PostgreSQL -------------------------------------------------------------

async def pg_version(con) -> int | None:
    if await con.fetchval("SELECT to_regclass('schema_version')") is not None:
        v = await con.fetchval("SELECT max(version) FROM schema_version")
        if v is not None:
            return v
    if await con.fetchval("SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() "
                          "AND table_name = 'events' AND column_name = 'id'"):
        return 1
    return None


async def pg_rename_v1(con) -> None:
    for t in V1_TABLES:
        if await con.fetchval(f"SELECT to_regclass('{t}')") is not None:
            await con.execute(f"ALTER TABLE {t} RENAME TO {t}_v1")
            # version 1 index names would clash with nothing, but keep them recognisable
            for idx in await con.fetch("SELECT indexname FROM pg_indexes WHERE tablename = $1 "
                                       "AND schemaname = current_schema()", f"{t}_v1"):
                if not idx[0].endswith("_v1"):
                    await con.execute(f'ALTER INDEX "{idx[0]}" RENAME TO "{idx[0]}_v1"')


async def pg_has_v1(con) -> bool:
    return any([await con.fetchval(f"SELECT to_regclass('{t}_v1')") is not None for t in V1_TABLES])


async def pg_copy_v1(pool, write: Callable[[list[dict], list[dict]], Awaitable[object]]) -> None:
    async with pool.acquire() as con:
        for t in V1_TABLES:
            if await con.fetchval(f"SELECT to_regclass('{t}_v1')") is None:
                continue
            total = await con.fetchval(f"SELECT count(*) FROM {t}_v1")
            _log.warning("migrating %d %s from schema version 1 (compressed, partitioned); this runs once", total, t)
            last_ts, last_id, done = -1, "", 0
            while True:
                rows = await con.fetch(f"SELECT ts, id, body FROM {t}_v1 WHERE (ts, id) > ($1, $2) "
                                       "ORDER BY ts, id LIMIT $3", last_ts, last_id, BATCH)
                if not rows:
                    break
                items = _load([r[2] for r in rows])
                await (write(items, []) if t == "events" else write([], items))
                last_ts, last_id, done = rows[-1][0], rows[-1][1], done + len(rows)
            await con.execute(f"DROP TABLE {t}_v1")
            _log.warning("migrated %d %s to schema version 2", done, t)
