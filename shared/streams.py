"""JetStream streams that make events and alerts durable."""
from __future__ import annotations

from dataclasses import dataclass

from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from . import log, subjects

_log = log.get("streams")


@dataclass(frozen=True)
class StreamLimits:
    max_age_s: float = 24 * 3600
    max_bytes: int = 2 * 1024**3
    replicas: int = 1
    duplicate_window_s: float = 120

    def __post_init__(self) -> None:
        if self.max_age_s <= 0 or self.max_bytes <= 0:
            raise ValueError("stream limits must be positive")
        if self.replicas not in (1, 3, 5):
            raise ValueError(f"stream replicas {self.replicas}: use 1, 3 or 5")


EVENTS = "EVENTS"
ALERTS = "ALERTS"

STREAM_SUBJECTS = {EVENTS: [subjects.EVENT_ALL], ALERTS: [subjects.ALERT_ALL]}


async def ensure_streams(js, limits: StreamLimits = StreamLimits()) -> None:
    """Create or update the EVENTS and ALERTS streams (idempotent)."""
    for name, subs in STREAM_SUBJECTS.items():
        cfg = StreamConfig(
            name=name, subjects=subs, retention=RetentionPolicy.LIMITS, storage=StorageType.FILE,
            max_age=limits.max_age_s, max_bytes=limits.max_bytes, discard=DiscardPolicy.OLD,
            num_replicas=limits.replicas, duplicate_window=limits.duplicate_window_s)
        try:
            await js.add_stream(cfg)
        except Exception as e:  # exists with other settings: update in place
            _log.debug("add_stream %s: %s; updating", name, e)
            await js.update_stream(cfg)
