"""Prometheus exposition: names, units and labels ours, the text format prometheus_client's.

Turns arbitrary service counter names into names `promtool check metrics`
accepts: snake case, `_total` on counters, base units (seconds, bytes) with
values scaled, no reserved suffixes or labels; assembles the families of one
scrape with a cap on series; prometheus_client writes them out (escaping,
number formats, histogram series).
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

Labels = tuple[tuple[str, str], ...]

# Unit tokens that promtool refuses, mapped to the base unit and a scale factor.
UNITS = {
    "s": ("seconds", 1.0), "sec": ("seconds", 1.0), "secs": ("seconds", 1.0),
    "ms": ("seconds", 1e-3), "us": ("seconds", 1e-6), "ns": ("seconds", 1e-9),
    "milliseconds": ("seconds", 1e-3), "microseconds": ("seconds", 1e-6), "nanoseconds": ("seconds", 1e-9),
    "m": ("seconds", 60.0), "minutes": ("seconds", 60.0), "h": ("seconds", 3600.0), "hours": ("seconds", 3600.0),
    "d": ("seconds", 86400.0), "days": ("seconds", 86400.0),
    "b": ("bytes", 1.0), "kb": ("bytes", 1e3), "mb": ("bytes", 1e6), "gb": ("bytes", 1e9),
    "tb": ("bytes", 1e12), "pb": ("bytes", 1e15), "kib": ("bytes", 1024.0), "mib": ("bytes", 1024.0**2),
    "gib": ("bytes", 1024.0**3),
}
_RESERVED_SUFFIXES = ("_count", "_sum", "_bucket")
_RESERVED_LABELS = ("le", "quantile")
_BAD = re.compile(r"[^a-z0-9_]")


def snake(name: str) -> str:
    name = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()
    name = _BAD.sub("_", name).strip("_")
    name = re.sub(r"_+", "_", name)
    return name if name and not name[0].isdigit() else f"x_{name}"


def metric_name(raw: str, kind: str, prefix: str = "eunomia_") -> tuple[str, float]:
    """(Prometheus name, value scale) for a service metric `raw` of `kind` counter|gauge."""
    tokens = snake(raw).split("_")
    is_total = tokens[-1] == "total"
    if is_total:
        tokens = tokens[:-1]
    scale = 1.0
    tokens2 = []
    for t in tokens:
        if t in UNITS:
            unit, factor = UNITS[t]
            scale *= factor
            t = unit
        tokens2.append(t)
    name = prefix + "_".join(x for x in tokens2 if x)
    if kind == "counter":
        name += "_total"
    elif name.endswith(_RESERVED_SUFFIXES):
        name += "_value"
    return name, scale


def label_name(raw: str) -> str:
    n = snake(raw)
    if n.startswith("__") or n in _RESERVED_LABELS:
        n = "src_" + n.lstrip("_")
    return n


@dataclass
class Family:
    name: str
    kind: str   # counter | gauge | histogram
    help: str
    samples: dict[Labels, float] = field(default_factory=dict)
    # histogram: labels -> (cumulative (le, count) pairs without +Inf, sum, count)
    hists: dict[Labels, tuple[list[tuple[float, float]], float, float]] = field(default_factory=dict)


class Exposition:
    """Metric families being assembled for one scrape, with a cap on series per family."""

    def __init__(self, max_series: int) -> None:
        self.max_series = max_series
        self.families: dict[str, Family] = {}
        self.dropped_series = 0
        self.type_conflicts = 0

    def add(self, name: str, kind: str, help_text: str, labels: dict[str, str], value: float,
            sum_duplicates: bool = True) -> None:
        fam = self.families.get(name)
        if fam is None:
            fam = self.families[name] = Family(name, kind, help_text)
        elif fam.kind != kind:
            self.type_conflicts += 1
            return
        key = tuple(sorted(labels.items()))
        if key in fam.samples:
            fam.samples[key] = fam.samples[key] + value if sum_duplicates else value
        elif len(fam.samples) >= self.max_series:
            self.dropped_series += 1
        else:
            fam.samples[key] = value

    def add_histogram(self, name: str, help_text: str, labels: dict[str, str],
                      buckets: list[tuple[float, float]], total: float, count: float) -> None:
        """`buckets`: (upper bound, cumulative count) pairs, ascending; +Inf is `count`."""
        fam = self.families.get(name)
        if fam is None:
            fam = self.families[name] = Family(name, "histogram", help_text)
        elif fam.kind != "histogram":
            self.type_conflicts += 1
            return
        key = tuple(sorted(labels.items()))
        if key not in fam.hists and len(fam.hists) >= self.max_series:
            self.dropped_series += 1
            return
        fam.hists[key] = (buckets, total, count)

    def render(self) -> str:
        """The text exposition of every family, by prometheus_client (format 0.0.4)."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collected(self.families))
        return generate_latest(registry).decode()


class _Collected:
    """The assembled families as prometheus_client metrics (a custom collector)."""

    def __init__(self, families: dict[str, Family]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        for name in sorted(self.families):
            fam = self.families[name]
            # a counter family is named without _total; its samples keep it
            m = Metric(name.removesuffix("_total") if fam.kind == "counter" else name, fam.help, fam.kind)
            for key in sorted(fam.samples):
                m.add_sample(name, dict(key), fam.samples[key])
            for key in sorted(fam.hists):
                buckets, total, count = fam.hists[key]
                for le, n in buckets:
                    m.add_sample(f"{name}_bucket", {**dict(key), "le": floatToGoString(le)}, n)
                m.add_sample(f"{name}_bucket", {**dict(key), "le": "+Inf"}, count)
                m.add_sample(f"{name}_sum", dict(key), total)
                m.add_sample(f"{name}_count", dict(key), count)
            yield m
