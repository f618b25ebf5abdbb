"""Settings of the API service."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.config import ConfigError


@dataclass(frozen=True)
class ApiConfig:
    host: str = "127.0.0.1"           # loopback unless asked otherwise
    port: int = 8080                  # 0 = any free port (tests)
    token: str | None = None          # None: read or create `token_file`
    token_file: Path | None = None    # default <data_dir>/api-token (mode 0600)
    cors_origin: str | None = None    # CORS off unless an origin is named
    metrics_auth: bool = False        # require the bearer token on /metrics too
    store_timeout_s: float = 5.0
    ws_queue: int = 256               # alert batches buffered per WebSocket client before it is dropped
    ws_max_clients: int = 200
    stats_stale_s: float = 30.0       # a heartbeat older than this: service down, its series hidden
    stats_forget_s: float = 3600.0    # and forgotten entirely after this
    containers_cache_s: float = 10.0  # cgroup_id -> container names for /metrics
    max_series_per_metric: int = 1000

    def __post_init__(self) -> None:
        if not self.host or any(c.isspace() or c in "/@" for c in self.host):
            raise ConfigError(f"api.host: {self.host!r} is not an address or host name")
        if not (0 <= self.port < 65536):
            raise ConfigError(f"api.port: {self.port} not in [0, 65535]")
        if self.token is not None:
            from .auth import token_problem
            why = token_problem(self.token)
            if why:
                raise ConfigError(f"api.token: {why}")
        if self.token_file is not None:
            object.__setattr__(self, "token_file", Path(self.token_file))
        if self.cors_origin is not None and not self.cors_origin.startswith(("http://", "https://")):
            raise ConfigError(f"api.cors_origin: {self.cors_origin!r} is not an http(s) origin")
        if not (0.1 <= self.store_timeout_s <= 120):
            raise ConfigError(f"api.store_timeout_s: {self.store_timeout_s} not in [0.1, 120]")
        if not (1 <= self.ws_queue <= 100_000):
            raise ConfigError(f"api.ws_queue: {self.ws_queue} not in [1, 100000]")
        if not (1 <= self.ws_max_clients <= 100_000):
            raise ConfigError(f"api.ws_max_clients: {self.ws_max_clients} not in [1, 100000]")
        if not (0 < self.stats_stale_s <= self.stats_forget_s):
            raise ConfigError("api.stats_stale_s: must be > 0 and <= stats_forget_s")
        if self.containers_cache_s < 0:
            raise ConfigError("api.containers_cache_s: negative")
        if not (10 <= self.max_series_per_metric <= 100_000):
            raise ConfigError(f"api.max_series_per_metric: {self.max_series_per_metric} not in [10, 100000]")

    def token_path(self, data_dir: Path) -> Path:
        return self.token_file or Path(data_dir) / "api-token"
