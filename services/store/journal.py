"""The two journals (events, alerts): their typed columns, rows and query plans, shared by both backends.

A journal row is (k, idh, <typed columns>, body). Typed columns hold small
integers: strings (kind, node, container id, namespace, pod, rule) are
interned in the `names` table, so every index entry is a few bytes.

A query becomes one or more *probes*: each is a set of column = value
conditions that an index on one column answers in key (= time) order. A
filter that matches several values (a container name with several ids, a
minimum priority) becomes one probe per value; their pages are merged, so
no probe ever sorts more rows than the page holds.
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Any

import orjson

from . import codec, query
from .derive import _container, _i, _k8s, _s

MAX_PROBES = 64
KEY_MAX = 2**63 - 1
KEY_MIN = -2**63


@dataclass(frozen=True)
class Journal:
    table: str
    named: tuple[str, ...]      # columns holding interned strings
    ints: tuple[str, ...]       # columns holding plain integers
    indexed: tuple[str, ...]    # one index each (plus the key)

    @property
    def columns(self) -> tuple[str, ...]:
        return ("k", "idh", *self.named, *self.ints, "body")

    @property
    def fts(self) -> str:
        return f"{self.table}_fts"

    @property
    def cont_at(self) -> int:
        """Where a row's container id is among the interned columns."""
        return self.named.index("cont")


EVENTS = Journal("events", named=("kind", "node", "cont", "ns", "pod"), ints=("pid",),
                 indexed=("kind", "node", "cont", "ns", "pod", "pid"))
ALERTS = Journal("alerts", named=("rule", "node", "cont", "ns", "pod"), ints=("prio",),
                 indexed=("rule", "node", "cont", "ns", "pod", "prio"))
JOURNALS = (EVENTS, ALERTS)


def row_values(j: Journal, item: dict) -> tuple[dict[str, str | None], dict[str, int | None]]:
    """(strings to intern by column, integers by column) of one event or alert."""
    c = _container(item) or (_container(item.get("event") or {}) if j is ALERTS else {})
    if j is EVENTS:
        k = _k8s(item)
        return ({"kind": _s(item["kind"], 64), "node": _s(item.get("node"), 128), "cont": _s(c.get("id"), 64),
                 "ns": _s(k.get("namespace"), 256), "pod": _s(k.get("pod"), 256)},
                {"pid": _i(item.get("pid"))})
    k = _k8s(item) or _k8s(item.get("event") or {})
    return ({"rule": _s(item.get("rule"), 256) or "", "node": _s(item.get("node"), 128), "cont": _s(c.get("id"), 64),
             "ns": _s(k.get("namespace"), 256), "pod": _s(k.get("pod"), 256)},
            {"prio": query.prio_level(item.get("priority"))})


def idh(item: dict) -> int:
    return codec.id_hash(item["id"]) >> 32      # 32 bits: only events of the same ns are ever compared


@dataclass
class Plan:
    """What a validated query asks of one journal, before names are resolved to ids."""
    journal: Journal
    names: dict[str, str]                # column -> string that must match (interned)
    ints: dict[str, int]
    container: str | None
    prio_min: int | None
    since: int | None
    until: int | None
    before: int | None                   # cursor: keys below this
    words: list[tuple[str, bool]]
    limit: int


def _cursor(v: Any) -> int:
    if isinstance(v, str) and v.isdigit() and len(v) <= 19:
        return int(v)
    raise query.QueryError(f"parameter 'cursor': {v!r} is not a cursor from a previous page")


def _words(p: dict) -> list[tuple[str, bool]]:
    if "q" not in p:
        return []
    words = codec.query_words(query._text("q", p["q"]))
    if not words:
        raise query.QueryError(f"parameter 'q': {p['q']!r} has no word of 2+ letters or digits to search for")
    if len(words) > 8:
        raise query.QueryError("parameter 'q': at most 8 words")
    return words


def plan(j: Journal, params: Any) -> Plan:
    p = query._check_known(params, query.EVENT_PARAMS if j is EVENTS else query.ALERT_PARAMS)
    names: dict[str, str] = {}
    ints: dict[str, int] = {}
    prio_min = None
    if j is EVENTS:
        for param, col in (("kind", "kind"), ("node", "node"), ("namespace", "ns"), ("pod", "pod")):
            if param in p:
                names[col] = query._token(param, p[param])
        if "pid" in p:
            ints["pid"] = query._int("pid", p["pid"])
    else:
        if "rule" in p:
            names["rule"] = query._text("rule", p["rule"])
        for param, col in (("node", "node"), ("namespace", "ns"), ("pod", "pod")):
            if param in p:
                names[col] = query._token(param, p[param])
        if "priority" in p:
            prio_min = query.prio_level(p["priority"])
            if prio_min < 0:
                raise query.QueryError(f"parameter 'priority': {p['priority']!r} is not one of "
                                       f"{', '.join(query.PRIORITIES)}")
    container = query._token("container", p["container"]) if "container" in p else None
    return Plan(j, names, ints, container, prio_min,
                query._int("since", p["since"]) if "since" in p else None,
                query._int("until", p["until"]) if "until" in p else None,
                _cursor(p["cursor"]) if "cursor" in p else None, _words(p),
                query._int("limit", p.get("limit", query.DEFAULT_LIMIT), 1, query.MAX_LIMIT))


def probes(pl: Plan, ids: dict[str, int | None], conts: list[int] | None) -> list[dict[str, int]] | None:
    """Column = value sets to run (None: nothing can match). `ids` maps plan names to interned ids."""
    if any(v is None for v in ids.values()):
        return None
    base = {**{col: ids[col] for col in pl.names}, **pl.ints}
    choices: list[list[tuple[str, int]]] = []
    if conts is not None:
        if not conts:
            return None
        choices.append([("cont", c) for c in conts])
    if pl.prio_min is not None and pl.prio_min > 0:
        choices.append([("prio", lvl) for lvl in range(pl.prio_min, len(query.PRIORITIES))])
    combos = [dict(c) for c in itertools.product(*choices)]
    if len(combos) > MAX_PROBES:
        raise query.QueryError(f"parameter 'container': {pl.container!r} matches too many containers; "
                               "give a longer id prefix")
    return [{**base, **c} for c in combos]


# Container-scoped search: each row's words also hold a token naming its container's
# interned id, so `q` within a container is one index intersection (the word's list AND the
# container's), not a walk of the word's list checking containers. Rows written before a
# database had these tokens (keys below its watermark, `scoped_since`) are searched the old way;
# such a row arriving late has none either (it is searched the old way). Schema version 3: an
# older store refuses the database rather than write rows above the watermark without tokens.
def _token(cont: int) -> str:
    return f"zc:{cont}"


def scoped_words(text: str, cont: int | None) -> str:
    """A row's words with its container's scope token (none for host rows). No empty word:
    PostgreSQL's array_to_tsvector refuses one."""
    if cont is None:
        return text
    return f"{text} {_token(cont)}" if text else _token(cont)


def scope_token(cont: int) -> tuple[str, bool]:
    """The scope token as a query word (matched whole)."""
    return (_token(cont), False)


def scope_key(j: Journal) -> str:
    """The watermark's name: keys from it on carry scope tokens."""
    return f"{j.table}_scoped_since"


def pairs_key(j: Journal) -> str:
    """PostgreSQL's watermark: keys from it on have their (container, word) pairs recorded."""
    return f"{j.table}_pairs_since"


def split_scoped(lo: int, hi: int, since: int) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """[lo, hi] as (the part searched with the scope token, the part before the watermark)."""
    scoped = (max(lo, since), hi) if hi >= since else None
    old = (lo, min(hi, since - 1)) if lo < since else None
    return scoped, old


def key_bounds(pl: Plan) -> tuple[int, int]:
    """Keys to read: [lo, hi] (a key is the ts in ns, bumped by a few ns on collisions)."""
    lo = pl.since if pl.since is not None else 0
    hi = KEY_MAX if pl.until is None else pl.until
    if pl.before is not None:
        hi = min(hi, pl.before - 1)
    return lo, hi


def merge_pages(pages: list[list[tuple[int, bytes]]], limit: int) -> list[tuple[int, bytes]]:
    """Pages of (k, blob) newest first -> the newest limit+1 of all."""
    if len(pages) == 1:
        return pages[0][:limit + 1]
    return list(itertools.islice(heapq.merge(*pages, key=lambda r: -r[0]), limit + 1))


def page(rows: list[tuple[int, bytes]], limit: int, decode) -> dict:
    """(k, blob) rows -> {"items": [JSON fragments: the stored bodies, never re-parsed], "next_cursor"}."""
    items = [orjson.Fragment(decode(blob)) for _k, blob in rows[:limit]]
    nxt = str(rows[limit - 1][0]) if len(rows) > limit else None
    return {"items": items, "next_cursor": nxt}
