"""JetStream streams that make events and alerts durable."""
from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any

from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from . import log, subjects
from .config import ConfigError

_log = log.get("streams")


@dataclass(frozen=True)
class StreamLimits:
    max_age_s: float = 24 * 3600
    max_bytes: int = 2 * 1024**3
    replicas: int = field(default_factory=lambda: _replicas_from_env())  # env EUNOMIA_STREAM_REPLICAS
    duplicate_window_s: float = 120

    def __post_init__(self) -> None:
        if self.max_age_s <= 0 or self.max_bytes <= 0:
            raise ValueError("stream limits must be positive")
        if self.replicas not in (1, 3, 5):
            raise ConfigError(f"stream replicas (EUNOMIA_STREAM_REPLICAS) {self.replicas}: use 1, 3 or 5")


def _replicas_from_env() -> int:
    """Stream replicas for a NATS cluster (3 in deploy/), 1 on a single node."""
    raw = os.environ.get("EUNOMIA_STREAM_REPLICAS", "1")
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"EUNOMIA_STREAM_REPLICAS: {raw!r} is not an integer") from None


EVENTS = "EVENTS"
ALERTS = "ALERTS"

STREAM_SUBJECTS = {EVENTS: [subjects.EVENT_ALL], ALERTS: [subjects.ALERT_ALL]}


PLACEMENT_WAIT_S = 30.0   # a cluster still forming has no peers for replicas yet


async def ensure_streams(js: Any, limits: StreamLimits | None = None) -> None:
    """Create or update the EVENTS and ALERTS streams (idempotent). While a cluster is still
    forming ("no suitable peers for placement") it is retried for up to PLACEMENT_WAIT_S."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PLACEMENT_WAIT_S
    while True:
        try:
            return await _ensure_streams(js, limits)
        except Exception as e:
            if "no suitable peers" not in str(e) or loop.time() > deadline:
                raise
            _log.info("JetStream cluster not ready for the streams yet (%s); retrying", e)
            await asyncio.sleep(0.5)


async def _ensure_streams(js: Any, limits: StreamLimits | None) -> None:
    limits = limits or StreamLimits()  # read the env at call time, not import time
    for name, subs in STREAM_SUBJECTS.items():
        cfg = StreamConfig(
            name=name, subjects=subs, retention=RetentionPolicy.LIMITS, storage=StorageType.FILE,
            max_age=limits.max_age_s, max_bytes=limits.max_bytes, discard=DiscardPolicy.OLD,
            num_replicas=limits.replicas, duplicate_window=limits.duplicate_window_s)
        try:
            await js.add_stream(cfg)
        except Exception as e:  # exists with other settings: update in place
            if "no suitable peers" in str(e):
                raise  # a cluster still forming: ensure_streams waits
            _log.debug("add_stream %s: %s; updating", name, e)
            await js.update_stream(cfg)
