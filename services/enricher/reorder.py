"""Put raw events back in time order before they are enriched.

The probe publishes one subject per kind and flushes each when it fills or
every few tens of ms, so an exec can arrive after the opens of the program
it started. We hold every event until `hold_ns` after its own timestamp
(or after its arrival, if its clock runs ahead), then release them sorted
by `ts`. Bounded: past `max_held` events the oldest go out early.
"""
from __future__ import annotations

import heapq
import itertools
import time


class Reorder:
    def __init__(self, hold_ms: float, max_held: int = 200_000) -> None:
        self.hold_ns = int(hold_ms * 1_000_000)
        self.max_held = max_held
        self._heap: list[tuple[int, int, dict]] = []
        self._seq = itertools.count()
        self.forced = 0  # events released early because the buffer was full

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, events: list[dict]) -> None:
        now = time.time_ns()
        for ev in events:
            ts = ev.get("ts")
            key = min(ts, now) if isinstance(ts, int) and not isinstance(ts, bool) else now
            heapq.heappush(self._heap, (key, next(self._seq), ev))

    def ready(self, now_ns: int | None = None) -> list[dict]:
        """Events held long enough (plus any over the bound), oldest first."""
        limit = (now_ns if now_ns is not None else time.time_ns()) - self.hold_ns
        heap, out = self._heap, []
        while heap and (heap[0][0] <= limit or len(heap) > self.max_held):
            if heap[0][0] > limit:
                self.forced += 1
            out.append(heapq.heappop(heap)[2])
        return out

    def all(self) -> list[dict]:
        out = [e for _, _, e in sorted(self._heap)]
        self._heap.clear()
        return out

    def wait_s(self, now_ns: int | None = None) -> float | None:
        """Seconds until the oldest held event is due; None when empty."""
        if not self._heap:
            return None
        now = now_ns if now_ns is not None else time.time_ns()
        return max(0.0, (self._heap[0][0] + self.hold_ns - now) / 1e9)
