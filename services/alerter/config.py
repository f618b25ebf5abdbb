"""Settings of the alerter: rule files, queue group, throttle, sinks."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared import partition, subjects
from shared.config import ConfigError
from shared.priorities import choices, normalize_priority

DEFAULT_RULES_DIR = Path(__file__).resolve().parent / "rules"


def rule_files(paths: tuple[Path, ...]) -> list[Path]:
    """Expand files and directories (their *.yaml/*.yml, sorted) into files."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml") and f.is_file())
        else:
            out.append(p)
    return out


@dataclass(frozen=True)
class AlerterConfig:
    rules: tuple[Path, ...] = (DEFAULT_RULES_DIR,)  # files or directories, later override earlier
    subject: str = subjects.EVENT_ALL
    queue_group: str = "alerter"
    min_priority: str = "DEBUG"           # alerts below this priority are not raised
    throttle_window_s: float = 60.0       # same rule+container+output within this window ...
    throttle_max_repeats: int = 5         # ... raised at most this many times, the rest summarized
    throttle_max_keys: int = 10_000       # throttle keys in all ...
    throttle_keys_per_container: int = 256  # ... and per container (throttle.py)
    summary_interval_s: float = 10.0      # how often suppressed counts are summarized
    reload_check_s: float = 2.0           # rule file mtime poll; 0 disables
    stdout: bool = False
    file: Path | None = None              # JSON lines, appended
    webhooks: tuple[str, ...] = ()
    webhook_retries: int = 3
    webhook_backoff_s: float = 0.5        # doubles per retry
    webhook_timeout_s: float = 5.0
    sink_queue: int = 10_000              # alerts buffered per sink before drops are counted
    state_table_size: int = 1024          # drop-and-execute / memfd state entries per container (state.py)
    state_containers: int = 512           # containers whose state is remembered (least active forgotten)
    # Partitioned scale-out (shared/partition.py): replicas > 0 makes this replica consume the
    # partitions p % replicas == replica instead of the queue group, so all events of a container
    # meet at one replica. Env EUNOMIA_ALERTER_REPLICA / EUNOMIA_ALERTER_REPLICAS (deploy/).
    replica: int = field(default_factory=lambda: partition.env_int("EUNOMIA_ALERTER_REPLICA", 0))
    replicas: int = field(default_factory=lambda: partition.env_int("EUNOMIA_ALERTER_REPLICAS", 0))

    def __post_init__(self) -> None:
        rules = self.rules
        if isinstance(rules, (str, Path)):
            rules = (rules,)
        object.__setattr__(self, "rules", tuple(Path(p) for p in rules))
        if not self.rules:
            raise ConfigError("rules: at least one rule file or directory is needed")
        for p in self.rules:
            if not p.exists():
                raise ConfigError(f"rules: {p} does not exist")
        if isinstance(self.webhooks, str):
            object.__setattr__(self, "webhooks", (self.webhooks,))
        object.__setattr__(self, "webhooks", tuple(self.webhooks))
        for url in self.webhooks:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"webhooks: {url!r} is not an http(s) URL")
        if self.file is not None:
            object.__setattr__(self, "file", Path(self.file))
        up = normalize_priority(self.min_priority)
        if up is None:
            raise ConfigError(f"min_priority: {self.min_priority!r} is not one of {choices()}")
        object.__setattr__(self, "min_priority", up)
        if not self.subject or " " in self.subject:
            raise ConfigError(f"subject: {self.subject!r} is not a NATS subject")
        if not subjects.valid_token(self.queue_group):
            raise ConfigError(f"queue_group: {self.queue_group!r} is not a valid token")
        if self.throttle_window_s < 0:
            raise ConfigError(f"throttle_window_s: {self.throttle_window_s} < 0 (0 disables throttling)")
        if self.throttle_max_repeats < 1:
            raise ConfigError(f"throttle_max_repeats: {self.throttle_max_repeats} < 1")
        if min(self.throttle_max_keys, self.throttle_keys_per_container, self.state_table_size,
               self.state_containers, self.sink_queue) < 1:
            raise ConfigError("throttle_max_keys, throttle_keys_per_container, state_table_size, "
                              "state_containers and sink_queue must be >= 1")
        if not (0.05 <= self.summary_interval_s <= 3600):
            raise ConfigError(f"summary_interval_s: {self.summary_interval_s} not in [0.05, 3600]")
        if self.reload_check_s < 0:
            raise ConfigError(f"reload_check_s: {self.reload_check_s} < 0")
        if not (0 <= self.webhook_retries <= 20):
            raise ConfigError(f"webhook_retries: {self.webhook_retries} not in [0, 20]")
        if self.webhook_backoff_s < 0 or self.webhook_timeout_s <= 0:
            raise ConfigError("webhook_backoff_s must be >= 0 and webhook_timeout_s > 0")
        if self.replicas < 0:
            raise ConfigError(f"replicas: {self.replicas} < 0 (0 = queue group, no partitions)")
        if self.replicas:
            partition.owned_partitions(self.replica, self.replicas, partition.server_partitions())

    def subscriptions(self) -> list[tuple[str, str]]:
        """(subject, queue group) pairs to consume; raises ConfigError on a bad replica setting."""
        return partition.alerter_subscriptions(self.replica, self.replicas, self.subject, self.queue_group)

    def files(self) -> list[Path]:
        return rule_files(self.rules)
