"""The storage interface both backends implement, and how to open one by URL."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from . import derive, query


@dataclass
class WriteResult:
    events: int = 0          # newly stored
    alerts: int = 0
    duplicates: int = 0      # already present (same id): skipped
    db_bytes: int | None = None  # the database's size after the write, where it costs nothing to know


@dataclass
class RetentionResult:
    deleted: dict[str, int] = field(default_factory=dict)   # table -> rows deleted


class Backend(Protocol):
    name: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def write(self, events: list[dict], alerts: list[dict]) -> WriteResult:
        """Store one batch in ONE transaction, idempotent by id; derived tables count new rows only."""
    async def retain(self, cutoff_ts: int, max_rows: int, max_bytes: int) -> RetentionResult: ...
    async def events(self, params: dict) -> dict: ...
    async def alerts(self, params: dict) -> dict: ...
    async def containers(self) -> list[dict]: ...
    async def process_tree(self, params: dict) -> list[dict]: ...
    async def network_graph(self, params: dict) -> dict: ...
    async def counts(self) -> dict: ...
    def is_transient(self, exc: BaseException) -> bool:
        """The database is unreachable/busy (retry everything later) rather than refusing this data."""


def open_backend(url: str) -> Backend:
    """'sqlite:///path/to/file.db' or 'postgresql://user@host/db'."""
    if url.startswith("sqlite:///"):
        from .sqlite_backend import SqliteBackend
        return SqliteBackend(url[len("sqlite://"):])
    if url.startswith(("postgresql://", "postgres://")):
        from .pg_backend import PostgresBackend
        return PostgresBackend(url)
    raise ValueError(f"store url {url!r}: unsupported scheme")


# Row shapes shared by both backends.

def container_dict(r: Any) -> dict:
    return {"id": r[0], "name": r[1], "image": r[2], "runtime": r[3], "node": r[4], "cgroup_id": r[5],
            "labels": orjson.loads(r[6]) if r[6] else {}, "first_seen": r[7], "last_seen": r[8], "events": r[9]}


def process_dict(r: Any) -> dict:
    return {"node": r[0], "pid": r[1], "ppid": r[2], "container_id": r[3], "exe": r[4],
            "args": orjson.loads(r[5]) if r[5] else [], "comm": r[6], "ts": r[7], "exited": r[8] is not None}


def tree_from_rows(rows: list, tq: query.TreeQuery) -> list[dict]:
    procs = [process_dict(r) for r in rows]
    if tq.pid is None:
        return derive.build_tree(procs)
    out = []
    for node in sorted({p["node"] for p in procs}):
        out += derive.build_tree([p for p in procs if p["node"] == node], tq.pid)
    return out
