"""Table definitions and the write/derive statements both backends run."""
from __future__ import annotations

from .derive import ALERT_COLS, CONNECTION_COLS, CONTAINER_COLS, EVENT_COLS, IP_COLS, IP_NAME_COLS, PROCESS_COLS
from .query import Dialect

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
    """CREATE TABLE IF NOT EXISTS containers (
        id TEXT PRIMARY KEY, name TEXT, image TEXT, runtime TEXT, node TEXT, cgroup_id BIGINT, labels TEXT,
        first_seen BIGINT NOT NULL, last_seen BIGINT NOT NULL, events BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS connections (
        src TEXT NOT NULL, dst TEXT NOT NULL, port INTEGER NOT NULL, proto TEXT NOT NULL, origin TEXT NOT NULL,
        count BIGINT NOT NULL, last_seen BIGINT NOT NULL, PRIMARY KEY (src, dst, port, proto, origin))""",
    """CREATE TABLE IF NOT EXISTS container_ips (
        ip TEXT PRIMARY KEY, container_id TEXT NOT NULL, last_seen BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS ip_names (
        src TEXT NOT NULL, ip TEXT NOT NULL, name TEXT NOT NULL, last_seen BIGINT NOT NULL, PRIMARY KEY (src, ip))""",
    """CREATE TABLE IF NOT EXISTS processes (
        node TEXT NOT NULL, pid BIGINT NOT NULL, ppid BIGINT, container_id TEXT, exe TEXT, args TEXT, comm TEXT,
        ts BIGINT NOT NULL, rank INTEGER NOT NULL, exited_ts BIGINT, PRIMARY KEY (node, pid))""",
    "CREATE INDEX IF NOT EXISTS processes_container ON processes (container_id)",
    "CREATE INDEX IF NOT EXISTS processes_ts ON processes (ts)",
]

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
        "event": _insert(d, "events", EVENT_COLS) + " ON CONFLICT (id) DO NOTHING",
        "alert": _insert(d, "alerts", ALERT_COLS) + " ON CONFLICT (id) DO NOTHING",
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


# Retention: (table, time column) pairs aged out by max_age; CAPPED tables also keep at most max_rows
# (newest by ts); events are also kept under max_bytes.
AGED = (("events", "ts"), ("alerts", "ts"), ("connections", "last_seen"), ("container_ips", "last_seen"),
        ("ip_names", "last_seen"), ("processes", "ts"), ("containers", "last_seen"))
CAPPED = ("events", "alerts", "processes")

CONTAINER_SELECT = ("SELECT id, name, image, runtime, node, cgroup_id, labels, first_seen, last_seen, events "
                    "FROM containers ORDER BY last_seen DESC LIMIT 10000")
GRAPH_NAMES_SELECT = "SELECT src, ip, name, last_seen FROM ip_names"
CONTAINER_META_SELECT = "SELECT id, node, labels FROM containers"
PROCESS_SELECT = "SELECT node, pid, ppid, container_id, exe, args, comm, ts, exited_ts FROM processes"
MAX_TREE_ROWS = 50_000
