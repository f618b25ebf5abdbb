"""SQLite backend: one file, WAL; every call runs in a thread, never on the event loop.

One writer thread (one connection) and one reader thread (another
connection): WAL lets queries run while a batch is being written.
Events and alerts are journals (journal.py): typed columns, zstd bodies,
a contentless FTS5 index of their words in key-range shards (fts_shards.py);
retention deletes the oldest rows in small transactions so writes go on
between them, and drops a shard's words when its rows are all gone.
"""
from __future__ import annotations

import asyncio
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import codec as codecmod
from . import derive, journal, migrate, query
from .backend import RetentionResult, WriteResult, container_dict, tree_from_rows
from .fts_shards import ROW_BYTES_GUESS, Shards, add_pairs_column
from .journal import ALERTS, EVENTS, JOURNALS, Journal
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
    sqlite_ddl,
    statements,
)

_SQL = statements(query.SQLITE)
RETAIN_BATCH = 5000
RETAIN_PASSES = 5
SIZE_TARGET = 0.9        # over max_bytes: delete down to this share of it
_DERIVED = ("containers", "connections", "container_ips", "processes")


class _Conn:
    """A connection owned by one single-thread executor, with its own codec and name cache."""

    def __init__(self, path: str, name: str) -> None:
        self.path = path
        self.pool = ThreadPoolExecutor(1, thread_name_prefix=f"sqlite-{name}")
        self.db: sqlite3.Connection | None = None
        self.codec = codecmod.Codec()
        self.names: dict[str, int] = {}
        self.shards = {j.table: Shards(j) for j in JOURNALS}

    def _open(self) -> sqlite3.Connection:
        if self.db is None:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=30000")
        return self.db

    async def call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, lambda: fn(self, self._open(), *args))

    async def close(self) -> None:
        def shut(c: "_Conn", db: sqlite3.Connection) -> None:
            db.close()
            c.db = None
        if self.db is not None:
            await self.call(shut)
        self.pool.shutdown(wait=True)

    def load_dicts(self, db: sqlite3.Connection) -> None:
        for i, data in db.execute("SELECT id, data FROM dicts ORDER BY id"):
            if not self.codec.has(i):
                self.codec.add_dict(i, data)

    def decode(self, db: sqlite3.Connection, blob: bytes) -> bytes:
        if not self.codec.has(blob[0]):      # trained by the writer since we last looked
            self.load_dicts(db)
        return self.codec.decode(blob)


def private_db_file(path: Path) -> None:
    """The database (and its -wal/-shm files, which SQLite creates with the same mode) is
    readable by its owner only; a new directory for it is 0700."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)


class SqliteBackend:
    name = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self._w = _Conn(path, "write")
        self._r = _Conn(path, "read")
        self.training = codecmod.Training(self._w.codec, self._install_dict)

    async def open(self) -> None:
        if self.path != ":memory:":
            private_db_file(Path(self.path))
        await self._w.call(_init)

    async def _install_dict(self, data: bytes) -> None:
        await self._w.call(_add_dict, data)

    async def close(self) -> None:
        await self.training.stop()
        await self._r.close()
        await self._w.close()

    def is_transient(self, exc: BaseException) -> bool:
        # locked, disk full or I/O errors; data errors are IntegrityError, DataError, ...
        return isinstance(exc, (sqlite3.OperationalError, OSError))

    # -- writes -------------------------------------------------------------
    async def write(self, events: list[dict], alerts: list[dict]) -> WriteResult:
        res = await self._w.call(_write, events, alerts)
        self.training.after_write(len(events) + len(alerts))
        return res

    async def retain(self, cutoff_ts: int, max_rows: int, max_bytes: int) -> RetentionResult:
        res = RetentionResult()
        for attempt in range(RETAIN_PASSES):   # the size estimate is rough: check again after each pass
            excess = await self._w.call(_excess, max_rows, max_bytes)
            if attempt and not any(extra or below > journal.KEY_MIN for extra, below in excess.values()):
                break
            for j in JOURNALS:
                extra, below = excess[j.table]
                below = max(below, cutoff_ts)
                while True:     # small transactions: the writer gets its turn between them
                    n, extra, more = await self._w.call(_retain_batch, j, below, extra)
                    if n:
                        res.deleted[j.table] = res.deleted.get(j.table, 0) + n
                    if not more:
                        break
        for table, n in (await self._w.call(_retain_derived, cutoff_ts, max_rows)).items():
            res.deleted[table] = n
        return res

    # -- queries ------------------------------------------------------------
    async def events(self, params: dict) -> dict:
        return await self._r.call(_read, journal.plan(EVENTS, params))

    async def alerts(self, params: dict) -> dict:
        return await self._r.call(_read, journal.plan(ALERTS, params))

    async def containers(self) -> list[dict]:
        rows = await self._r.call(lambda c, db: db.execute(CONTAINER_SELECT).fetchall())
        return [container_dict(r) for r in rows]

    async def process_tree(self, params: dict) -> list[dict]:
        tq = query.tree_query(params)
        where, args = [], []
        if tq.container is not None:
            # ids by name or id prefix, both through containers' indexes; then processes by container index
            where.append("container_id IN (SELECT id FROM containers WHERE name = ? OR (id >= ? AND id < ?))")
            hexed = bool(query._HEX.match(tq.container))
            args += [tq.container, tq.container if hexed else "g", tq.container + "g" if hexed else "g"]
        if tq.pid is not None:
            where.append("node IN (SELECT node FROM processes WHERE pid = ?)")
            args.append(tq.pid)
        if tq.node is not None:
            where.append("node = ?")
            args.append(tq.node)
        sql = f"{PROCESS_SELECT} WHERE {' AND '.join(where)} ORDER BY pid LIMIT {MAX_TREE_ROWS}"
        rows = await self._r.call(lambda c, db: db.execute(sql, args).fetchall())
        return tree_from_rows(rows, tq)

    async def network_graph(self, params: dict) -> dict:
        since = query.graph_since(params)

        def read(c: _Conn, db: sqlite3.Connection):
            edges = db.execute("SELECT src, dst, port, proto, origin, count, last_seen FROM connections "
                               "WHERE last_seen >= ?", (since,)).fetchall()
            ips = dict(db.execute("SELECT ip, container_id FROM container_ips").fetchall())
            names = dict(db.execute("SELECT id, name FROM containers").fetchall())
            dns = db.execute(GRAPH_NAMES_SELECT).fetchall()
            meta = derive.container_meta(db.execute(CONTAINER_META_SELECT).fetchall())
            return edges, ips, names, dns, meta
        return derive.build_graph(*await self._r.call(read))

    async def counts(self) -> dict:
        def read(c: _Conn, db: sqlite3.Connection) -> dict:
            out = {j.table: db.execute("SELECT n FROM counters WHERE name = ?", (j.table,)).fetchone()[0]
                   for j in JOURNALS}
            out.update({t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in _DERIVED})
            out["db_bytes"] = _db_bytes(db)
            return out
        return await self._r.call(read)


# -- schema -----------------------------------------------------------------

def _init(c: _Conn, db: sqlite3.Connection) -> None:
    found = migrate.sqlite_version(db)
    if found is not None and found > SCHEMA_VERSION:
        raise migrate.SchemaError(f"{c.path}: schema version {found} is newer than this store's "
                                  f"({SCHEMA_VERSION}); run a newer eunomia, or move the file aside to start empty")
    if found == 1:
        migrate.sqlite_rename_v1(db)
    db.execute("BEGIN IMMEDIATE")
    try:
        for stmt in sqlite_ddl():
            db.execute(stmt)
        add_pairs_column(db)
        for j in JOURNALS:
            c.shards[j.table].ensure(db)
            db.execute("INSERT INTO counters (name, n) VALUES (?, 0) ON CONFLICT DO NOTHING", (j.table,))
            # rows already there were indexed without scope tokens (none: a new database)
            db.execute(f"INSERT INTO counters (name, n) SELECT ?, coalesce(max(k), -1) + 1 FROM {j.table} "
                       "WHERE true ON CONFLICT DO NOTHING", (journal.scope_key(j),))  # WHERE: SQLite's upsert parse
        db.execute("COMMIT")
    except BaseException:
        _rollback(db)
        raise
    c.load_dicts(db)
    if migrate.sqlite_has_v1(db):
        migrate.sqlite_copy_v1(db, lambda evs, als: _write(c, db, evs, als, derived=False))
    if migrate.sqlite_version(db) != SCHEMA_VERSION:
        db.execute("DELETE FROM schema_version")
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))


# -- writes -----------------------------------------------------------------

def _intern(c: _Conn, db: sqlite3.Connection, s: str | None) -> int | None:
    if s is None:
        return None
    i = c.names.get(s)
    if i is None:
        db.execute("INSERT INTO names (s) VALUES (?) ON CONFLICT (s) DO NOTHING", (s,))
        i = c.names[s] = db.execute("SELECT id FROM names WHERE s = ?", (s,)).fetchone()[0]
        if len(c.names) > 100_000:
            c.names.clear()
    return i


def _insert(c: _Conn, db: sqlite3.Connection, j: Journal, items: list[dict]) -> list[dict]:
    """Store items under the first free keys at or after their ts; returns those not already stored.
    One writer per file: the keys the batch wants are looked up at once, then all rows go in at once."""
    if not items:
        return []
    wanted = sorted({it["ts"] for it in items})
    taken: dict[int, int] = {}
    for i in range(0, len(wanted), 500):
        part = wanted[i:i + 500]
        taken.update(db.execute(f"SELECT k, idh FROM {j.table} WHERE k IN ({', '.join('?' * len(part))})", part))
    asked = set(wanted)
    rows, words, new = [], [], []
    since = _scoped_since(db, j)
    for it in items:
        h = journal.idh(it)
        k = it["ts"]
        while k in taken and taken[k] != h:      # another event holds this ns: the next one
            k += 1
            if k not in asked:
                asked.add(k)
                row = db.execute(f"SELECT idh FROM {j.table} WHERE k = ?", (k,)).fetchone()
                if row:
                    taken[k] = row[0]
        if taken.get(k) == h:                        # already stored (or twice in this batch)
            continue
        taken[k] = h
        strs, ints = journal.row_values(j, it)
        raw = codecmod.dumps(it)
        c.codec.sample(raw)
        named = [_intern(c, db, strs[col]) for col in j.named]
        rows.append((k, h, *named, *(ints[col] for col in j.ints), c.codec.encode(raw)))
        text = codecmod.search_text(it)
        words.append((k, _words_of(k, text, named[j.cont_at], since), named[j.cont_at]))
        new.append(it)
    rows.sort(key=lambda r: r[0])      # in key order: appends, full pages
    words.sort(key=lambda r: r[0])
    c.shards[j.table].place(db, words)     # before the rows: it reads the newest key stored
    db.executemany(f"INSERT INTO {j.table} ({', '.join(j.columns)}) VALUES ({', '.join('?' * len(j.columns))})",
                   rows)
    return new


def _write(c: _Conn, db: sqlite3.Connection, events: list[dict], alerts: list[dict],
           derived: bool = True) -> WriteResult:
    res = WriteResult()
    db.execute("BEGIN IMMEDIATE")
    try:
        new = _insert(c, db, EVENTS, derive.unique_by_id(events))
        res.alerts = len(_insert(c, db, ALERTS, derive.unique_by_id(alerts)))
        res.events = len(new)
        res.duplicates = len(events) + len(alerts) - res.events - res.alerts
        for j, n in ((EVENTS, res.events), (ALERTS, res.alerts)):
            if n:
                db.execute("UPDATE counters SET n = n + ? WHERE name = ?", (n, j.table))
        if derived:
            d = derive.derive(new)
            db.executemany(_SQL["container"], d.container_rows())
            db.executemany(_SQL["connection"], d.connection_rows())
            db.executemany(_SQL["ip"], d.ip_rows())
            db.executemany(_SQL["ip_name"], d.ip_name_rows())
            db.executemany(_SQL["process"], d.process_rows())
            db.executemany(_SQL["exit"], d.exit_rows())
        db.execute("COMMIT")
        res.db_bytes = _db_bytes(db)
    except BaseException:
        c.names.clear()       # ids interned in the rolled-back transaction are gone
        for sh in c.shards.values():
            sh.forget_pairs()     # and the pairs it recorded
        _rollback(db)
        for sh in c.shards.values():
            sh.load(db)       # and its shards' rows (and a shard it opened)
        raise
    return res


def _rollback(db: sqlite3.Connection) -> None:
    """Undo the transaction, unless SQLite already has (a full disk, an I/O error or a busy lock
    roll it back by themselves: ROLLBACK would then raise and hide both the error and the undo)."""
    if db.in_transaction:
        db.execute("ROLLBACK")


def _add_dict(c: _Conn, db: sqlite3.Connection, data: bytes) -> None:
    i = c.codec.current + 1
    db.execute("INSERT INTO dicts (id, data) VALUES (?, ?)", (i, data))
    c.codec.add_dict(i, data)


# -- retention --------------------------------------------------------------

def _db_bytes(db: sqlite3.Connection) -> int:
    pages = db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
    return pages * db.execute("PRAGMA page_size").fetchone()[0]


def _excess(c: _Conn, db: sqlite3.Connection, max_rows: int, max_bytes: int) -> dict[str, tuple[int, int]]:
    """Per journal: (rows to delete oldest first for the row cap, keys below which to delete for the
    size cap). Over the size cap, whole shards go (their words with them): deleting only part of
    one would leave its words in the file."""
    counts = dict(db.execute("SELECT name, n FROM counters").fetchall())
    out = {j.table: (max(0, counts.get(j.table, 0) - max_rows), journal.KEY_MIN) for j in JOURNALS}
    live, rows = _db_bytes(db), counts.get("events", 0)
    shards = c.shards[EVENTS.table]
    shards.size_for(min(max_rows, int(max_bytes * rows / live) if rows else max_bytes // ROW_BYTES_GUESS))
    if live > max_bytes and rows:
        # freed pages are reused by new rows, so live pages ~ rows x bytes per row
        n = int((live - SIZE_TARGET * max_bytes) * rows / live) + 1
        kth = db.execute("SELECT k FROM events ORDER BY k LIMIT 1 OFFSET ?", (min(n, rows) - 1,)).fetchone()
        if kth is not None:
            out["events"] = (out["events"][0], shards.size_cut(kth[0]))
    return out


def _retain_batch(c: _Conn, db: sqlite3.Connection, j: Journal, below: int, extra: int) -> tuple[int, int, bool]:
    """Delete up to RETAIN_BATCH of the oldest rows whose key is below `below` or that are among the
    `extra` oldest, then the shards of words left without rows. Returns (deleted, extra left, more to do)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        keys = [r[0] for r in db.execute(f"SELECT k FROM {j.table} ORDER BY k LIMIT ?", (RETAIN_BATCH,))]
        n = 0
        while n < len(keys) and (keys[n] < below or n < extra):
            n += 1
        if n:
            db.execute(f"DELETE FROM {j.table} WHERE k <= ?", (keys[n - 1],))
            db.execute("UPDATE counters SET n = n - ? WHERE name = ?", (n, j.table))
            c.shards[j.table].drop_dead(db)
        db.execute("COMMIT")
    except BaseException:
        _rollback(db)
        c.shards[j.table].load(db)
        raise
    return n, max(0, extra - n), n == RETAIN_BATCH


def _retain_derived(c: _Conn, db: sqlite3.Connection, cutoff: int, max_rows: int) -> dict[str, int]:
    out: dict[str, int] = {}
    db.execute("BEGIN IMMEDIATE")
    try:
        oldest = db.execute("SELECT min(k) FROM events").fetchone()[0]
        for table, col in AGED:
            out[table] = db.execute(f"DELETE FROM {table} WHERE {col} < ?",
                                    (derived_cutoff(table, cutoff, oldest),)).rowcount
        for table in CAPPED:
            row = db.execute(f"SELECT ts FROM {table} ORDER BY ts DESC LIMIT 1 OFFSET ?", (max_rows,)).fetchone()
            if row:
                out[table] += db.execute(f"DELETE FROM {table} WHERE ts <= ?", (row[0],)).rowcount
        db.execute("COMMIT")
    except BaseException:
        _rollback(db)
        raise
    return {t: n for t, n in out.items() if n > 0}


# -- reads ------------------------------------------------------------------

def _lookup(db: sqlite3.Connection, s: str) -> int | None:
    row = db.execute("SELECT id FROM names WHERE s = ?", (s,)).fetchone()
    return row[0] if row else None


def _containers(db: sqlite3.Connection, value: str) -> list[int]:
    """Interned ids of the containers a `container` filter names (id prefix or name)."""
    ids = {r[0] for r in db.execute("SELECT n.id FROM containers c JOIN names n ON n.s = c.id WHERE c.name = ?",
                                    (value,))}
    if query._HEX.match(value):
        ids |= {r[0] for r in db.execute("SELECT id FROM names WHERE s >= ? AND s < ? AND length(s) = 64",
                                         (value, value + "g"))}
    return sorted(ids)


def fts_match(words: list[tuple[str, bool]]) -> str:
    return " AND ".join(f'"{w}"*' if prefix else f'"{w}"' for w, prefix in words)


def probe_sql(pl: journal.Plan, probe: dict[str, int], since: int = journal.KEY_MAX, fts: str | None = None,
              bounds: tuple[int, int] | None = None) -> list[tuple[str, list]]:
    """One probe's SELECTs of (k, body), newest first: each an index walk in key order that stops at
    the page's end. A word search reads one shard of words (`fts`, keys within `bounds`); within a
    container it intersects the words with the container's scope token (from the watermark `since`
    on; older rows are checked row by row)."""
    j = pl.journal
    lo, hi = bounds or journal.key_bounds(pl)
    conds = "".join(f" AND t.{col} = ?" for col in probe)
    if not pl.words:
        return [(f"SELECT t.k, t.body FROM {j.table} t WHERE t.k BETWEEN ? AND ?{conds} ORDER BY t.k DESC LIMIT ?",
                 [lo, hi, *probe.values(), pl.limit + 1])]
    fts = fts or j.fts
    sql = (f"SELECT t.k, t.body FROM {fts} f JOIN {j.table} t ON t.k = f.rowid "
           f"WHERE {fts} MATCH ? AND f.rowid BETWEEN ? AND ?{conds} ORDER BY f.rowid DESC LIMIT ?")
    if "cont" not in probe:
        return [(sql, [fts_match(pl.words), lo, hi, *probe.values(), pl.limit + 1])]
    scoped, old = journal.split_scoped(lo, hi, since)
    out = []
    if scoped:
        out.append((sql, [fts_match([*pl.words, journal.scope_token(probe["cont"])]), *scoped, *probe.values(),
                          pl.limit + 1]))
    if old:
        out.append((sql, [fts_match(pl.words), *old, *probe.values(), pl.limit + 1]))
    return out


def _words_of(k: int, text: str, cont: int | None, since: int) -> str:
    """A row's FTS5 words: the scope token from the watermark on."""
    return journal.scoped_words(text, cont) if k >= since else text


def _scoped_since(db: sqlite3.Connection, j: Journal) -> int:
    row = db.execute("SELECT n FROM counters WHERE name = ?", (journal.scope_key(j),)).fetchone()
    return row[0] if row else journal.KEY_MAX


def _read(c: _Conn, db: sqlite3.Connection, pl: journal.Plan) -> dict:
    """One snapshot (a read transaction): the shards listed are the shards read, whatever retention
    drops meanwhile."""
    db.execute("BEGIN")
    try:
        return _read_in(c, db, pl)
    finally:
        db.execute("COMMIT")


def _read_in(c: _Conn, db: sqlite3.Connection, pl: journal.Plan) -> dict:
    ids = {col: _lookup(db, s) for col, s in pl.names.items()}
    conts = _containers(db, pl.container) if pl.container is not None else None
    probes = journal.probes(pl, ids, conts)
    if probes is None:
        return {"items": [], "next_cursor": None}
    pages = []
    since = _scoped_since(db, pl.journal) if pl.words else journal.KEY_MAX
    # a word search reads the shards newest first, until one probe has a page (older shards hold older keys);
    # within a container, only the shards where it has every word
    sh = c.shards[pl.journal.table]
    shards = sh.load(db).ranges(*journal.key_bounds(pl)) if pl.words else [(None, 0, 0)]
    whole = [w for w, prefix in pl.words if not prefix]
    for pr in probes:
        try:
            got = 0
            for s, lo, hi in shards:
                if s is not None and "cont" in pr and not sh.may_hold(db, s, pr["cont"], whole):
                    continue
                fts = sh.table(s) if s is not None else None
                for sql, args in probe_sql(pl, pr, since, fts, (lo, hi) if fts else None):
                    pages.append(db.execute(sql, args).fetchall())
                    got += len(pages[-1])
                if got > pl.limit:
                    break
        except sqlite3.OperationalError as e:
            if not pl.words or "fts5" not in str(e):
                raise
            raise query.QueryError(f"parameter 'q': cannot search for {pl.words!r}: {e}") from None
    return journal.page(journal.merge_pages(pages, pl.limit), pl.limit, lambda b: c.decode(db, b))
