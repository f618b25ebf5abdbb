"""One readable line per enriched event, for `eunomia events`."""
from __future__ import annotations

import time

from shared import terminal
from shared.netnames import AF_NAMES
from shared.schema import DNS_FIELDS, KINDS

_SKIP = {"ret", "argv", "filename", "cap_permitted", "cap_bounding", "folded", "start_ns", "end_ns"}
# Fields the enricher adds, shown first: what was asked and answered, the name of a peer.
_ENRICHED = {"dns": ("qname", "qtype", "rcode", "answers", "latency_ns", "malformed", "resolver_configured"),
             "connect": ("dname",), "accept": ("dname",), "flow": ("dname",)}
_DNS_SKIP = {"family", "saddr", "sport", "dport", "len", "truncated"}  # noise on a dns line
assert set(_ENRICHED["dns"]) <= set(DNS_FIELDS) | {"resolver_configured"}


def _value(v: object) -> str:
    s = str(v)
    return s if len(s) <= 120 and " " not in s else repr(s[:120])


def key_fields(ev: dict) -> str:
    """The kind's own fields, in schema order: `path=/etc/passwd flags=0`."""
    kind = ev.get("kind", "")
    parts = []
    if kind == "exec":
        argv = ev.get("argv")
        parts.append(" ".join(map(str, argv)) if isinstance(argv, list) and argv else str(ev.get("filename", "")))
    for f in _ENRICHED.get(kind, ()):
        v = ev.get(f)
        if v not in (None, "", []):
            parts.append(f"{f}={_value(','.join(map(str, v)) if isinstance(v, list) else v)}")
    for f in KINDS.get(kind, ()):
        if f in _SKIP or ev.get(f) in (None, "") or (kind == "dns" and f in _DNS_SKIP):
            continue
        v = ev[f]
        if f == "family" and isinstance(v, int):
            v = AF_NAMES.get(v, v)
        parts.append(f"{f}={_value(v)}")
    ret = ev.get("ret")
    if isinstance(ret, int) and ret < 0:
        parts.append(f"ret={ret}")
    return " ".join(parts)


def where(ev: dict) -> str:
    """host, the container's name (or short id), or namespace/pod/container in Kubernetes."""
    c = ev.get("container")
    if not c:
        return "host"
    name = c.get("name") or str(c.get("id", ""))[:12]
    k = ev.get("k8s")
    if isinstance(k, dict) and k.get("pod"):
        return f"{k.get('namespace')}/{k['pod']}/{name}"
    return name


def line(ev: dict) -> str:
    ts = ev.get("ts")
    if isinstance(ts, int):
        t = time.strftime("%H:%M:%S", time.localtime(ts / 1e9)) + f".{ts % 1_000_000_000 // 1000:06d}"
    else:
        t = "?"
    proc = ev.get("proc") or {}
    who = f"{proc.get('name') or ev.get('comm') or '?'}[{ev.get('pid')}]"
    return terminal.escape(f"{t} {where(ev):<20} {ev.get('kind', '?'):<8} {who:<22} {key_fields(ev)}".rstrip())


def matches_container(ev: dict, query: str) -> bool:
    """`query` is a container name, an id prefix, namespace/pod/container, or "host"."""
    c = ev.get("container")
    if query == "host":
        return not c
    if not c:
        return False
    return c.get("name") == query or str(c.get("id", "")).startswith(query) or where(ev) == query
