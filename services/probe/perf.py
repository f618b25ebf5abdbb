"""Per-container performance figures from bpf/perf.bpf.c, read periodically.

The kernel keeps, per cgroup, log2 histograms of microseconds (run-queue,
block I/O, TCP connect latency, TCP RTT) and counters (CPU time, context
switches, block bytes, network bytes sent/received, OOM kills, connects). collect() returns cumulative
values (Prometheus histograms are cumulative) plus rates since the previous
call, for `eunomia top`. Cgroups gone for a while are deleted from the maps.
"""
from __future__ import annotations

import time

from shared.cgroupfs import CgroupPaths, cpu_usage_ns

from .detach import close_links, detach_tracepoints

HISTS = ("runq", "block", "connect", "rtt")   # H_* order in bpf/perf.bpf.c
SLOTS = 32
COUNTERS = ("cpu_ns", "switches", "block_bytes", "oom_kills", "connects", "connect_failed", "net_tx_bytes",
            "net_rx_bytes", "file_read_bytes", "file_write_bytes")
# bucket i counts [2^i, 2^(i+1)) us: its upper bound in seconds
BUCKET_LE = tuple((1 << (i + 1)) / 1e6 for i in range(SLOTS))


def quantile(buckets: list[int], q: float) -> float | None:
    """Upper bound (s) of the bucket holding the q-quantile, None without samples."""
    total = sum(buckets)
    if not total:
        return None
    rank, seen = q * total, 0
    for i, n in enumerate(buckets):
        seen += n
        if seen >= rank:
            return BUCKET_LE[i]
    return BUCKET_LE[-1]


class PerfReader:
    """`cpu_from_cgroupfs`: without the per-switch program (ProbeConfig.perf_detail off) CPU time
    comes from each cgroup's cpu.stat instead, read for the cgroups the probe has seen events of."""

    def __init__(self, bpf, cpu_from_cgroupfs: bool = False) -> None:
        self.cgroup_paths = CgroupPaths() if cpu_from_cgroupfs else None
        self.hists = bpf[b"perf_hists"]
        self.cgs = bpf[b"perf_cgs"]
        self.full = bpf[b"perf_full"]
        self.sys = bpf[b"perf_syscalls"]
        self._prev: dict[int, tuple[float, dict]] = {}   # cgroup -> (monotonic, counters) last time
        self._events_prev: dict[int, tuple[float, int]] = {}
        self.map_full = 0

    @staticmethod
    def switch(bpf, on: bool) -> None:
        table = bpf[b"perf_on"]
        table[table.Key(0)] = table.Leaf(1 if on else 0)

    def collect(self, events: dict[int, int] | None = None) -> dict[int, dict]:
        """{cgroup_id: {"counters": {...}, "hists": {name: {"buckets", "sum_s", "count"}}, "rates": {...}}}.
        `events`: cumulative probe events per cgroup (cg_counts), for an events/s rate."""
        now = time.monotonic()
        out: dict[int, dict] = {}
        for k, v in self.cgs.items():
            c = dict(zip(COUNTERS, (v.cpu_ns, v.switches, v.block_bytes, v.oom_kills, v.connects, v.failed,
                                    v.net_tx, v.net_rx, v.file_rd, v.file_wr)))
            out[k.value] = {"counters": c, "hists": {}, "rates": {}}
        if self.cgroup_paths is not None:
            for cg in set(out) | set(events or ()):
                path = self.cgroup_paths.path(cg)
                used = cpu_usage_ns(path) if path is not None else None
                if used is not None:
                    entry = out.setdefault(cg, {"counters": dict.fromkeys(COUNTERS, 0), "hists": {}, "rates": {}})
                    entry["counters"]["cpu_ns"] = used
        for k, v in self.hists.items():
            if k.which >= len(HISTS):
                continue
            entry = out.setdefault(k.cgroup_id, {"counters": dict.fromkeys(COUNTERS, 0), "hists": {}, "rates": {}})
            buckets = list(v.slot)
            while buckets and not buckets[-1]:  # trailing empty buckets left out (smaller messages)
                buckets.pop()
            entry["hists"][HISTS[k.which]] = {"buckets": buckets, "sum_s": v.sum_ns / 1e9, "count": v.count}
        for cg, entry in out.items():
            c = entry["counters"]
            prev = self._prev.get(cg)
            if prev is not None and now > prev[0]:
                dt, p = now - prev[0], prev[1]
                entry["rates"] = {
                    "cpu": max(0, c["cpu_ns"] - p["cpu_ns"]) / 1e9 / dt,   # cores busy
                    "block_bytes": max(0, c["block_bytes"] - p["block_bytes"]) / dt,
                    "connects": max(0, c["connects"] - p["connects"]) / dt,
                    "net_bytes": max(0, c["net_tx_bytes"] + c["net_rx_bytes"] - p["net_tx_bytes"]
                                     - p["net_rx_bytes"]) / dt,
                    "file_bytes": max(0, c["file_read_bytes"] + c["file_write_bytes"] - p["file_read_bytes"]
                                      - p["file_write_bytes"]) / dt,
                }
            self._prev[cg] = (now, c)
            runq = entry["hists"].get("runq")
            entry["runq_p99_s"] = quantile(runq["buckets"], 0.99) if runq else None
        for cg, n in (events or {}).items():
            prev_ev = self._events_prev.get(cg)
            entry = out.get(cg)
            if entry is not None and prev_ev is not None and now > prev_ev[0]:
                entry["rates"]["events"] = max(0, n - prev_ev[1]) / (now - prev_ev[0])
            self._events_prev[cg] = (now, n)
        self.map_full = sum(self.full[0]) if len(self.full) else 0
        return out

    def syscalls(self, top_n: int = 10) -> dict[int, list[dict]]:
        """{cgroup_id: the top_n syscalls by total time: [{"syscall", "nr", "count", "total_s", "max_s"}]}
        (cumulative), from the opt-in syscall latency programs."""
        from services.seccomp.syscall_names import name
        per: dict[int, list] = {}
        for k, v in self.sys.items():
            per.setdefault(k.cgroup_id, []).append((v.total_ns, k.nr, v.count, v.max_ns))
        out = {}
        for cg, rows in per.items():
            rows.sort(reverse=True)
            out[cg] = [{"syscall": name(nr) or f"syscall_{nr}", "nr": nr, "count": n, "total_s": t / 1e9,
                        "max_s": m / 1e9} for t, nr, n, m in rows[:top_n]]
        return out

    def forget(self, gone: set[int]) -> None:
        """Delete the maps' entries of cgroups that no longer exist."""
        for cg in gone:
            try:
                del self.cgs[self.cgs.Key(cg)]
            except KeyError:
                pass
            self._prev.pop(cg, None)
            self._events_prev.pop(cg, None)
        if gone:
            for table in (self.hists, self.sys):
                for k in [k for k in table.keys() if k.cgroup_id in gone]:
                    try:
                        del table[k]
                    except KeyError:
                        pass


# bpf/perf.bpf.c's programs on the node's hottest paths: attached only with ProbeConfig.perf_detail
DETAIL_TRACEPOINTS = (b"sched:sched_switch", b"sched:sched_wakeup", b"sched:sched_wakeup_new", b"tcp:tcp_probe",
                      b"sock:sock_send_length", b"sock:sock_recv_length")


def detach_detail(bpf) -> list[str]:
    """Detach the per-switch and per-packet programs; those that were not attached (named)."""
    return [f"{tp}: not attached" for tp in detach_tracepoints(bpf, DETAIL_TRACEPOINTS)]


def attach_syscall_latency(bpf) -> list[int]:
    """Attach bpf/perf.bpf.c's perf_sys_enter/perf_sys_exit to the sys_enter/sys_exit raw
    tracepoints, beside the ia32 programs already there (bcc keeps one program per raw
    tracepoint, so these links are made and kept here); returns the link fds (close to detach)."""
    from bcc import BPF
    from bcc.libbcc import lib

    fds = []
    try:
        for fn_name, tp in ((b"perf_sys_enter", b"sys_enter"), (b"perf_sys_exit", b"sys_exit")):
            fn = bpf.load_func(fn_name, BPF.RAW_TRACEPOINT)
            fd = lib.bpf_attach_raw_tracepoint(fn.fd, tp)
            if fd < 0:
                raise OSError(f"attaching {fn_name.decode()} to raw tracepoint {tp.decode()} failed")
            fds.append(fd)
    except BaseException:
        close_links(fds)
        raise
    return fds
