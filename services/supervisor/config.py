"""Settings of `eunomia up`: which services run and the embedded bus."""
from __future__ import annotations

from dataclasses import dataclass, field

from shared.config import ConfigError

ALL_SERVICES = ("probe", "enricher", "alerter", "store", "api")


@dataclass(frozen=True)
class SupervisorConfig:
    services: tuple[str, ...] = ALL_SERVICES
    embedded_nats: bool = True       # start our own nats-server (single node)
    nats_port: int = 4222
    podman_api: bool = True          # start `podman system service` when no runtime API answers
    restart_backoff_s: float = 1.0   # first delay before restarting a failed service
    restart_backoff_max_s: float = 30.0
    overrides: dict = field(default_factory=dict)  # service name -> config kwargs

    def __post_init__(self) -> None:
        unknown = set(self.services) - set(ALL_SERVICES)
        if unknown:
            raise ConfigError(f"services: unknown {sorted(unknown)}; choose from {ALL_SERVICES}")
        if not (0 < self.nats_port < 65536):
            raise ConfigError(f"nats_port: {self.nats_port} out of range")
        if self.restart_backoff_s <= 0 or self.restart_backoff_max_s < self.restart_backoff_s:
            raise ConfigError("restart_backoff_s must be > 0 and <= restart_backoff_max_s")
