"""Query-parameter validation: every bad value is refused with its name and why."""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from shared import priorities, subjects

PRIORITIES = tuple(p.lower() for p in priorities.PRIORITIES)
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
_KIND = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,126}[a-z0-9])?$")  # DNS-1123 (the store keeps 128)


class BadParam(ValueError):
    """A query parameter is invalid; `param` names it and the message says why."""

    def __init__(self, param: str, why: str) -> None:
        super().__init__(f"parameter {param!r}: {why}")
        self.param = param


def _text(max_len: int) -> Callable[[str, str], str]:
    def parse(name: str, v: str) -> str:
        if not v:
            raise BadParam(name, "is empty")
        if len(v) > max_len:
            raise BadParam(name, f"longer than {max_len} characters")
        if any(ord(c) < 32 for c in v):
            raise BadParam(name, "contains control characters")
        return v
    return parse


def _int(lo: int, hi: int) -> Callable[[str, str], int]:
    def parse(name: str, v: str) -> int:
        try:
            n = int(v, 10)
        except ValueError:
            raise BadParam(name, f"{v[:40]!r} is not an integer") from None
        if not (lo <= n <= hi):
            raise BadParam(name, f"{n} not in [{lo}, {hi}]")
        return n
    return parse


def _kind(name: str, v: str) -> str:
    if not _KIND.match(v):
        raise BadParam(name, f"{v[:40]!r} is not an event kind (lowercase letters, digits, _)")
    return v


def _node(name: str, v: str) -> str:
    if not subjects.valid_token(v) or len(v) > 128:
        raise BadParam(name, f"{v[:40]!r} is not a node name")
    return v


def _k8s_name(name: str, v: str) -> str:
    if not _K8S_NAME.match(v):
        raise BadParam(name, f"{v[:40]!r} is not a Kubernetes name (lowercase letters, digits, '-', '.'; "
                             "at most 128)")
    return v


def _priority(name: str, v: str) -> str:
    p = priorities.normalize_priority(v)
    if p is None:
        raise BadParam(name, f"{v[:40]!r} is not one of {', '.join(PRIORITIES)}")
    return p.lower()


def parse_time(name: str, v: str) -> int:
    """Wall-clock ns: an integer of ns since the epoch, or an ISO-8601 date/time (UTC if no zone)."""
    if re.fullmatch(r"\d{1,20}", v):
        return _int(0, 2**63 - 1)(name, v)
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise BadParam(name, f"{v[:40]!r} is neither ns since the epoch nor an ISO-8601 time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1_000_000_000)


_common = {"since": parse_time, "until": parse_time, "limit": _int(1, MAX_LIMIT), "cursor": _text(512)}

EVENT_PARAMS: dict[str, Callable[[str, str], Any]] = {
    "kind": _kind, "container": _text(128), "node": _node, "pid": _int(0, 2**31 - 1),
    "namespace": _k8s_name, "pod": _k8s_name, "q": _text(200), **_common,
}
ALERT_PARAMS: dict[str, Callable[[str, str], Any]] = {
    "rule": _text(200), "priority": _priority, "container": _text(128), "node": _node,
    "namespace": _k8s_name, "pod": _k8s_name, "q": _text(200), **_common,
}
TREE_PARAMS: dict[str, Callable[[str, str], Any]] = {
    "container": _text(128), "pid": _int(0, 2**31 - 1), "node": _node}
GRAPH_PARAMS: dict[str, Callable[[str, str], Any]] = {"since": parse_time}

# Descriptions, shared with the OpenAPI document.
DESCRIPTIONS = {
    "sort": "column to sort by: cpu, events, block, file, net, connects, runq, alerts, name",
    "seconds": "sample for this many seconds from now (1-60)",
    "format": "json (default), folded or speedscope",
    "last": "the probes' recent (continuous) profile of the last N seconds instead of sampling now",
    "kind": "event kind, e.g. exec, open, connect",
    "container": "container id (prefix) or name",
    "node": "node name",
    "pid": "process id",
    "namespace": "Kubernetes namespace of the pod the event or alert came from",
    "pod": "Kubernetes pod name",
    "q": ("words to search for (all must occur, any case) in paths, command line, comm, exe, container name and "
          "addresses (alerts: also rule and output); parts of dotted words are words too ('preload' finds "
          "/etc/ld.so.preload); 'word*' (3+ characters) matches as a prefix ('10.0.3*' finds 10.0.3.7), slower "
          "than whole words"),
    "since": "only at or after this time: ns since the epoch or ISO-8601",
    "until": "only at or before this time: ns since the epoch or ISO-8601",
    "limit": f"page size, 1..{MAX_LIMIT} (default {DEFAULT_LIMIT}); any size fits: the store sends replies larger "
             "than the bus's max payload in chunks",
    "cursor": "next_cursor of the previous page (an opaque string; null on the last page)",
    "rule": "rule name",
    "priority": "minimum priority: " + ", ".join(PRIORITIES),
}


def parse(query: Mapping[str, str], spec: Mapping[str, Callable[[str, str], Any]],
          ignore: tuple[str, ...] = ("token",)) -> dict[str, Any]:
    """Validated filters from a query string; raises BadParam naming the first bad one."""
    out: dict[str, Any] = {}
    for name in query:
        if name in ignore:
            continue
        if name not in spec:
            raise BadParam(name, f"unknown parameter; expected one of {', '.join(sorted(spec))}")
        values = query.getall(name) if hasattr(query, "getall") else [query[name]]
        if len(values) > 1:
            raise BadParam(name, "given more than once")
        out[name] = spec[name](name, values[0])
    if "since" in out and "until" in out and out["since"] > out["until"]:
        raise BadParam("since", "is later than 'until'")
    if "limit" in spec and "limit" not in out and "cursor" in spec:
        out["limit"] = DEFAULT_LIMIT
    return out
