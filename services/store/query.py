"""Query parameters: validation (clear errors naming the parameter) and SQL.

One owner for query semantics; the backends only differ by `Dialect`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from shared import priorities

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100

# Falco's priorities, least severe first; alerts store the index as prio_level (shared/priorities.py).
PRIORITIES = tuple(p.lower() for p in reversed(priorities.PRIORITIES))

_TOKEN = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_HEX = re.compile(r"^[0-9a-f]{1,64}$")


class QueryError(ValueError):
    """A bad query parameter; the text names it and says why."""


def prio_level(priority: object) -> int:
    """Index in PRIORITIES (0 for DEBUG ... 7 for EMERGENCY), or -1 when unknown."""
    return priorities.severity(priority)


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


def _check_known(params: Any, known: tuple[str, ...]) -> dict:
    if not isinstance(params, dict):
        raise QueryError(f"query must be a JSON object, not {type(params).__name__}")
    for k in params:
        if k not in known:
            raise QueryError(f"unknown parameter {k!r} (known: {', '.join(known)})")
    return params


@dataclass(frozen=True)
class Dialect:
    """How one backend spells placeholders and case-insensitive LIKE."""
    numbered: bool          # $1, $2 (PostgreSQL) instead of ? (SQLite)
    ilike: str

    def builder(self) -> "SqlBuilder":
        return SqlBuilder(self)


SQLITE = Dialect(numbered=False, ilike="LIKE")
POSTGRES = Dialect(numbered=True, ilike="ILIKE")


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


EVENT_PARAMS = ("kind", "container", "node", "pid", "namespace", "pod", "since", "until", "q", "limit", "cursor")
ALERT_PARAMS = ("rule", "priority", "container", "node", "namespace", "pod", "since", "until", "q", "limit",
                "cursor")


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
