"""Settings of the enricher service."""
from __future__ import annotations

from dataclasses import dataclass

from shared.config import ConfigError

DEFAULT_SOCKETS = ("/run/podman/podman.sock", "/var/run/docker.sock")
# CRI gRPC sockets (containerd, CRI-O, k3s's containerd), first one present wins
DEFAULT_CRI_SOCKETS = ("/run/containerd/containerd.sock", "/run/crio/crio.sock", "/var/run/crio/crio.sock",
                       "/run/k3s/containerd/containerd.sock")


@dataclass(frozen=True)
class EnricherConfig:
    runtime_sockets: tuple[str, ...] = DEFAULT_SOCKETS  # Engine API sockets, first one present wins
    cri_sockets: tuple[str, ...] = DEFAULT_CRI_SOCKETS  # CRI runtime sockets, first one present wins
    cri_poll_s: float = 5.0            # ListContainers period when the runtime has no GetContainerEvents
    watch_events: bool = True          # follow the runtimes' container events (GET /events, GetContainerEvents)
    lookup_timeout_s: float = 2.0      # max wait of a batch for a container lookup (a new container's first)
    container_ttl_s: float = 60.0      # Engine API answers are cached this long
    negative_ttl_s: float = 5.0        # ... and failures (unknown id, socket down) this long
    max_containers: int = 4096         # container metadata cache
    max_cgroups: int = 65536           # cgroup id -> container id cache
    max_processes: int = 65536         # process table
    exit_grace_s: float = 30.0         # exited processes stay resolvable this long
    seed_from_proc: bool = True        # read /proc at start
    max_batch_events: int = 256        # output batch size
    max_pending_events: int = 50_000   # output buffer bound (backpressure past it)
    queue_batches: int = 1024          # raw batches waiting for the enricher (bounded; backpressure)
    queue_group: str = ""              # one enricher per node: no queue group by default

    def __post_init__(self) -> None:
        object.__setattr__(self, "runtime_sockets", tuple(self.runtime_sockets))
        object.__setattr__(self, "cri_sockets", tuple(self.cri_sockets))
        for name in ("runtime_sockets", "cri_sockets"):
            for s in getattr(self, name):
                if not isinstance(s, str) or not s.startswith("/"):
                    raise ConfigError(f"enricher.{name}: {s!r} is not an absolute socket path")
        if not (0.1 <= self.cri_poll_s <= 3600):
            raise ConfigError(f"enricher.cri_poll_s: {self.cri_poll_s} not in [0.1, 3600]")
        if not (0.01 <= self.lookup_timeout_s <= 30):
            raise ConfigError(f"enricher.lookup_timeout_s: {self.lookup_timeout_s} not in [0.01, 30]")
        if not (0 < self.negative_ttl_s <= self.container_ttl_s <= 86400):
            raise ConfigError("enricher.container_ttl_s/negative_ttl_s: need 0 < negative_ttl_s <= "
                              "container_ttl_s <= 86400")
        for name in ("max_containers", "max_cgroups", "max_processes"):
            v = getattr(self, name)
            if not (16 <= v <= 10_000_000):
                raise ConfigError(f"enricher.{name}: {v} not in [16, 10000000]")
        if not (0 <= self.exit_grace_s <= 3600):
            raise ConfigError(f"enricher.exit_grace_s: {self.exit_grace_s} not in [0, 3600]")
        if not (1 <= self.max_batch_events <= 10_000):
            raise ConfigError(f"enricher.max_batch_events: {self.max_batch_events} not in [1, 10000]")
        if not (1 <= self.queue_batches <= 1_000_000):
            raise ConfigError(f"enricher.queue_batches: {self.queue_batches} not in [1, 1000000]")
        if self.max_pending_events < self.max_batch_events:
            raise ConfigError("enricher.max_pending_events: smaller than max_batch_events")
