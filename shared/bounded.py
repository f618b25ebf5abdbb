"""A mapping of at most `maxlen` entries, least recently set (or touched) dropped first.

`Bounded` is an OrderedDict whose item assignment always makes the key the
most recent and then drops the oldest entries while there are more than
`maxlen`. Everything else is plain OrderedDict: reads (`get`, `[]`, `in`) do
not change the order, so a cache that counts a hit as a use calls
`move_to_end(key)` (or `touch(key)`) itself; `pop`, `del` and `clear` are
not evictions. `|` and `fromkeys` are not supported (OrderedDict builds
their result without a bound).

Each entry dropped for room is counted in `evictions` (for a metric) and,
when given, passed to `on_evict(key, value)` after it is out of the mapping
(to free what it holds, or count what it stood for).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Bounded(OrderedDict[K, V]):
    """LRU-bounded OrderedDict: `d[k] = v` refreshes `k` and evicts over `maxlen`."""

    def __init__(self, maxlen: int, on_evict: Callable[[K, V], object] | None = None) -> None:
        if isinstance(maxlen, bool) or not isinstance(maxlen, int):
            raise TypeError(f"Bounded: maxlen must be an int, not {type(maxlen).__name__}")
        if maxlen < 0:
            raise ValueError(f"Bounded: maxlen must be >= 0, not {maxlen}")
        super().__init__()
        self.maxlen = maxlen
        self.on_evict = on_evict
        self.evictions = 0   # entries dropped for room (not pop/del/clear)

    def __setitem__(self, key: K, value: V) -> None:
        # the hot path of every cache here: OrderedDict's C methods called directly (no super())
        OrderedDict.__setitem__(self, key, value)
        OrderedDict.move_to_end(self, key)
        while len(self) > self.maxlen:
            old_key, old_value = self.popitem(last=False)
            self.evictions += 1
            if self.on_evict is not None:
                self.on_evict(old_key, old_value)

    def touch(self, key: K) -> V | None:
        """The value of `key` (None when absent), made the most recent."""
        if key not in self:
            return None
        self.move_to_end(key)
        return self[key]

    def copy(self) -> Bounded[K, V]:
        """Same bound and callback, same entries in the same order; evictions start at 0."""
        new: Bounded[K, V] = Bounded(self.maxlen, self.on_evict)
        for k, v in self.items():
            OrderedDict.__setitem__(new, k, v)
        return new

    def __reduce__(self) -> tuple[Any, ...]:
        # OrderedDict's would call Bounded() without maxlen
        return (_rebuild, (self.maxlen, self.on_evict, self.evictions, list(self.items())))

    def __repr__(self) -> str:
        return f"Bounded({self.maxlen}, {list(self.items())!r})"


def _rebuild(maxlen: int, on_evict: Callable[[K, V], object] | None, evictions: int,
             items: list[tuple[K, V]]) -> Bounded[K, V]:
    d: Bounded[K, V] = Bounded(maxlen, on_evict)
    for k, v in items:
        OrderedDict.__setitem__(d, k, v)
    d.evictions = evictions
    return d
