"""SQLite's word index in key-range shards: one FTS5 table per range of keys (= time).

A contentless FTS5 table forgets a row's words only when given them again
(decompress, parse and split the body: most of what retention spent), and the
forgotten words stay in the index as tombstones until its segments merge, so
deleting rows first grew the index. With shards, retention deletes rows only
and drops a shard's table once every key in its range is gone: the space comes
back at once. Words of rows already deleted in a partly retained shard are
harmless: a search reads rows through the row table.

Shard 0 is the journal's `<table>_fts` of schema version 3; later ones are
`<table>_fts_<id>`. `fts_shards` holds each shard's first key; a shard ends
where the next begins. The newest takes new keys until it has `rows_per_shard`
rows; retention sizes that to about 1/SHARDS_PER_CAP of the rows under the cap.

Each shard also records which words occur in which container (pairs.py,
`<fts>_pairs`: shard, container, word hash); a word search within a container
skips a shard that lacks a pair. Shards made before version 5 have no pairs
(`pairs` = 0) and are always read.
"""
from __future__ import annotations

import bisect
import sqlite3
from dataclasses import dataclass

from .journal import KEY_MIN, Journal
from .pairs import Seen, query_hashes

SHARDS_PER_CAP = 8
DEFAULT_SHARD_ROWS = 250_000    # until retention sizes them (its first pass, when the store starts)
MIN_SHARD_ROWS, MAX_SHARD_ROWS = 200, 2_000_000
OVERSIZED = 2                   # a shard of more than this many times rows_per_shard is cut inside
ROW_BYTES_GUESS = 300           # a stored event, all told, while there are none to measure

DDL = "CREATE TABLE IF NOT EXISTS fts_shards (journal TEXT NOT NULL, id INTEGER NOT NULL, k_lo INTEGER NOT NULL, " \
      "rows INTEGER NOT NULL, pairs INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (journal, id))"


def pairs_ddl(j: Journal) -> str:
    return (f"CREATE TABLE IF NOT EXISTS {j.fts}_pairs (shard INTEGER NOT NULL, cont INTEGER NOT NULL, "
            "wh INTEGER NOT NULL, PRIMARY KEY (shard, cont, wh)) WITHOUT ROWID")


def add_pairs_column(db: sqlite3.Connection) -> None:
    """Schema version 4's fts_shards gets the `pairs` flag (0: its shards hold no pairs)."""
    if "pairs" not in {r[1] for r in db.execute("PRAGMA table_info(fts_shards)")}:
        db.execute("ALTER TABLE fts_shards ADD COLUMN pairs INTEGER NOT NULL DEFAULT 0")


def fts_ddl(name: str) -> str:
    # contentless: the words are not stored twice; detail=none, columnsize=0: no positions, no sizes
    # (no ranking), a few bytes per word
    return (f"CREATE VIRTUAL TABLE IF NOT EXISTS {name} USING fts5(words, content='', detail=none, columnsize=0, "
            "tokenize=\"unicode61 remove_diacritics 0 tokenchars '._:'\")")


def _holding(los: list[int], k: int) -> int:
    """Index of the shard holding `k`, given the shards' first keys in order (the oldest takes keys
    below every shard left)."""
    return max(0, bisect.bisect_right(los, k) - 1)


@dataclass
class Shard:
    id: int
    k_lo: int
    rows: int
    pairs: bool = False     # (container, word) pairs recorded from its first row on


class Shards:
    """One journal's shards as this connection last read them, oldest first."""

    def __init__(self, j: Journal) -> None:
        self.j = j
        self.list: list[Shard] = []
        self.rows_per_shard = DEFAULT_SHARD_ROWS
        self.close_next = False      # retention wants the newest shard's rows gone: close it at the next write
        self.pairs = f"{j.fts}_pairs"
        self._seen = Seen()          # pairs already in the newest shard's table

    def table(self, s: Shard) -> str:
        return self.j.fts if s.id == 0 else f"{self.j.fts}_{s.id}"

    def load(self, db: sqlite3.Connection) -> "Shards":
        """Read the shards again (after a rollback too: the pairs remembered may not have been kept)."""
        self.list = [Shard(i, k_lo, rows, bool(pairs)) for i, k_lo, rows, pairs in db.execute(
            "SELECT id, k_lo, rows, pairs FROM fts_shards WHERE journal = ? ORDER BY k_lo", (self.j.table,))]
        self._seen.forget()
        return self

    def forget_pairs(self) -> None:
        """After a failed write: the pairs it recorded may not have been kept."""
        self._seen.forget()

    def ensure(self, db: sqlite3.Connection) -> None:
        """A new database, or one of schema version 3: shard 0 holds every key so far (in a transaction).
        Its pairs are recorded only if it starts empty."""
        db.execute(pairs_ddl(self.j))
        if self.load(db).list:
            return
        db.execute(fts_ddl(self.j.fts))
        n = db.execute(f"SELECT count(*) FROM {self.j.table}").fetchone()[0]
        db.execute("INSERT INTO fts_shards (journal, id, k_lo, rows, pairs) VALUES (?, 0, ?, ?, ?)",
                   (self.j.table, KEY_MIN, n, int(n == 0)))
        self.load(db)

    def _index(self, k: int) -> int:
        return _holding([s.k_lo for s in self.list], k)

    def place(self, db: sqlite3.Connection, words: list[tuple[int, str, int | None]]) -> None:
        """Insert a batch's (key, words, container) rows, sorted by key, each into the shard its key
        falls in, in the writer's transaction before the rows themselves go in. Keys above every stored
        one go to the newest shard, and a new one starts there whenever it is full, even mid-batch."""
        top = db.execute(f"SELECT max(k) FROM {self.j.table}").fetchone()[0]
        top = KEY_MIN if top is None else top
        los = [s.k_lo for s in self.list]
        pending = [0] * len(self.list)
        by_shard: dict[int, list[tuple[int, str, int | None]]] = {}
        for row in words:
            k = row[0]
            if k > top and k >= los[-1]:     # (a key below the newest shard's start, after the rows
                top = k                      # above it were all deleted, goes where its range is)
                filled = self.list[-1].rows + pending[-1]
                if k > los[-1] and filled and (filled >= self.rows_per_shard or self.close_next):
                    self._open(db, k)
                    los.append(k)
                    pending.append(0)
                    self.close_next = False
                i = len(self.list) - 1
            else:
                i = _holding(los, k)
            pending[i] += 1
            by_shard.setdefault(i, []).append(row)
        for i, rows in by_shard.items():
            s = self.list[i]
            db.executemany(f"INSERT INTO {self.table(s)} (rowid, words) VALUES (?, ?)", [r[:2] for r in rows])
            if s.pairs:
                self._pair(db, s, rows)
            s.rows += len(rows)
            db.execute("UPDATE fts_shards SET rows = ? WHERE journal = ? AND id = ?", (s.rows, self.j.table, s.id))

    def _pair(self, db: sqlite3.Connection, s: Shard, rows: list[tuple[int, str, int | None]]) -> None:
        """Record the (container, word) pairs of rows placed in `s` that it does not hold yet."""
        seen = self._seen if s is self.list[-1] else Seen()      # else: a late row in an older shard
        new = seen.new_pairs(s.id, ((text, cont) for _, text, cont in rows))
        if new:
            db.executemany(f"INSERT OR IGNORE INTO {self.pairs} (shard, cont, wh) VALUES ({s.id}, ?, ?)", new)

    def may_hold(self, db: sqlite3.Connection, s: Shard, cont: int, words: list[str]) -> bool:
        """False when shard `s` has no row of container `cont` with every one of `words` (whole words)."""
        hashes = query_hashes(words) if s.pairs else None
        if not hashes:
            return True
        found = db.execute(f"SELECT count(*) FROM {self.pairs} WHERE shard = ? AND cont = ? AND wh IN "
                           f"({', '.join('?' * len(hashes))})", (s.id, cont, *hashes)).fetchone()[0]
        return bool(found == len(hashes))

    def _open(self, db: sqlite3.Connection, k_lo: int) -> None:
        if k_lo <= self.list[-1].k_lo:
            raise ValueError(f"{self.j.table}: a shard from key {k_lo} would not follow the newest "
                             f"({self.list[-1].k_lo})")
        new = Shard(max(s.id for s in self.list) + 1, k_lo, 0, True)
        db.execute(fts_ddl(self.table(new)))
        db.execute("INSERT INTO fts_shards (journal, id, k_lo, rows, pairs) VALUES (?, ?, ?, 0, 1)",
                   (self.j.table, new.id, new.k_lo))
        self.list.append(new)

    def size_cut(self, k: int) -> int:
        """Where to cut for the size cap when the rows up to `k` must go: the end of k's shard (a
        shard goes whole, words and all). Never into the newest, whose words could not go with its
        rows: the cut stops below it, and it is closed at the next write so that the next pass can.
        A shard far larger than shards are now (version 3's one index, or a cap made smaller) is
        cut inside, at `k`: its words stay until its last row goes, rather than all its rows at once."""
        i = self._index(k)
        newest = i + 1 == len(self.list)
        if newest:
            self.close_next = True
        if self.list[i].rows > OVERSIZED * self.rows_per_shard:
            return k + 1
        return self.list[-1].k_lo if newest else self.list[i + 1].k_lo

    def drop_dead(self, db: sqlite3.Connection) -> int:
        """Drop the shards below the oldest stored key (never the newest); returns how many."""
        oldest = db.execute(f"SELECT min(k) FROM {self.j.table}").fetchone()[0]
        dead = 0
        while len(self.list) > 1 and (oldest is None or self.list[1].k_lo <= oldest):
            s = self.list.pop(0)
            db.execute(f"DROP TABLE IF EXISTS {self.table(s)}")
            db.execute(f"DELETE FROM {self.pairs} WHERE shard = ?", (s.id,))
            db.execute("DELETE FROM fts_shards WHERE journal = ? AND id = ?", (self.j.table, s.id))
            dead += 1
        return dead

    def size_for(self, rows_under_cap: int) -> None:
        self.rows_per_shard = max(MIN_SHARD_ROWS, min(MAX_SHARD_ROWS, rows_under_cap // SHARDS_PER_CAP))

    def ranges(self, lo: int, hi: int) -> list[tuple[Shard, int, int]]:
        """(shard, lo, hi) of each shard meeting [lo, hi], newest first (the oldest takes every key
        below it: a late row below the shards left)."""
        out = []
        for i in range(len(self.list) - 1, -1, -1):
            s_lo = self.list[i].k_lo if i else KEY_MIN
            s_hi = self.list[i + 1].k_lo - 1 if i + 1 < len(self.list) else hi
            if s_lo > hi or s_hi < lo:
                continue
            out.append((self.list[i], max(lo, s_lo), min(hi, s_hi)))
        return out
