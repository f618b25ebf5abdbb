"""Dedupe/throttle of repeated alerts.

Alerts with the same rule, container and rendered output within
`window_s` are raised at most `max_repeats` times; the rest are
suppressed: counted at once (alerts_suppressed_total{rule}) and reported
later by `summaries()` as one summary alert per key, so nothing is ever
dropped silently. The table is bounded; an evicted key with suppressed
alerts still gets its summary.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

Key = tuple[str, str, str]  # rule, container id ("host"), output


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
    output: str
    count: int
    since: float
    last: dict           # the last suppressed alert (its event, priority, tags ...)


class Throttle:
    def __init__(self, window_s: float, max_repeats: int, max_keys: int = 10_000) -> None:
        self.window_s, self.max_repeats, self.max_keys = window_s, max_repeats, max_keys
        self._t: OrderedDict[Key, _Entry] = OrderedDict()
        self._evicted: list[Summary] = []

    def __len__(self) -> int:
        return len(self._t)

    def admit(self, key: Key, alert: dict, now: float) -> bool:
        """True: raise `alert`. False: it was suppressed and will be summarized."""
        if self.window_s <= 0:
            return True
        e = self._t.get(key)
        if e is None or now - e.start >= self.window_s:
            if e is not None and e.suppressed:
                self._evicted.append(_summary(key, e))
            e = self._t[key] = _Entry(start=now)
            self._t.move_to_end(key)
            self._evict()
        if e.raised < self.max_repeats:
            e.raised += 1
            return True
        if not e.suppressed:
            e.first_suppressed = now
        e.suppressed += 1
        e.last = alert
        return False

    def _evict(self) -> None:
        while len(self._t) > self.max_keys:
            key, e = self._t.popitem(last=False)
            if e.suppressed:
                self._evicted.append(_summary(key, e))

    def summaries(self, now: float) -> list[Summary]:
        """Suppressed counts since the last call (resetting them); expired
        keys without suppressed alerts are forgotten."""
        out, self._evicted = self._evicted, []
        for key in list(self._t):
            e = self._t[key]
            if e.suppressed:
                out.append(_summary(key, e))
                e.suppressed, e.last = 0, None
            if now - e.start >= self.window_s:
                del self._t[key]
        return out


def _summary(key: Key, e: _Entry) -> Summary:
    return Summary(key[0], key[1], key[2], e.suppressed, e.first_suppressed, e.last or {})
