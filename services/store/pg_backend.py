"""PostgreSQL backend (asyncpg): shared by store replicas in a cluster.

Events and alerts are journals (journal.py) partitioned by key range (time),
created as rows arrive and sized to the size cap (pg_partitions.py); retention
drops whole partitions and deletes the rest in small batches. Text search uses a
GIN index over each row's words (a tsvector of the words codec.py picks).
"""
from __future__ import annotations

import asyncio
import bisect
import functools
import time

import asyncpg
import orjson

from shared import log

from . import codec as codecmod
from . import derive, journal, migrate, query
from .backend import RetentionResult, WriteResult, container_dict, tree_from_rows
from .journal import ALERTS, EVENTS, JOURNALS, Journal
from .pairs import Seen, query_hashes
from .pg_partitions import FIRST_SPAN, PARTS_PER_CAP, SPANS, covered, new_span, recent_rate, span_for
from .tables import (
    AGED,
    CAPPED,
    CONTAINER_META_SELECT,
    CONTAINER_SELECT,
    GRAPH_NAMES_SELECT,
    MAX_TREE_ROWS,
    PROCESS_SELECT,
    SCHEMA_VERSION,
    derived_cutoff,
    pg_ddl,
    statements,
)

_SQL = statements(query.POSTGRES)
CLOSE_TIMEOUT_S = 10
CLOSED_NS = SPANS[-1]        # a partition that ended this long ago gets no more rows (but late ones)
RETAIN_BATCH = 5000
SIZE_TARGET = 0.9
TRIMMED = "trimmed:"        # store_meta names of the partitions retention deleted rows from (not dropped)
SEARCH_WALK = 20_000       # rows a word search checks by key before it asks the GIN index (tests lower it)
PIECE_WALK = 2_000         # the same within one partition where a container has the words (pairs.py): the
                           # GIN index over one partition is cheap, a long walk of random rows is not
_log = log.get("store.postgresql")
_LOCK = 7226061
_RETAIN_LOCK = 7226062      # held (per session) by the replica running retention
MIN_ROWS_TO_MEASURE = 10_000
VACUUM_AFTER = 1000         # rows deleted from a derived table that make retention VACUUM it
VACUUM_TIMEOUT_S = 600
_DERIVED = ("containers", "connections", "container_ips", "processes")
BACKOFF_FIRST_S = 0.25   # wait before the write after a transient failure ...
BACKOFF_MAX_S = 8.0      # ... doubling up to this
# SQLSTATEs of a database that cannot write now, whatever the data: connection (08), transaction
# rollback: serialization, deadlock (40), insufficient resources: disk full, out of memory, too
# many connections (53), operator intervention: admin/crash shutdown, cannot connect now, statement
# cancelled (57), system/IO errors (58).
TRANSIENT_SQLSTATE_CLASSES = {"08", "40", "53", "57", "58"}
TRANSIENT_SQLSTATES = {"25006",   # read_only_sql_transaction (a standby, default_transaction_read_only)
                       "25P03",   # idle_in_transaction_session_timeout
                       "55P03",   # lock_not_available
                       "55006"}   # object_in_use


def _rowcount(status: str) -> int:
    """asyncpg status text like 'DELETE 12' -> 12."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0


def _bounds(j: Journal, partition: str) -> tuple[int, int]:
    """[lo, hi) of a partition from its name, <table>_p<lo>_<hi>."""
    lo, _, hi = partition[len(j.table) + 2:].partition("_")
    return int(lo), int(hi)


def tsquery(words: list[tuple[str, bool]]) -> str:
    """Words (letters, digits, '_.:' only: codec.py) -> tsquery text, cast without re-parsing."""
    return " & ".join(f"'{w}':*" if prefix else f"'{w}'" for w, prefix in words)


def _insert_sql(j: Journal) -> str:
    types = ["bigint", "int", *("int" for _ in j.named), *("bigint" for _ in j.ints), "bytea", "text"]
    arrays = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(types))
    cols = ", ".join(j.columns)
    return (f"INSERT INTO {j.table} ({cols}, words) SELECT {cols}, array_to_tsvector(string_to_array(w, ' ')) "
            f"FROM unnest({arrays}) AS u({cols}, w) ON CONFLICT (k) DO NOTHING RETURNING k, tableoid::regclass::text")
def _backing_off(write):
    """After a transient failure the next write first waits, doubling up to BACKOFF_MAX_S
    (a database that is down or full is not hammered); a success resets it."""
    @functools.wraps(write)
    async def wrapper(self, *args, **kw):
        delay = getattr(self, "_backoff_s", 0.0)
        if delay:
            await asyncio.sleep(delay)
        try:
            res = await write(self, *args, **kw)
        except Exception as e:
            if self.is_transient(e):
                self._backoff_s = min(max(delay * 2, BACKOFF_FIRST_S), BACKOFF_MAX_S)
            raise
        self._backoff_s = 0.0
        return res
    return wrapper


class PostgresBackend:
    name = "postgresql"

    def __init__(self, url: str, partition_ns: int = FIRST_SPAN) -> None:
        self.url = url
        self.partition_ns = partition_ns
        self.pool: asyncpg.Pool | None = None
        self.codec = codecmod.Codec()
        self.training = codecmod.Training(self.codec, self._install_dict)
        self._names: dict[str, int] = {}
        self._spans: dict[str, list[tuple[int, int]]] = {}  # journal -> its partitions' [lo, hi), known to exist
        self._counts: dict[str, int] = {}                    # closed partition -> rows
        self._scoped_since: dict[str, int] = {}              # journal -> first key with scope tokens
        self._pairs_since: dict[str, int] = {}               # journal -> first key with pairs recorded
        self._seen = {j.table: Seen() for j in JOURNALS}     # pairs in each journal's newest partition

    async def open(self) -> None:
        # custom plans always: a query's generic plan (asyncpg prepares every statement; PostgreSQL
        # switches to it after five runs) cannot see that a priority or container has no rows and walks
        # the whole key index for them (~130 ms at 10M events against < 1 ms)
        self.pool = await asyncpg.create_pool(self.url, min_size=1, max_size=4, command_timeout=60,
                                              server_settings={"plan_cache_mode": "force_custom_plan"})
        async with self.pool.acquire() as con:
            async with con.transaction():
                # replicas may start together: serialize DDL
                await con.execute(f"SELECT pg_advisory_xact_lock({_LOCK})")
                found = await migrate.pg_version(con)
                if found is not None and found > SCHEMA_VERSION:
                    raise migrate.SchemaError(
                        f"database schema version {found} is newer than this store's ({SCHEMA_VERSION}); "
                        "run a newer eunomia, or point --store at an empty database")
                if found == 1:
                    await migrate.pg_rename_v1(con)
                # a current schema is left alone: CREATE INDEX IF NOT EXISTS takes a ShareLock on its table
                # even when the index exists, which deadlocks with a running replica's writes and retention
                if found != SCHEMA_VERSION:
                    for stmt in pg_ddl():
                        await con.execute(stmt)
                await con.execute("CREATE TABLE IF NOT EXISTS store_meta (name TEXT PRIMARY KEY, n BIGINT NOT NULL)")
                for j in JOURNALS:  # rows already there have no scope tokens in their words (journal.py)
                    for key, since in ((journal.scope_key(j), self._scoped_since),    # nor pairs (pairs.py)
                                       (journal.pairs_key(j), self._pairs_since)):
                        await con.execute(f"INSERT INTO store_meta (name, n) SELECT $1, coalesce(max(k), -1) + 1 "
                                          f"FROM {j.table} ON CONFLICT DO NOTHING", key)
                        since[j.table] = await con.fetchval("SELECT n FROM store_meta WHERE name = $1", key)
            await self._load_dicts(con)
        async with self.pool.acquire() as con:
            if await migrate.pg_has_v1(con):
                await migrate.pg_copy_v1(self.pool, lambda evs, als: self._write(evs, als, derived=False))
            async with con.transaction():
                await con.execute(f"SELECT pg_advisory_xact_lock({_LOCK})")
                if await migrate.pg_version(con) != SCHEMA_VERSION:
                    await con.execute("DELETE FROM schema_version")
                    await con.execute("INSERT INTO schema_version (version) VALUES ($1)", SCHEMA_VERSION)

    async def close(self) -> None:
        await self.training.stop()
        if self.pool:
            try:   # a writer cancelled mid-query can keep its connection: do not wait forever
                await asyncio.wait_for(self.pool.close(), CLOSE_TIMEOUT_S)
            except asyncio.TimeoutError:
                self.pool.terminate()
            self.pool = None

    def is_transient(self, exc: BaseException) -> bool:
        """Errors that are not the data's fault: retried (redelivered with backoff) until the
        database takes the write, never counted towards a message's termination."""
        if isinstance(exc, (OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError,
                            asyncpg.InterfaceError)):
            return True
        code = getattr(exc, "sqlstate", None) or ""
        if code == "23514" and "no partition" in str(exc):   # dropped between its creation and the write
            return True
        return code[:2] in TRANSIENT_SQLSTATE_CLASSES or code in TRANSIENT_SQLSTATES

    async def _load_dicts(self, con) -> None:
        for r in await con.fetch("SELECT id, data FROM dicts ORDER BY id"):
            if not self.codec.has(r[0]):
                self.codec.add_dict(r[0], r[1])

    async def _decode_all(self, con, blobs: list[bytes]) -> list[bytes]:
        if any(not self.codec.has(b[0]) for b in blobs):
            await self._load_dicts(con)
        return [self.codec.decode(b) for b in blobs]

    # -- writes -------------------------------------------------------------
    async def _ensure_partitions(self, j: Journal, keys) -> None:
        spans = self._spans.setdefault(j.table, [])
        missing = sorted({k for k in keys if not covered(spans, k)})
        if not missing:
            return
        try:
            async with self.pool.acquire() as con:
                async with con.transaction():
                    await con.execute(f"SELECT pg_advisory_xact_lock({_LOCK})")
                    spans[:] = [(lo, hi) for lo, hi, _ in await self._partitions(con, j)]  # replicas' too
                    for k in missing:
                        if covered(spans, k):
                            continue
                        lo, hi = new_span(spans, k, self.partition_ns)
                        await con.execute(f"CREATE TABLE {j.table}_p{lo}_{hi} PARTITION OF {j.table} "
                                          f"FOR VALUES FROM ({lo}) TO ({hi})")
                        bisect.insort(spans, (lo, hi))
        except BaseException:
            spans.clear()       # read again next time
            raise

    async def _intern(self, con, strs: set[str]) -> None:
        missing = sorted(s for s in strs if s not in self._names)
        if missing:
            await con.execute("INSERT INTO names (s) SELECT unnest($1::text[]) ON CONFLICT (s) DO NOTHING", missing)
            for r in await con.fetch("SELECT id, s FROM names WHERE s = ANY($1::text[])", missing):
                self._names[r[1]] = r[0]
            if len(self._names) > 100_000:
                self._names = {s: self._names[s] for s in missing}

    async def _insert(self, con, j: Journal, items: list[dict]) -> list[dict]:
        """Store items under the first free keys at or after their ts; returns those not already stored."""
        if not items:
            return []
        keyed = await self._keys(con, j, items)
        items = [it for it, kh in zip(items, keyed) if kh is not None]
        keys = [kh for kh in keyed if kh is not None]
        if not items:
            return []
        vals = [journal.row_values(j, it) for it in items]
        await self._intern(con, {s for strs, _ in vals for s in strs.values() if s is not None})
        rows = []
        for it, (k, h), (strs, ints) in zip(items, keys, vals):
            raw = codecmod.dumps(it)
            self.codec.sample(raw)
            named = [None if strs[c] is None else self._names[strs[c]] for c in j.named]
            rows.append([k, h, *named, *(ints[c] for c in j.ints), self.codec.encode(raw),
                         journal.scoped_words(codecmod.search_text(it), named[j.cont_at])])
        pending = list(range(len(rows)))
        new: list[int] = []
        sql = _insert_sql(j)
        while pending:
            await self._ensure_partitions(j, [rows[i][0] for i in pending])
            cols = [list(c) for c in zip(*(rows[i] for i in pending))]
            done = {r[0]: r[1] for r in await con.fetch(sql, *cols)}     # key -> the partition it went to
            clash = [i for i in pending if rows[i][0] not in done]
            new += [i for i in pending if rows[i][0] in done]
            await self._record_pairs(con, j, [(rows[i], done[rows[i][0]]) for i in pending if rows[i][0] in done])
            if not clash:
                break
            held = {r[0]: r[1] for r in await con.fetch(f"SELECT k, idh FROM {j.table} WHERE k = ANY($1::bigint[])",
                                                        [rows[i][0] for i in clash])}
            pending = []
            for i in clash:
                if held.get(rows[i][0]) != rows[i][1]:    # another event holds this ns: try the next one
                    rows[i][0] += 1
                    pending.append(i)
        return [items[i] for i in sorted(new)]

    async def _record_pairs(self, con, j: Journal, stored: list[tuple[list, str]]) -> None:
        """The (container, word) pairs of rows just stored, with the partition each went to (as the
        INSERT says: the partition cache may be out of date when a replica has dropped one)."""
        since, cont_at = self._pairs_since.get(j.table, journal.KEY_MAX), 2 + j.cont_at
        by_part: dict[int, list[tuple[str, int | None]]] = {}
        for r, part in stored:
            if r[0] >= since and r[cont_at] is not None:
                by_part.setdefault(_bounds(j, part)[0], []).append((r[-1], r[cont_at]))
        spans = self._spans.get(j.table)
        for lo, part_rows in by_part.items():
            # remembered for the newest partition only: retention never drops that one
            new = (self._seen[j.table] if spans and lo == spans[-1][0] else Seen()).new_pairs(lo, part_rows)
            if new:
                conts, hashes = zip(*new)
                await con.execute(f"INSERT INTO {j.table}_pairs (cont, wh, part_lo) SELECT c, h, {lo} "
                                  "FROM unnest($1::int[], $2::bigint[]) AS u(c, h) ON CONFLICT DO NOTHING",
                                  list(conts), list(hashes))

    async def _keys(self, con, j: Journal, items: list[dict]) -> list[tuple[int, int] | None]:
        """Each item's (key, id hash): the first key at or after its ts not held by another event (None:
        this event is stored already). The walk starts at the ts every time, past the keys the database
        and the batch hold, so a redelivered event finds the key it has whatever order the batch comes in
        (the same walk as sqlite_backend._insert's, there on a synchronous connection)."""
        wanted = sorted({it["ts"] for it in items})
        taken = {r[0]: r[1] for r in await con.fetch(f"SELECT k, idh FROM {j.table} WHERE k = ANY($1::bigint[])",
                                                     wanted)}
        asked = set(wanted)
        out: list[tuple[int, int] | None] = []
        for it in items:
            h, k = journal.idh(it), it["ts"]
            while k in taken and taken[k] != h:      # another event holds this ns: the next one
                k += 1
                if k not in asked:                    # past the keys asked for: same-ns events
                    asked.add(k)
                    held = await con.fetchval(f"SELECT idh FROM {j.table} WHERE k = $1", k)
                    if held is not None:
                        taken[k] = held
            if taken.get(k) == h:
                out.append(None)
            else:
                taken[k] = h
                out.append((k, h))
        return out

    @_backing_off
    async def write(self, events: list[dict], alerts: list[dict]) -> WriteResult:
        res = await self._write(events, alerts)
        self.training.after_write(len(events) + len(alerts))
        return res

    async def _write(self, events: list[dict], alerts: list[dict], derived: bool = True) -> WriteResult:
        res = WriteResult()
        evs, als = derive.unique_by_id(events), derive.unique_by_id(alerts)
        # new partitions before the write transaction: creating one locks its journal, which that
        # transaction (on another connection) may already hold
        await self._ensure_partitions(EVENTS, [e["ts"] for e in evs])
        await self._ensure_partitions(ALERTS, [a["ts"] for a in als])
        if min((it["ts"] for it in (*evs, *als)), default=time.time_ns()) < time.time_ns() - CLOSED_NS:
            self._counts.clear()      # rows for a partition counted as closed: count them again
        async with self.pool.acquire() as con:
            try:
                async with con.transaction():
                    new = await self._insert(con, EVENTS, evs)
                    res.alerts = len(await self._insert(con, ALERTS, als))
                    res.events = len(new)
                    res.duplicates = len(events) + len(alerts) - res.events - res.alerts
                    if derived:
                        d = derive.derive(new)
                        for key, rows in (("container", d.container_rows()), ("connection", d.connection_rows()),
                                          ("ip", d.ip_rows()), ("ip_name", d.ip_name_rows()),
                                          ("process", d.process_rows()),
                                          ("exit", d.exit_rows())):
                            if rows:
                                await con.executemany(_SQL[key], rows)
            except BaseException:
                self._names.clear()      # ids interned in the rolled-back transaction are gone
                self._spans.clear()      # a partition may have gone meanwhile (retention, a replica)
                for seen in self._seen.values():
                    seen.forget()        # and the pairs recorded with them
                raise
        return res

    async def _install_dict(self, data: bytes) -> None:
        async with self.pool.acquire() as con:
            async with con.transaction():
                await con.execute(f"SELECT pg_advisory_xact_lock({_LOCK})")
                i = (await con.fetchval("SELECT coalesce(max(id), 0) FROM dicts")) + 1
                if i > codecmod.MAX_DICTS:
                    return
                await con.execute("INSERT INTO dicts (id, data) VALUES ($1, $2)", i, data)
            await self._load_dicts(con)

    # -- retention ----------------------------------------------------------
    async def _partitions(self, con, j: Journal) -> list[tuple[int, int, str]]:
        rows = await con.fetch("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                               "WHERE i.inhparent = $1::regclass", j.table)
        return sorted((*_bounds(j, name), name) for (name,) in rows)

    async def _rows(self, con, j: Journal, parts: list[tuple[int, int, str]]) -> dict[str, int]:
        """Rows per partition; closed partitions (ended over a day ago) are counted once."""
        closed_before = time.time_ns() - CLOSED_NS
        out = {}
        for _lo, hi, name in parts:
            n = self._counts.get(name)
            if n is None:
                n = await con.fetchval(f"SELECT count(*) FROM {name}")
                if hi < closed_before:
                    self._counts[name] = n
            out[name] = n
        return out

    async def retain(self, cutoff_ts: int, max_rows: int, max_bytes: int) -> RetentionResult:
        res = RetentionResult()

        def count(table: str, n: int) -> None:
            if n > 0:
                res.deleted[table] = res.deleted.get(table, 0) + n

        async with self.pool.acquire() as con:
            # one replica at a time: two passes would each delete the excess
            if not await con.fetchval(f"SELECT pg_try_advisory_lock({_RETAIN_LOCK})"):
                return res
            try:
                await self._retain(con, cutoff_ts, max_rows, max_bytes, count)
            finally:
                await con.execute(f"SELECT pg_advisory_unlock({_RETAIN_LOCK})")
        return res

    async def _retain(self, con, cutoff_ts: int, max_rows: int, max_bytes: int, count) -> None:
        live = await self._db_bytes(con)
        now = time.time_ns()
        for j in JOURNALS:
            parts = await self._partitions(con, j)
            rows = await self._rows(con, j, parts)
            total = sum(rows.values())
            extra, over_size, allowance = max(0, total - max_rows), 0, 0
            # the partition being written: the newest with rows that is not in the future (a future-dated
            # event makes one there)
            last_used = next((name for lo, _, name in reversed(parts) if rows[name] and lo <= now), None) or \
                next((name for _, _, name in reversed(parts) if rows[name]), None)
            if j is EVENTS and total:
                over_size, per_row = await self._size_excess(con, parts, rows, live, max_bytes)
                allowance = int(max_bytes / PARTS_PER_CAP / per_row)
                last_lo = next(lo for lo, _, n in parts if n == last_used)
                per_ns = recent_rate([(lo, hi, rows[n] * per_row) for lo, hi, n in parts if hi <= last_lo])
                if per_ns:
                    self.partition_ns = span_for(max_bytes, per_ns)
            # whole partitions first, a drop and no row-by-row delete: those aged out, the oldest over
            # the row cap, and over the size cap one that is not much more than the excess (one made
            # when the rate was lower can be far larger: its rows are deleted instead); never the one
            # holding the newest row
            dropped = set()
            for lo, hi, name in parts:
                if name == last_used or not (hi <= cutoff_ts or 0 < rows[name] <= extra
                                             or 0 < over_size and rows[name] <= over_size + allowance):
                    break
                await self._drop_partition(con, j, lo, hi, name)
                dropped.add(name)
                count(j.table, rows[name])
                extra, over_size = max(0, extra - rows[name]), max(0, over_size - rows[name])
            if dropped:
                await self._vacuum(con, f"{j.table}_pairs")      # the dropped partitions' pairs' space
            # what is left to do is in the partitions left: the newest loses at most half its rows a pass
            # (the estimate counts what no row deletion frees, the derived tables and fixed pages, as
            # rows: one pass over a cap that small would empty it; the next pass estimates again)
            if over_size:
                kept = sum(rows[n] for _, _, n in parts if n not in dropped and n != last_used)
                over_size = min(over_size, kept + rows.get(last_used, 0) // 2)
            extra = max(extra, over_size)
            # then the oldest rows, in small transactions: those aged out, then the excess
            top = None
            old = (f"WITH d AS (DELETE FROM {j.table} WHERE k IN (SELECT k FROM {j.table} WHERE k < $1 "
                   f"ORDER BY k LIMIT $2) RETURNING k) SELECT count(*), max(k) FROM d")
            while True:
                n, last = await con.fetchrow(old, cutoff_ts, RETAIN_BATCH)
                if not n:
                    break
                count(j.table, n)
                extra, top = max(0, extra - n), last
                if n < RETAIN_BATCH:
                    break
            oldest = (f"WITH d AS (DELETE FROM {j.table} WHERE k IN (SELECT k FROM {j.table} ORDER BY k "
                      f"LIMIT $1) RETURNING k) SELECT count(*), max(k) FROM d")
            while extra:
                n, last = await con.fetchrow(oldest, min(RETAIN_BATCH, extra))
                if not n:
                    break
                count(j.table, n)
                extra, top = extra - n, last
            if top is not None:
                self._counts.clear()
                await self._vacuum_trimmed(con, [n for lo, _, n in parts if lo <= top and n not in dropped])
        async with con.transaction():
            oldest = await con.fetchval("SELECT min(k) FROM events")
            gone = {table: _rowcount(await con.execute(f"DELETE FROM {table} WHERE {col} < $1",
                                                       derived_cutoff(table, cutoff_ts, oldest)))
                    for table, col in AGED}
            for table in CAPPED:
                ts = await con.fetchval(f"SELECT ts FROM {table} ORDER BY ts DESC LIMIT 1 OFFSET $1", max_rows)
                if ts is not None:
                    gone[table] += _rowcount(await con.execute(f"DELETE FROM {table} WHERE ts <= $1", ts))
        for table, n in gone.items():
            count(table, n)
            if n >= VACUUM_AFTER:       # the space for new rows now, not at autovacuum's next round
                await self._vacuum(con, table)

    async def _drop_partition(self, con, j: Journal, lo: int, hi: int, name: str) -> None:
        """A partition and its pairs, in one transaction under the partition lock (a replica cannot make
        one with the same range and record pairs in between)."""
        async with con.transaction():
            await con.execute(f"SELECT pg_advisory_xact_lock({_LOCK})")
            await con.execute(f"DROP TABLE {name}")
            await con.execute(f"DELETE FROM {j.table}_pairs WHERE part_lo = $1", lo)
            await con.execute("DELETE FROM store_meta WHERE name = $1", TRIMMED + name)
        if (lo, hi) in self._spans.get(j.table, []):
            self._spans[j.table].remove((lo, hi))
        if self._seen[j.table].piece == lo:
            self._seen[j.table].forget()
        self._counts.pop(name, None)

    async def _size_excess(self, con, parts: list[tuple[int, int, str]], rows: dict[str, int], live: int,
                           max_bytes: int) -> tuple[int, float]:
        """(events to delete for the size cap, bytes a row takes). A partition retention deleted rows
        from keeps its file size (VACUUM only makes the space reusable), so `live` counts it at its rows
        times the bytes a row takes in partitions never trimmed (never more than its file); measured as
        files, every pass would find the database as large as before and delete a share of what is left
        again. The bytes per row come from untrimmed partitions with rows enough to measure them (a new
        one's fixed index pages over a few rows would inflate them), else from the last such measure."""
        total = sum(rows.values())
        trimmed = {r[0][len(TRIMMED):] for r in await con.fetch(
            "SELECT name FROM store_meta WHERE starts_with(name, $1)", TRIMMED)}
        whole = [name for _, _, name in parts if name not in trimmed and rows.get(name)]
        per_row: float | None = None
        if sum(rows[n] for n in whole) >= MIN_ROWS_TO_MEASURE:
            per_row = await self._bytes_of(con, whole) / sum(rows[n] for n in whole)
            await con.execute("INSERT INTO store_meta (name, n) VALUES ('row_bytes', $1) "
                              "ON CONFLICT (name) DO UPDATE SET n = $1", max(1, int(per_row)))
        else:
            per_row = await con.fetchval("SELECT n FROM store_meta WHERE name = 'row_bytes'")
        per_row = per_row or live / total
        for name in (n for _, _, n in parts if n in trimmed):
            live += min(0, int(rows.get(name, 0) * per_row) - await self._bytes_of(con, [name]))
        return (int((live - SIZE_TARGET * max_bytes) / per_row) + 1 if live > max_bytes else 0), per_row

    async def _vacuum_trimmed(self, con, names: list[str]) -> None:
        """Mark the partitions rows were deleted from, and VACUUM them: new rows reuse the space."""
        for name in names:
            await con.execute("INSERT INTO store_meta (name, n) VALUES ($1, 1) ON CONFLICT DO NOTHING",
                              TRIMMED + name)
            await self._vacuum(con, name)

    @staticmethod
    async def _vacuum(con, table: str) -> None:
        """VACUUM `table`; a failure (a slow one past its timeout) leaves the space to autovacuum and
        the pass goes on."""
        try:
            await con.execute(f"VACUUM {table}", timeout=VACUUM_TIMEOUT_S)
        except (asyncpg.PostgresError, asyncio.TimeoutError) as e:
            _log.warning("retention: VACUUM %s failed (%s); autovacuum will reclaim its space", table, e)

    @staticmethod
    async def _bytes_of(con, rels: list[str]) -> int:
        return int(await con.fetchval("SELECT coalesce(sum(pg_total_relation_size(c::regclass)), 0) "
                                      "FROM unnest($1::text[]) c", rels))

    async def _db_bytes(self, con) -> int:
        rels = [name for j in JOURNALS for _, _, name in await self._partitions(con, j)] + list(_DERIVED) + \
            ["names", "ip_names", "dicts", *(f"{j.table}_pairs" for j in JOURNALS)]
        return await self._bytes_of(con, rels)

    # -- queries ------------------------------------------------------------
    async def _read(self, pl: journal.Plan) -> dict:
        j = pl.journal
        async with self.pool.acquire() as con:
            ids = {}
            for col, s in pl.names.items():
                ids[col] = await con.fetchval("SELECT id FROM names WHERE s = $1", s)
            conts = None
            if pl.container is not None:
                conts = {r[0] for r in await con.fetch(
                    "SELECT n.id FROM containers c JOIN names n ON n.s = c.id WHERE c.name = $1", pl.container)}
                if query._HEX.match(pl.container):
                    conts |= {r[0] for r in await con.fetch(
                        "SELECT id FROM names WHERE s >= $1 AND s < $2 AND length(s) = 64",
                        pl.container, pl.container + "g")}
                conts = sorted(conts)
            probes = journal.probes(pl, ids, conts)
            if probes is None:
                return {"items": [], "next_cursor": None}
            lo, hi = journal.key_bounds(pl)
            pages = []
            for pr in probes:
                if pl.words:
                    pages.append(await self._search(con, j, pl, pr, lo, hi))
                    continue
                b = query.POSTGRES.builder()
                b.add("k BETWEEN {} AND {}", lo, hi)
                for col, v in pr.items():
                    b.add(f"{col} = {{}}", v)
                sql = f"SELECT k, body FROM {j.table}{b.where_sql()} ORDER BY k DESC LIMIT {b.ph(pl.limit + 1)}"
                pages.append([(r[0], r[1]) for r in await con.fetch(sql, *b.args)])
            rows = journal.merge_pages(pages, pl.limit)
            bodies = await self._decode_all(con, [r[1] for r in rows[:pl.limit]])
        nxt = str(rows[pl.limit - 1][0]) if len(rows) > pl.limit else None
        return {"items": [orjson.Fragment(b) for b in bodies], "next_cursor": nxt}

    async def _search(self, con, j: Journal, pl: journal.Plan, probe: dict, lo: int, hi: int) -> list[tuple]:
        """Word search within a container: the words and the container's scope token are one GIN
        intersection (rows from the watermark on; older ones are searched as before)."""
        if "cont" not in probe:
            return await self._search_range(con, j, pl, probe, lo, hi, pl.words)
        scoped, old = journal.split_scoped(lo, hi, self._scoped_since.get(j.table, journal.KEY_MAX))
        rows: list[tuple] = []
        if scoped:
            words = [*pl.words, journal.scope_token(probe["cont"])]
            for a, b in await self._pieces(con, j, probe["cont"], pl.words, *scoped):
                rows += await self._search_range(con, j, pl, probe, a, b, words, min(PIECE_WALK, SEARCH_WALK))
                if len(rows) > pl.limit:
                    break
        if old and len(rows) <= pl.limit:
            rows += await self._search_range(con, j, pl, probe, *old, pl.words)
        return rows

    async def _pieces(self, con, j: Journal, cont: int, words: list[tuple[str, bool]], lo: int,
                      hi: int) -> list[tuple[int, int]]:
        """[lo, hi] as the key ranges of the partitions where container `cont` has every whole word,
        newest first (pairs.py); keys below the pairs' watermark are always kept."""
        hashes = query_hashes([w for w, prefix in words if not prefix])
        since = self._pairs_since.get(j.table, journal.KEY_MAX)
        if not hashes or hi < since:
            return [(lo, hi)]
        held = {r[0] for r in await con.fetch(
            f"SELECT part_lo FROM {j.table}_pairs WHERE cont = $1 AND wh = ANY($2::bigint[]) "
            "GROUP BY part_lo HAVING count(*) = $3", cont, sorted(hashes), len(hashes))}
        out = []
        for p_lo, p_hi, _ in reversed(await self._partitions(con, j)):
            a, b = max(lo, p_lo), min(hi, p_hi - 1)
            if a > b:
                continue
            if p_lo in held or b < since:
                out.append((a, b))
            elif a < since:
                out.append((a, since - 1))      # rows before the watermark have no pairs to tell
        return out

    async def _search_range(self, con, j: Journal, pl: journal.Plan, probe: dict, lo: int, hi: int,
                            words: list[tuple[str, bool]], walk: int | None = None) -> list[tuple]:
        """Word search, never a walk of the whole table: the newest `walk` (SEARCH_WALK) rows are checked
        first (frequent words fill the page there); past them, the GIN index finds the rest (rare words)."""
        walk = walk or SEARCH_WALK
        def where(upper: int) -> query.SqlBuilder:
            b = query.POSTGRES.builder()
            b.add("k BETWEEN {} AND {}", lo, upper)
            for col, v in probe.items():
                b.add(f"{col} = {{}}", v)
            return b
        b = where(hi)
        q, n = b.ph(tsquery(words)), b.ph(pl.limit + 1)
        async with con.transaction():
            # a walk by key that stops at the page's end: left to itself, the planner reads every row
            # in the range (a bitmap or parallel scan, then a sort) when it guesses they are few
            await con.execute("SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off; "
                              "SET LOCAL enable_sort = off")
            rows = [(r[0], r[1]) for r in await con.fetch(
                f"SELECT k, body FROM (SELECT k, body, words FROM {j.table}{b.where_sql()} ORDER BY k DESC "
                f"LIMIT {walk}) s WHERE words @@ {q}::tsquery ORDER BY k DESC LIMIT {n}", *b.args)]
        if len(rows) > pl.limit:
            return rows
        b = where(hi)
        edge = await con.fetchval(f"SELECT k FROM {j.table}{b.where_sql()} ORDER BY k DESC "
                                  f"OFFSET {walk - 1} LIMIT 1", *b.args)
        if edge is None:          # fewer rows than the walk: all were checked
            return rows
        b = where(edge - 1)
        b.add("words @@ {}::tsquery", tsquery(words))
        async with con.transaction():
            await con.execute("SET LOCAL enable_indexscan = off")     # the GIN index (bitmap), not a key walk
            await con.execute("SET LOCAL enable_seqscan = off")
            more = await con.fetch(f"SELECT k, body FROM {j.table}{b.where_sql()} ORDER BY k DESC "
                                   f"LIMIT {b.ph(pl.limit + 1 - len(rows))}", *b.args)
        return rows + [(r[0], r[1]) for r in more]

    async def events(self, params: dict) -> dict:
        return await self._read(journal.plan(EVENTS, params))

    async def alerts(self, params: dict) -> dict:
        return await self._read(journal.plan(ALERTS, params))

    async def containers(self) -> list[dict]:
        async with self.pool.acquire() as con:
            return [container_dict(r) for r in await con.fetch(CONTAINER_SELECT)]

    async def process_tree(self, params: dict) -> list[dict]:
        tq = query.tree_query(params)
        b = query.POSTGRES.builder()
        if tq.container is not None:
            hexed = bool(query._HEX.match(tq.container))
            b.add("container_id IN (SELECT id FROM containers WHERE name = {} OR (id >= {} AND id < {}))",
                  tq.container, tq.container if hexed else "g", tq.container + "g" if hexed else "g")
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
            out = {}
            for j in JOURNALS:
                out[j.table] = sum((await self._rows(con, j, await self._partitions(con, j))).values())
            for t in _DERIVED:
                out[t] = await con.fetchval(f"SELECT count(*) FROM {t}")
            out["db_bytes"] = await self._db_bytes(con)
        return out
