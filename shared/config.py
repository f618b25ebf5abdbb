"""Configuration common to every service: small validated dataclasses."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from . import subjects


class ConfigError(ValueError):
    """A setting is invalid; the message names the setting and why."""


def _default_node() -> str:
    name = os.environ.get("EUNOMIA_NODE") or socket.gethostname().split(".")[0] or "node"
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


@dataclass(frozen=True)
class CommonConfig:
    nats_url: str = field(default_factory=lambda: os.environ.get("EUNOMIA_NATS", "nats://127.0.0.1:4222"))
    node: str = field(default_factory=_default_node)
    data_dir: Path = field(default_factory=lambda: Path(os.environ.get("EUNOMIA_DATA", "/var/lib/eunomia")))
    stats_interval: float = 2.0

    def __post_init__(self) -> None:
        for url in self.nats_url.split(","):
            if not url.startswith(("nats://", "tls://", "ws://", "wss://")):
                raise ConfigError(f"nats_url: {url!r} is not a nats:// URL")
        if not subjects.valid_token(self.node):
            raise ConfigError(f"node: {self.node!r} is not a valid subject token")
        if not (0.1 <= self.stats_interval <= 3600):
            raise ConfigError(f"stats_interval: {self.stats_interval} not in [0.1, 3600] s")
        object.__setattr__(self, "data_dir", Path(self.data_dir))

    @property
    def servers(self) -> list[str]:
        return self.nats_url.split(",")
