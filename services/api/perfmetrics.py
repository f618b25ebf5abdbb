"""Per-container performance figures of the probes (eunomia.perf.<node>) as Prometheus metrics:
latency histograms with a `container` label, CPU time, block bytes, connects and OOM kills."""
from __future__ import annotations

from services.probe.perf import BUCKET_LE

from .promtext import Exposition

HIST_METRICS = {
    "runq": ("eunomia_container_runqueue_latency_seconds", "Time runnable tasks of the container waited for a CPU."),
    "block": ("eunomia_container_block_io_latency_seconds", "Block I/O request latency (issue to completion)."),
    "connect": ("eunomia_container_tcp_connect_latency_seconds", "TCP connect latency (SYN sent to established)."),
    "rtt": ("eunomia_container_tcp_rtt_seconds", "Smoothed TCP round-trip time of the container's connections."),
}
COUNTER_METRICS = {
    "cpu_ns": ("eunomia_container_cpu_seconds_total", "CPU time of the container's tasks.", 1e-9),
    "block_bytes": ("eunomia_container_block_io_bytes_total", "Bytes of block I/O requests issued.", 1.0),
    "connects": ("eunomia_container_tcp_connects_total", "TCP connects that completed.", 1.0),
    "connect_failed": ("eunomia_container_tcp_connects_failed_total", "TCP connects that failed.", 1.0),
    "net_tx_bytes": ("eunomia_container_network_transmit_bytes_total", "Bytes sent on inet sockets.", 1.0),
    "net_rx_bytes": ("eunomia_container_network_receive_bytes_total", "Bytes received on inet sockets.", 1.0),
    "file_read_bytes": ("eunomia_container_file_read_bytes_total",
                        "Bytes read from regular files (with probe.syscall_latency).", 1.0),
    "file_write_bytes": ("eunomia_container_file_write_bytes_total",
                         "Bytes written to regular files (with probe.syscall_latency).", 1.0),
    "oom_kills": ("eunomia_container_oom_kills_total", "OOM kills triggered in the container.", 1.0),
    "switches": ("eunomia_container_context_switches_total", "Context switches away from the container's tasks.", 1.0),
}
MAX_LE_INDEX = 26  # buckets up to 2^27 us (134 s); above that only +Inf


def export(exp: Exposition, perf: dict[str, dict], cgroups: dict[str, str]) -> None:
    """`cgroups`: cgroup_id (str) -> container label; cgroups not known as containers are skipped."""
    for node, msg in perf.items():
        for cg in msg.get("cgroups", []):
            if not isinstance(cg, dict):
                continue
            name = cgroups.get(str(cg.get("cgroup_id")))
            if name is None:
                continue
            labels = {"container": name, "node": node}
            for key, (metric, help_text, scale) in COUNTER_METRICS.items():
                v = (cg.get("counters") or {}).get(key)
                if isinstance(v, (int, float)):
                    exp.add(metric, "counter", help_text, labels, v * scale)
            for key, h in (cg.get("hists") or {}).items():
                if key not in HIST_METRICS or not isinstance(h, dict) or not isinstance(h.get("buckets"), list):
                    continue
                counts = h["buckets"][:len(BUCKET_LE)]
                counts += [0] * (MAX_LE_INDEX + 1 - len(counts))  # the probe leaves out trailing zeros
                cum, pairs = 0, []
                for i, n in enumerate(counts):
                    cum += n if isinstance(n, (int, float)) and not isinstance(n, bool) else 0
                    if i <= MAX_LE_INDEX:
                        pairs.append((BUCKET_LE[i], cum))
                metric, help_text = HIST_METRICS[key]
                exp.add_histogram(metric, help_text, labels, pairs, float(h.get("sum_s") or 0), float(cum))
