"""Table definitions and the write/derive statements both backends run."""
from __future__ import annotations

from . import fts_shards
from .derive import CONNECTION_COLS, CONTAINER_COLS, IP_COLS, IP_NAME_COLS, PROCESS_COLS
from .query import Dialect

SCHEMA_VERSION = 5     # 1: events/alerts with the JSON body as text (migrated on start, migrate.py);
                       # 2: no container scope tokens in the words (3 adds the watermark, journal.py);
                       # 3: SQLite's words in one FTS5 table (4: in key-range shards, fts_shards.py;
                       # 5: with each shard's (container, word) pairs)

# Tables derived from events (both backends, unchanged since version 1).
_DERIVED_DDL = [
    """CREATE TABLE IF NOT EXISTS containers (
        id TEXT PRIMARY KEY, name TEXT, image TEXT, runtime TEXT, node TEXT, cgroup_id BIGINT, labels TEXT,
        first_seen BIGINT NOT NULL, last_seen BIGINT NOT NULL, events BIGINT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS containers_name ON containers (name)",
    """CREATE TABLE IF NOT EXISTS connections (
        src TEXT NOT NULL, dst TEXT NOT NULL, port INTEGER NOT NULL, proto TEXT NOT NULL, origin TEXT NOT NULL,
        count BIGINT NOT NULL, last_seen BIGINT NOT NULL,
        PRIMARY KEY (src, dst, port, proto, origin)){without_rowid}""",
    "CREATE INDEX IF NOT EXISTS connections_last_seen ON connections (last_seen)",
    """CREATE TABLE IF NOT EXISTS container_ips (
        ip TEXT PRIMARY KEY, container_id TEXT NOT NULL, last_seen BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS ip_names (
        src TEXT NOT NULL, ip TEXT NOT NULL, name TEXT NOT NULL, last_seen BIGINT NOT NULL, PRIMARY KEY (src, ip))""",
    """CREATE TABLE IF NOT EXISTS processes (
        node TEXT NOT NULL, pid BIGINT NOT NULL, ppid BIGINT, container_id TEXT, exe TEXT, args TEXT, comm TEXT,
        ts BIGINT NOT NULL, rank INTEGER NOT NULL, exited_ts BIGINT, PRIMARY KEY (node, pid))""",
    "CREATE INDEX IF NOT EXISTS processes_container ON processes (container_id)",
    "CREATE INDEX IF NOT EXISTS processes_ts ON processes (ts)",
    "CREATE INDEX IF NOT EXISTS processes_pid ON processes (pid)",
]


def derived_ddl(sqlite: bool) -> list[str]:
    # SQLite: the primary key is the table (no second copy of the key in an index)
    return [s.replace("{without_rowid}", " WITHOUT ROWID" if sqlite else "") for s in _DERIVED_DDL]


# The journals (journal.py): key = ts in ns, typed columns of interned ids, zstd body.
# Every SQLite index on (x) also holds the key, so it is an index on (x, time).
_PARTIAL = {"cont", "ns", "pod"}        # NULL for host events: not indexed


def _sqlite_journal(j) -> list[str]:
    cols = ", ".join(f"{c} INTEGER" + (" NOT NULL" if c in ("kind", "rule", "prio") else "")
                     for c in (*j.named, *j.ints))
    return [f"CREATE TABLE IF NOT EXISTS {j.table} (k INTEGER PRIMARY KEY, idh INTEGER NOT NULL, {cols}, "
            "body BLOB NOT NULL)",
            *(f"CREATE INDEX IF NOT EXISTS {j.table}_by_{c} ON {j.table} ({c})"
              + (f" WHERE {c} IS NOT NULL" if c in _PARTIAL else "") for c in j.indexed)]
    # its words: FTS5 tables in key-range shards (fts_shards.py, made by SqliteBackend.open)


def _pg_journal(j) -> list[str]:
    cols = ", ".join(f"{c} {'BIGINT' if c == 'pid' else 'INTEGER'}" + (" NOT NULL" if c in ("kind", "rule", "prio")
                                                                      else "") for c in (*j.named, *j.ints))
    return [f"CREATE TABLE IF NOT EXISTS {j.table} (k BIGINT NOT NULL, idh INTEGER NOT NULL, {cols}, "
            f"body BYTEA NOT NULL, words TSVECTOR NOT NULL, PRIMARY KEY (k)) PARTITION BY RANGE (k)",
            *(f"CREATE INDEX IF NOT EXISTS {j.table}_by_{c} ON {j.table} ({c}, k)"
              + (f" WHERE {c} IS NOT NULL" if c in _PARTIAL else "") for c in j.indexed),
            f"CREATE INDEX IF NOT EXISTS {j.table}_words ON {j.table} USING gin (words)",
            # which words occur in which container, per partition (pairs.py)
            f"CREATE TABLE IF NOT EXISTS {j.table}_pairs (cont INTEGER NOT NULL, wh BIGINT NOT NULL, "
            "part_lo BIGINT NOT NULL, PRIMARY KEY (cont, wh, part_lo))",
            f"CREATE INDEX IF NOT EXISTS {j.table}_pairs_by_part ON {j.table}_pairs (part_lo)"]


def _common(blob: str, serial: str) -> list[str]:
    return ["CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS names (id {serial} PRIMARY KEY, s TEXT NOT NULL UNIQUE)",
            f"CREATE TABLE IF NOT EXISTS dicts (id INTEGER PRIMARY KEY, data {blob} NOT NULL)"]


def sqlite_ddl() -> list[str]:
    from .journal import JOURNALS
    return [*_common("BLOB", "INTEGER"),
            "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, n INTEGER NOT NULL)", fts_shards.DDL,
            *(s for j in JOURNALS for s in _sqlite_journal(j)), *derived_ddl(sqlite=True)]


def pg_ddl() -> list[str]:
    from .journal import JOURNALS
    return [*_common("BYTEA", "SERIAL"), *(s for j in JOURNALS for s in _pg_journal(j)), *derived_ddl(sqlite=False)]


TABLES = ("events", "alerts", "containers", "connections", "container_ips", "processes", "ip_names")


def _ph(d: Dialect, n: int) -> str:
    return ", ".join(f"${i + 1}" if d.numbered else "?" for i in range(n))


def _insert(d: Dialect, table: str, cols: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({_ph(d, len(cols))})"


def _least(d: Dialect) -> tuple[str, str]:
    return ("LEAST", "GREATEST") if d.numbered else ("min", "max")


def statements(d: Dialect) -> dict[str, str]:
    least, greatest = _least(d)
    return {
        "container": _insert(d, "containers", CONTAINER_COLS) + f""" ON CONFLICT (id) DO UPDATE SET
            name = COALESCE(excluded.name, containers.name), image = COALESCE(excluded.image, containers.image),
            runtime = COALESCE(excluded.runtime, containers.runtime), node = excluded.node,
            cgroup_id = COALESCE(excluded.cgroup_id, containers.cgroup_id), labels = excluded.labels,
            first_seen = {least}(containers.first_seen, excluded.first_seen),
            last_seen = {greatest}(containers.last_seen, excluded.last_seen),
            events = containers.events + excluded.events""",
        "connection": _insert(d, "connections", CONNECTION_COLS) + f""" ON CONFLICT (src, dst, port, proto, origin)
            DO UPDATE SET count = connections.count + excluded.count,
            last_seen = {greatest}(connections.last_seen, excluded.last_seen)""",
        "ip": _insert(d, "container_ips", IP_COLS) + """ ON CONFLICT (ip) DO UPDATE SET
            container_id = excluded.container_id, last_seen = excluded.last_seen
            WHERE excluded.last_seen >= container_ips.last_seen""",
        "ip_name": _insert(d, "ip_names", IP_NAME_COLS) + """ ON CONFLICT (src, ip) DO UPDATE SET
            name = excluded.name, last_seen = excluded.last_seen WHERE excluded.last_seen >= ip_names.last_seen""",
        "process": _insert(d, "processes", PROCESS_COLS) + """ ON CONFLICT (node, pid) DO UPDATE SET
            ppid = COALESCE(excluded.ppid, processes.ppid),
            container_id = COALESCE(excluded.container_id, processes.container_id),
            exe = COALESCE(excluded.exe, processes.exe), args = excluded.args,
            comm = COALESCE(excluded.comm, processes.comm), ts = excluded.ts, rank = excluded.rank,
            exited_ts = CASE WHEN excluded.rank >= 2 AND excluded.ts > COALESCE(processes.exited_ts, 0)
                             THEN NULL ELSE processes.exited_ts END
            WHERE excluded.rank > processes.rank OR (excluded.rank = processes.rank AND excluded.ts >= processes.ts)""",
        "exit": f"UPDATE processes SET exited_ts = {_ph(d, 1)} WHERE node = {'$2' if d.numbered else '?'}"
                f" AND pid = {'$3' if d.numbered else '?'}",
    }


# Retention of the derived tables: (table, time column) aged out by max_age; processes also kept
# under max_rows (newest by ts). The journals have their own (in batches / by partition).
# In the order the writes and the DDL lock them (containers first): retention's transaction must not deadlock them.
AGED = (("containers", "last_seen"), ("connections", "last_seen"), ("container_ips", "last_seen"),
        ("ip_names", "last_seen"), ("processes", "ts"))
CAPPED = ("processes",)
# ... and those that describe what the events say go with the oldest event kept too (the size cap
# trims the events: the connection graph must not outgrow it; the process table is capped by rows,
# and keeps a quiet long-lived process whose exec was trimmed)
FOLLOW_EVENTS = ("connections", "container_ips", "ip_names")


def derived_cutoff(table: str, cutoff: int, oldest_event: int | None) -> int:
    """Rows of `table` older than this go."""
    return max(cutoff, oldest_event) if oldest_event is not None and table in FOLLOW_EVENTS else cutoff

CONTAINER_SELECT = ("SELECT id, name, image, runtime, node, cgroup_id, labels, first_seen, last_seen, events "
                    "FROM containers ORDER BY last_seen DESC LIMIT 10000")
GRAPH_NAMES_SELECT = "SELECT src, ip, name, last_seen FROM ip_names"
CONTAINER_META_SELECT = "SELECT id, node, labels FROM containers"
PROCESS_SELECT = "SELECT node, pid, ppid, container_id, exe, args, comm, ts, exited_ts FROM processes"
MAX_TREE_ROWS = 50_000
