"""Store settings: a small validated dataclass."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.config import ConfigError

DAY_S = 24 * 3600


@dataclass(frozen=True)
class StoreConfig:
    url: str = ""                      # "" = sqlite:///<data_dir>/eunomia.db; or postgresql://...
    fetch_batch: int = 64              # stream messages (each a batch of events) per fetch/transaction
    fetch_timeout_s: float = 1.0
    # a small fetch waits up to linger_s (at most ack_wait_s / 4) for more, up to linger_bytes: one
    # transaction per many of the enricher's messages. A transaction's fixed cost is ~1-3 ms on SQLite
    # (113 us/event in batches of 50, 44 in batches of 2000). Stored events show this much later; 0 = off
    linger_s: float = 0.5
    linger_bytes: int = 2 * 1024 * 1024
    ack_wait_s: float = 30.0           # unacked messages are redelivered after this
    max_ack_pending: int = 1024
    retention_max_age_s: float = 7 * DAY_S
    max_rows: int = 5_000_000          # per table (events, alerts)
    max_bytes: int = 4 * 1024**3       # database size
    retention_interval_s: float = 10.0    # each run deletes in small batches; often keeps the size near its cap
    events_durable: str = "store-events"
    alerts_durable: str = "store-alerts"
    query_queue: str = "store"
    lag_interval_s: float = 2.0

    def __post_init__(self) -> None:
        if self.url and not self.url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ConfigError(f"store url: {self.url!r} is neither sqlite:///path nor postgresql://...")
        checks = {
            "fetch_batch": 1 <= self.fetch_batch <= 10_000,
            "fetch_timeout_s": 0.01 <= self.fetch_timeout_s <= 60,
            "linger_s": 0 <= self.linger_s <= 10,
            "linger_bytes": 0 <= self.linger_bytes <= 64 * 1024 * 1024,
            "ack_wait_s": 0.5 <= self.ack_wait_s <= 3600,
            "max_ack_pending": self.max_ack_pending >= self.fetch_batch,
            "retention_max_age_s": self.retention_max_age_s > 0,
            "max_rows": self.max_rows >= 1,
            "max_bytes": self.max_bytes >= 1024 * 1024,
            "retention_interval_s": 0.05 <= self.retention_interval_s <= 86400,
            "lag_interval_s": 0.05 <= self.lag_interval_s <= 3600,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"store {name}: {getattr(self, name)!r} is out of range")
        for name in ("events_durable", "alerts_durable", "query_queue"):
            v = getattr(self, name)
            if not v or not all(c.isalnum() or c in "-_" for c in v):
                raise ConfigError(f"store {name}: {v!r} must be letters, digits, '-' or '_'")

    def resolved_url(self, data_dir: Path) -> str:
        return self.url or f"sqlite:///{Path(data_dir) / 'eunomia.db'}"
