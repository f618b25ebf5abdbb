"""Probe settings: which kinds to trace, whom to exclude, ring buffer sizing."""
from __future__ import annotations

from dataclasses import dataclass

from shared.config import ConfigError
from shared.schema import KINDS

DEFAULT_KINDS = tuple(KINDS)
DEDUP_STALE_WINDOWS = 8   # bpf/file.bpf.c DEDUP_STALE
# `eunomia up` with the rules' plan sends few events: a 4 MiB ring (16 MiB with --capture all,
# ProbeConfig's default; losses are counted in probe_lost_events_total either way)
PLAN_RINGBUF_PAGES = 1024
CAPTURE_MODES = ("plan", "all")
IA32_EXIT_MODES = ("lazy", "always", "never")


@dataclass(frozen=True)
class ProbeConfig:
    kinds: tuple[str, ...] = DEFAULT_KINDS   # event kinds switched on in the kernel
    exclude_pids: tuple[int, ...] = ()        # never traced while they live (besides ourselves)
    exclude_children: bool = False            # nor our direct children (`eunomia up`: nats-server, podman API)
    exclude_cgroups: tuple[str, ...] = ()     # nor processes in these cgroup-v2 dirs (other Eunomia units)
    free_compiler: bool = True                # free bcc's compiler state once loaded (~40 MB; no later loads)
    ringbuf_pages: int = 4096                 # ring buffer size in pages (power of two): 16 MiB
    wakeup_every: int = 64                    # wake the reader once per N events per CPU
    poll_timeout_ms: int = 20                 # ring poll while records come (quiet: the kernel wakes us)
    batch_size: int = 256                     # events per bus message
    queue_batches: int = 256                  # bounded hand-off queue, thread -> event loop
    counters_interval: float = 2.0            # s between reads of lost/cgroup counter maps
    # "plan": emit only what the alerter's rules can use (shared/filterplan.py);
    # "all": every event of the enabled kinds, for forensics.
    capture: str = "plan"
    plan_retry_s: float = 2.0                 # how often to ask the alerter for a plan until one answers
    plan_refresh_s: float = 30.0              # ... and then (a missed broadcast is caught up)
    # Per-container syscall sets for seccomp profiles (`eunomia seccomp`): a BPF program on
    # raw_syscalls:sys_enter, i.e. on every syscall of the node, so only when asked for.
    syscall_profiles: bool = False
    # Kernels without init_module/finit_module tracepoints: catch module loads on raw_syscalls.
    # "auto": only where the kernel can load modules at all (/proc/modules exists).
    module_fallback: str = "auto"
    # The ia32 (int 0x80) exit program runs on every syscall of the node once attached. "lazy":
    # attached after the first ia32 call of interest (those before it go out from their entry,
    # result unknown); "always": at start; "never": every ia32 call goes out from its entry.
    ia32_exit: str = "lazy"
    # Identical file events (cgroup, comm, kind, flags, path) within this window are sent once,
    # then reported with a repeat count (services/probe/dedup.py); 0 sends every one.
    dedup_window_ms: int = 2000
    # Performance analysis (bpf/perf.bpf.c, bpf/profile.bpf.c; services/probe/perf.py, profiler.py):
    # latency histograms and counters per container, aggregated in the kernel and published on
    # eunomia.perf.<node> every counters_interval; CPU profiles sampled at profile_hz (0 = off),
    # drained into windows of profile_window_s, kept for profile_history_s; the windows are also
    # summed and every profile_store_interval_s go to the store as "profile" events: the
    # profile_store_cgroups busiest cgroups (0: none), each with its profile_store_stacks heaviest stacks.
    perf: bool = True
    # Syscall latency per container (top syscalls by total time): programs on every syscall of
    # the node (raw_syscalls enter and exit), so only when asked for.
    syscall_latency: bool = False
    # CPU time, run-queue latency, TCP RTT and network bytes per container: programs on every context
    # switch, wakeup and socket send/receive of the node (~30 % of the probe's kernel time under nginx
    # load, bench/prog_cost.py), so only when asked for; block I/O, connect latency and OOM are always on.
    perf_detail: bool = False
    profile_hz: int = 49
    profile_window_s: float = 10.0
    profile_history_s: float = 1800.0
    profile_store_interval_s: float = 60.0
    profile_store_cgroups: int = 32
    profile_store_stacks: int = 200

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", tuple(self.kinds))
        object.__setattr__(self, "exclude_pids", tuple(int(p) for p in self.exclude_pids))
        object.__setattr__(self, "exclude_cgroups", tuple(self.exclude_cgroups))
        if any(not c.removeprefix("/sys/fs/cgroup").strip("/") or ".." in c.split("/") for c in self.exclude_cgroups):
            raise ConfigError(f"probe.exclude_cgroups: {self.exclude_cgroups}: the root cgroup, an empty path "
                              "or '..' (name a service's own cgroup)")
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown:
            raise ConfigError(f"probe.kinds: unknown kind(s) {unknown}; known: {sorted(KINDS)}")
        if self.ringbuf_pages < 8 or self.ringbuf_pages & (self.ringbuf_pages - 1):
            raise ConfigError(f"probe.ringbuf_pages: {self.ringbuf_pages} is not a power of two >= 8")
        if self.ia32_exit not in IA32_EXIT_MODES:
            raise ConfigError(f"probe.ia32_exit: {self.ia32_exit!r} is not one of {IA32_EXIT_MODES}")
        if not (1 <= self.wakeup_every <= 4096):
            raise ConfigError(f"probe.wakeup_every: {self.wakeup_every} not in [1, 4096]")
        if not (1 <= self.poll_timeout_ms <= 1000):
            raise ConfigError(f"probe.poll_timeout_ms: {self.poll_timeout_ms} not in [1, 1000]")
        if not (1 <= self.batch_size <= 10_000):
            raise ConfigError(f"probe.batch_size: {self.batch_size} not in [1, 10000]")
        if not (1 <= self.queue_batches <= 100_000):
            raise ConfigError(f"probe.queue_batches: {self.queue_batches} not in [1, 100000]")
        if not (0.1 <= self.counters_interval <= 3600):
            raise ConfigError(f"probe.counters_interval: {self.counters_interval} not in [0.1, 3600] s")
        if any(p <= 0 for p in self.exclude_pids):
            raise ConfigError(f"probe.exclude_pids: {self.exclude_pids} must be positive pids")
        if not (0 <= self.dedup_window_ms <= 600_000):
            raise ConfigError(f"probe.dedup_window_ms: {self.dedup_window_ms} not in [0, 600000]")
        if self.dedup_window_ms and self.counters_interval * 1000 > DEDUP_STALE_WINDOWS * self.dedup_window_ms:
            # repeats are reported every counters interval; the kernel counts them only this long
            raise ConfigError(f"probe.counters_interval: {self.counters_interval} s is longer than "
                              f"{DEDUP_STALE_WINDOWS} x probe.dedup_window_ms ({self.dedup_window_ms} ms): "
                              "runs of repeats would be sent one by one before their count; "
                              "shorten it or lengthen the window")
        if self.module_fallback not in ("auto", "on", "off"):
            raise ConfigError(f"probe.module_fallback: {self.module_fallback!r} not in ('auto', 'on', 'off')")
        if not (self.profile_hz == 0 or 1 <= self.profile_hz <= 1000):
            raise ConfigError(f"probe.profile_hz: {self.profile_hz} not 0 (off) or in [1, 1000]")
        if not (1 <= self.profile_window_s <= 600):
            raise ConfigError(f"probe.profile_window_s: {self.profile_window_s} not in [1, 600] s")
        if not (self.profile_window_s <= self.profile_store_interval_s <= 3600):
            raise ConfigError(f"probe.profile_store_interval_s: {self.profile_store_interval_s} not in "
                              "[profile_window_s, 3600] s")
        if not (0 <= self.profile_store_cgroups <= 4096):
            raise ConfigError(f"probe.profile_store_cgroups: {self.profile_store_cgroups} not in [0, 4096]")
        if not (1 <= self.profile_store_stacks <= 5000):
            raise ConfigError(f"probe.profile_store_stacks: {self.profile_store_stacks} not in [1, 5000]")
        if not (self.profile_window_s <= self.profile_history_s <= 86400):
            raise ConfigError(f"probe.profile_history_s: {self.profile_history_s} not in "
                              f"[profile_window_s, 86400] s")
        if self.capture not in CAPTURE_MODES:
            raise ConfigError(f"probe.capture: {self.capture!r} not in {CAPTURE_MODES}")
        if not (1 <= self.plan_refresh_s <= 3600):
            raise ConfigError(f"probe.plan_refresh_s: {self.plan_refresh_s} not in [1, 3600] s")
        if not (0.1 <= self.plan_retry_s <= 60):
            raise ConfigError(f"probe.plan_retry_s: {self.plan_retry_s} not in [0.1, 60] s")
