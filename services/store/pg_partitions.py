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


FIRST_SPAN = HOUR_NS         # while the rate is unknown


def span_for(max_bytes: int, per_ns: float) -> int:
    """The longest span whose rows, at `per_ns` bytes per ns of keys, fit PARTS_PER_CAP times in
    `max_bytes`."""
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


def recent_rate(parts: list[tuple[int, int, float]]) -> float | None:
    """Bytes per ns over the newest closed partitions ((lo, hi, bytes), oldest first), up to a day of
    them; None with less than an hour to tell (a stray old key makes one more partition, not a rate)."""
    span = size = 0.0
    for lo, hi, b in reversed(parts):
        if span >= SPANS[-1]:
            break
        span, size = span + (hi - lo), size + b
    return size / span if span >= HOUR_NS and size > 0 else None
