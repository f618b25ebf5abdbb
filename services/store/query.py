"""Query parameters: validation (clear errors naming the parameter) and SQL.

One owner for query semantics; the backends only differ by `Dialect`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100

# Falco's priorities, least severe first; alerts store the index as prio_level.
PRIORITIES = ("debug", "informational", "notice", "warning", "error", "critical", "alert", "emergency")
_PRIO_ALIASES = {"info": "informational", "warn": "warning", "err": "error", "crit": "critical",
                 "emerg": "emergency"}

_TOKEN = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_HEX = re.compile(r"^[0-9a-f]{1,64}$")


class QueryError(ValueError):
    """A bad query parameter; the text names it and says why."""


def prio_level(priority: object) -> int:
    """Index in PRIORITIES, or -1 when unknown."""
    p = str(priority or "").lower()
    p = _PRIO_ALIASES.get(p, p)
    return PRIORITIES.index(p) if p in PRIORITIES else -1


def _int(name: str, v: Any, lo: int = 0, hi: int = 2**63 - 1) -> int:
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool):
        raise QueryError(f"parameter {name!r}: {v!r} is not an integer")
    if not lo <= v <= hi:
        raise QueryError(f"parameter {name!r}: {v} is not in [{lo}, {hi}]")
    return v


def _token(name: str, v: Any) -> str:
    if not isinstance(v, str) or not _TOKEN.match(v):
        raise QueryError(f"parameter {name!r}: {v!r} must be 1-128 letters, digits or '_.:-'")
    return v


def _text(name: str, v: Any, max_len: int = 200) -> str:
    if not isinstance(v, str) or not v or len(v) > max_len:
        raise QueryError(f"parameter {name!r}: must be a non-empty string of at most {max_len} characters")
    return v


def encode_cursor(ts: int, id_: str) -> str:
    return f"{ts}:{id_}"


def _cursor(v: Any) -> tuple[int, str]:
    if not isinstance(v, str) or ":" not in v:
        raise QueryError(f"parameter 'cursor': {v!r} is not a cursor from a previous page")
    ts, _, id_ = v.partition(":")
    if not ts.isdigit() or not id_:
        raise QueryError(f"parameter 'cursor': {v!r} is not a cursor from a previous page")
    return int(ts), id_


def _check_known(params: Any, known: tuple[str, ...]) -> dict:
    if not isinstance(params, dict):
        raise QueryError(f"query must be a JSON object, not {type(params).__name__}")
    for k in params:
        if k not in known:
            raise QueryError(f"unknown parameter {k!r} (known: {', '.join(known)})")
    return params


@dataclass(frozen=True)
class Dialect:
    """How one backend spells placeholders, case-insensitive LIKE and a text field of the JSON body."""
    numbered: bool          # $1, $2 (PostgreSQL) instead of ? (SQLite)
    ilike: str
    k8s_field: str = ""     # SQL of body's k8s.<%s> as text (alerts have no k8s columns)

    def k8s(self, key: str) -> str:
        """As a SqlBuilder.add template part (braces doubled)."""
        return (self.k8s_field % key).replace("{", "{{").replace("}", "}}")

    def builder(self) -> "SqlBuilder":
        return SqlBuilder(self)


SQLITE = Dialect(numbered=False, ilike="LIKE", k8s_field="json_extract(body, '$.k8s.%s')")
POSTGRES = Dialect(numbered=True, ilike="ILIKE", k8s_field="(body::jsonb #>> '{k8s,%s}')")


@dataclass
class SqlBuilder:
    dialect: Dialect
    where: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)

    def ph(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}" if self.dialect.numbered else "?"

    def add(self, template: str, *values: Any) -> None:
        """`template` uses {} for each value, in order."""
        self.where.append(template.format(*(self.ph(v) for v in values)))

    def where_sql(self) -> str:
        return (" WHERE " + " AND ".join(self.where)) if self.where else ""


def _like_escape(s: str) -> str:
    return "%" + s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _container_clause(b: SqlBuilder, value: str) -> None:
    if _HEX.match(value):
        b.add("(container_id LIKE {} OR container_name = {})", value + "%", value)
    else:
        b.add("container_name = {}", value)


EVENT_PARAMS = ("kind", "container", "node", "pid", "namespace", "pod", "since", "until", "q", "limit", "cursor")
ALERT_PARAMS = ("rule", "priority", "container", "node", "namespace", "pod", "since", "until", "q", "limit",
                "cursor")


def _paged(table: str, cols: str, b: SqlBuilder, p: dict) -> tuple[str, list, int]:
    if "since" in p:
        b.add("ts >= {}", _int("since", p["since"]))
    if "until" in p:
        b.add("ts <= {}", _int("until", p["until"]))
    if "q" in p:
        pat = _like_escape(_text("q", p["q"]))
        b.add(f"(body {b.dialect.ilike} {{}} ESCAPE '\\')", pat)
    if "cursor" in p:
        ts, id_ = _cursor(p["cursor"])
        b.add("(ts < {} OR (ts = {} AND id < {}))", ts, ts, id_)
    limit = _int("limit", p.get("limit", DEFAULT_LIMIT), 1, MAX_LIMIT)
    sql = f"SELECT {cols} FROM {table}{b.where_sql()} ORDER BY ts DESC, id DESC LIMIT {b.ph(limit + 1)}"
    return sql, b.args, limit


def events_sql(d: Dialect, params: Any) -> tuple[str, list, int]:
    """SELECT of (ts, id, body) newest first; fetch limit+1 rows to know if there is a next page."""
    p = _check_known(params, EVENT_PARAMS)
    b = d.builder()
    if "kind" in p:
        b.add("kind = {}", _token("kind", p["kind"]))
    if "container" in p:
        _container_clause(b, _token("container", p["container"]))
    if "node" in p:
        b.add("node = {}", _token("node", p["node"]))
    if "pid" in p:
        b.add("pid = {}", _int("pid", p["pid"]))
    if "namespace" in p:
        b.add("k8s_ns = {}", _token("namespace", p["namespace"]))
    if "pod" in p:
        b.add("k8s_pod = {}", _token("pod", p["pod"]))
    return _paged("events", "ts, id, body", b, p)


def alerts_sql(d: Dialect, params: Any) -> tuple[str, list, int]:
    p = _check_known(params, ALERT_PARAMS)
    b = d.builder()
    if "rule" in p:
        b.add("rule = {}", _text("rule", p["rule"]))
    if "priority" in p:
        lvl = prio_level(p["priority"])
        if lvl < 0:
            raise QueryError(f"parameter 'priority': {p['priority']!r} is not one of {', '.join(PRIORITIES)}")
        b.add("prio_level >= {}", lvl)
    if "container" in p:
        _container_clause(b, _token("container", p["container"]))
    if "node" in p:
        b.add("node = {}", _token("node", p["node"]))
    if "namespace" in p:  # from the body: alerts are few next to events, no column needed
        b.add(d.k8s("namespace") + " = {}", _token("namespace", p["namespace"]))
    if "pod" in p:
        b.add(d.k8s("pod") + " = {}", _token("pod", p["pod"]))
    return _paged("alerts", "ts, id, body", b, p)


def page(rows: list[tuple[int, str, Any]], limit: int, load) -> dict:
    """Rows of (ts, id, body) -> {"items", "next_cursor"}."""
    items = [load(r[2]) for r in rows[:limit]]
    nxt = encode_cursor(rows[limit - 1][0], rows[limit - 1][1]) if len(rows) > limit else None
    return {"items": items, "next_cursor": nxt}


@dataclass(frozen=True)
class TreeQuery:
    container: str | None
    pid: int | None
    node: str | None


def tree_query(params: Any) -> TreeQuery:
    p = _check_known(params, ("container", "pid", "node"))
    c = _token("container", p["container"]) if "container" in p else None
    pid = _int("pid", p["pid"]) if "pid" in p else None
    node = _token("node", p["node"]) if "node" in p else None
    if c is None and pid is None:
        raise QueryError("process_tree needs parameter 'container' (id prefix or name) or 'pid'")
    return TreeQuery(c, pid, node)


def graph_since(params: Any) -> int:
    p = _check_known(params, ("since",))
    return _int("since", p["since"]) if "since" in p else 0


def no_params(params: Any) -> None:
    _check_known(params, ())
