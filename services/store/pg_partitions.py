"""PostgreSQL's journal partitions: key (= time) ranges, sized so the size cap is met by drops.

A partition retention deleted rows from keeps its file size (VACUUM only makes
the space reusable), so a size cap is kept by dropping whole partitions. Each
new partition spans the longest of SPANS whose rows, at the rate the database
has been filling, take at most 1/PARTS_PER_CAP of the cap; every span divides
a day, so partitions of different spans nest, and a new one is clipped to the
gap between its neighbours (the spans in use may have changed since they were
made).
"""
from __future__ import annotations

import bisect

HOUR_NS = 3600 * 10**9
SPANS = tuple(int(h * HOUR_NS) for h in (0.25, 0.5, 1, 2, 3, 6, 12, 24))
PARTS_PER_CAP = 8


FIRST_SPAN = HOUR_NS         # while the rate is unknown (less than an hour of keys)


def span_for(max_bytes: int, live: int, oldest: int | None, newest: int | None) -> int:
    """The longest span whose rows fit PARTS_PER_CAP times in `max_bytes`, at `live` bytes over the
    keys oldest..newest (FIRST_SPAN while there is too little to tell)."""
    if oldest is None or newest is None or newest - oldest < HOUR_NS or live <= 0:
        return FIRST_SPAN
    per_ns = live / (newest - oldest)
    fits = max_bytes / PARTS_PER_CAP / per_ns
    return max((s for s in SPANS if s <= fits), default=SPANS[0])


def covered(spans: list[tuple[int, int]], k: int) -> bool:
    """Whether a partition of `spans` (sorted [lo, hi) ranges) holds key k."""
    i = bisect.bisect_right(spans, (k, float("inf"))) - 1
    return i >= 0 and spans[i][0] <= k < spans[i][1]


def new_span(spans: list[tuple[int, int]], k: int, span: int) -> tuple[int, int]:
    """[lo, hi) of a new partition for key k (not covered): aligned to `span`, clipped to the gap
    between the partitions around it."""
    lo, hi = k - k % span, k - k % span + span
    i = bisect.bisect_right(spans, (k, float("inf")))
    if i > 0:
        lo = max(lo, spans[i - 1][1])
    if i < len(spans):
        hi = min(hi, spans[i][0])
    return lo, hi
