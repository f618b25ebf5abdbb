"""Probe settings: which kinds to trace, whom to exclude, ring buffer sizing."""
from __future__ import annotations

from dataclasses import dataclass

from shared.config import ConfigError
from shared.schema import KINDS

DEFAULT_KINDS = tuple(KINDS)
MAX_PREFIXES, MAX_PREFIX_LEN = 8, 32  # PREFIX_MAX, PREFIX_SZ in bpf/file.bpf.c


@dataclass(frozen=True)
class ProbeConfig:
    kinds: tuple[str, ...] = DEFAULT_KINDS   # event kinds switched on in the kernel
    exclude_pids: tuple[int, ...] = ()        # never traced (besides ourselves and our services)
    exclude_own_services: bool = True         # exclude pids announced on eunomia.stats.> for this node
    ringbuf_pages: int = 4096                 # ring buffer size in pages (power of two): 16 MiB
    wakeup_every: int = 64                    # wake the reader once per N events per CPU
    poll_timeout_ms: int = 20                 # upper bound on delivery latency without a wakeup
    batch_size: int = 256                     # events per bus message
    queue_batches: int = 256                  # bounded hand-off queue, thread -> event loop
    counters_interval: float = 2.0            # s between reads of lost/cgroup counter maps
    # Read-only opens under these prefixes are dropped in the kernel (writes never are).
    # Empty by default: a security monitor must see reads of /proc/<pid>/environ, /etc/shadow...
    open_skip_prefixes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", tuple(self.kinds))
        object.__setattr__(self, "exclude_pids", tuple(int(p) for p in self.exclude_pids))
        object.__setattr__(self, "open_skip_prefixes", tuple(self.open_skip_prefixes))
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown:
            raise ConfigError(f"probe.kinds: unknown kind(s) {unknown}; known: {sorted(KINDS)}")
        if self.ringbuf_pages < 8 or self.ringbuf_pages & (self.ringbuf_pages - 1):
            raise ConfigError(f"probe.ringbuf_pages: {self.ringbuf_pages} is not a power of two >= 8")
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
        if len(self.open_skip_prefixes) > MAX_PREFIXES:
            raise ConfigError(f"probe.open_skip_prefixes: at most {MAX_PREFIXES} prefixes")
        for p in self.open_skip_prefixes:
            if not isinstance(p, str) or not p.startswith("/") or not (1 < len(p.encode()) <= MAX_PREFIX_LEN):
                raise ConfigError(f"probe.open_skip_prefixes: {p!r} is not an absolute path prefix of "
                                  f"2 to {MAX_PREFIX_LEN} bytes")
