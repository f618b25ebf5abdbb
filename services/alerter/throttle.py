"""Dedupe/throttle of repeated alerts.

An alert's key is its rule, its container and a fixed set of fields of its
event, each cut to KEY_FIELD_LEN characters (`key_of`): the executable, the
command line and the object (file path, or server address and port). The
rendered output is not used: it carries whatever else the attacker chose.
Alerts with the same key within `window_s` are raised at most `max_repeats`
times; the rest are suppressed: counted at once
(alerts_suppressed_total{rule,reason}) and reported later by `summaries()`
as one summary alert per key, so nothing is ever dropped silently.

Bounded per container: a container holds at most `per_container` keys;
past that, its new keys share one overflow key per rule (reason
"container_cap"), so a container flooding unique command lines or paths
gets a few alerts and a count, and cannot push other containers' keys out.
The whole table holds at most `max_keys`; when full, the oldest key of the
container holding the most keys goes. An evicted key with suppressed
alerts still gets its summary.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from .engine import fields as F

KEY_FIELD_LEN = 200
OVERFLOW = "<container key cap reached>"
Key = tuple[str, str, str]  # rule, container id ("host"), field values
_SIP, _SPORT = F.FIELDS["fd.sip"].get, F.FIELDS["fd.sport"].get


def key_of(rule: str, ev: dict) -> Key:
    """The throttle key of an alert of `rule` on event `ev`."""
    ctr = ev.get("container")
    cid = (ctr.get("id") if isinstance(ctr, dict) else None) or "host"
    kind = ev.get("kind")
    if kind in ("connect", "accept", "listen"):
        obj = f"{_SIP(ev)}:{_SPORT(ev)}"   # the server end: a client's own port changes every time
    else:
        obj = F.fd_name(ev) if kind != "exec" else None
    parts = (F.proc_exe(ev), F.proc_cmdline(ev), obj)
    return rule, cid, "\x00".join("" if p is None else str(p)[:KEY_FIELD_LEN] for p in parts)


@dataclass(slots=True)
class _Entry:
    start: float
    raised: int = 0
    suppressed: int = 0
    first_suppressed: float = 0.0
    last: dict | None = field(default=None)  # last suppressed alert


@dataclass(slots=True)
class Summary:
    rule: str
    container: str
    output: str          # the last suppressed alert's output
    count: int
    since: float
    last: dict           # the last suppressed alert (its event, priority, tags ...)
    overflow: bool = False  # the container's key cap folded different alerts together


class Throttle:
    def __init__(self, window_s: float, max_repeats: int, max_keys: int = 10_000, per_container: int = 256) -> None:
        self.window_s, self.max_repeats, self.max_keys = window_s, max_repeats, max_keys
        self.per_container = per_container
        self._t: dict[str, OrderedDict[Key, _Entry]] = {}   # container -> its keys, oldest first
        self._n = 0
        self._evicted: list[Summary] = []
        self.evictions = 0

    def __len__(self) -> int:
        return self._n

    def keys_of(self, container: str) -> int:
        return len(self._t.get(container) or ())

    def admit(self, key: Key, alert: dict, now: float) -> str | None:
        """None: raise `alert`. Else it was suppressed (and will be summarized):
        "repeat", or "container_cap" when it fell into its container's overflow key."""
        if self.window_s <= 0:
            return None
        ctr = self._t.setdefault(key[1], OrderedDict())
        reason = "repeat"
        e = ctr.get(key)
        if e is None and len(ctr) >= self.per_container:
            key, reason = (key[0], key[1], OVERFLOW), "container_cap"
            e = ctr.get(key)
        if e is None or now - e.start >= self.window_s:
            if e is not None and e.suppressed:
                self._evicted.append(_summary(key, e))
            if e is None:
                self._n += 1
            e = ctr[key] = _Entry(start=now)
            ctr.move_to_end(key)
            self._evict()
        if e.raised < self.max_repeats:
            e.raised += 1
            return None
        if not e.suppressed:
            e.first_suppressed = now
        e.suppressed += 1
        e.last = alert
        return reason

    def _evict(self) -> None:
        while self._n > self.max_keys:
            cid = max(self._t, key=lambda c: len(self._t[c]))
            key, e = self._t[cid].popitem(last=False)
            self._n -= 1
            self.evictions += 1
            if not self._t[cid]:
                del self._t[cid]
            if e.suppressed:
                self._evicted.append(_summary(key, e))

    def summaries(self, now: float) -> list[Summary]:
        """Suppressed counts since the last call (resetting them); expired
        keys without suppressed alerts are forgotten."""
        out, self._evicted = self._evicted, []
        for cid in list(self._t):
            ctr = self._t[cid]
            for key in list(ctr):
                e = ctr[key]
                if e.suppressed:
                    out.append(_summary(key, e))
                    e.suppressed, e.last = 0, None
                if now - e.start >= self.window_s:
                    del ctr[key]
                    self._n -= 1
            if not ctr:
                del self._t[cid]
        return out


def _summary(key: Key, e: _Entry) -> Summary:
    last = e.last or {}
    return Summary(key[0], key[1], str(last.get("output", "")), e.suppressed, e.first_suppressed, last,
                   key[2] == OVERFLOW)
