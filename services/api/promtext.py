"""Prometheus text exposition (format 0.0.4): names, units, labels, escaping.

Turns arbitrary service counter names into names `promtool check metrics`
accepts: snake case, `_total` on counters, base units (seconds, bytes) with
values scaled, no reserved suffixes or labels.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

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


def escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def fmt_value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


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
        out: list[str] = []
        for name in sorted(self.families):
            fam = self.families[name]
            out.append(f"# HELP {name} {fam.help.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
            out.append(f"# TYPE {name} {fam.kind}")
            for key in sorted(fam.samples):
                lbl = ",".join(f'{k}="{escape(v)}"' for k, v in key)
                out.append(f"{name}{{{lbl}}} {fmt_value(fam.samples[key])}" if lbl
                           else f"{name} {fmt_value(fam.samples[key])}")
            for key in sorted(fam.hists):
                buckets, total, count = fam.hists[key]
                lbl = ",".join(f'{k}="{escape(v)}"' for k, v in key)
                sep = "," if lbl else ""
                for le, n in buckets:
                    out.append(f'{name}_bucket{{{lbl}{sep}le="{fmt_value(le)}"}} {fmt_value(n)}')
                out.append(f'{name}_bucket{{{lbl}{sep}le="+Inf"}} {fmt_value(count)}')
                out.append(f"{name}_sum{{{lbl}}} {fmt_value(total)}" if lbl else f"{name}_sum {fmt_value(total)}")
                out.append(f"{name}_count{{{lbl}}} {fmt_value(count)}" if lbl
                           else f"{name}_count {fmt_value(count)}")
        return "\n".join(out) + "\n"
