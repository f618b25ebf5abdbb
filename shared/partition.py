"""Partitioned event subjects for stateful rules (NATS subject mapping).

Rules with state (sequences, counts) need every event of one container at
the same alerter replica. We let nats-server do the sharding:

- the enricher also publishes each batch of one container on
  `eunomia.pevent.<key>.<node>.<kind>` (key: container id, or "host");
- every nats-server carries the mapping from `mapping()`, which rewrites it
  to `eunomia.pevent.<p>.<key>.<node>.<kind>` with p = FNV-1a(key + node) % N;
- alerter replica i of R subscribes to `eunomia.pevent.<p>.>` for every
  p with p % R == i (`subscriptions()`).

N (the partition count) is fixed in the server config; pick one divisible
by the replica counts you plan to run (the default 12 fits 1, 2, 3, 4, 6, 12).
"""
from __future__ import annotations

import os
from typing import Any

from . import subjects
from .config import ConfigError

PEVENT = f"{subjects.PREFIX}.pevent"
DEFAULT_PARTITIONS = 12
HOST_KEY = "host"


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not an integer") from None


def configured() -> int:
    """Partition count from env EUNOMIA_PARTITIONS; 0 (unset) = partitioned publishing off.

    The enricher publishes partition subjects only when this is set; deploy/ sets
    it for every service (and the NATS servers carry the same N in their mapping)."""
    n = env_int("EUNOMIA_PARTITIONS", 0)
    if n:
        check_partitions(n)
    return n


def server_partitions() -> int:
    """N for a nats-server's mapping: the configured count, else the default."""
    return configured() or DEFAULT_PARTITIONS


def check_partitions(n: int) -> None:
    if not (1 <= n <= 1024):
        raise ConfigError(f"partitions: {n} not in [1, 1024]")


def key_of(event: dict[str, Any]) -> str:
    """Partition key of an enriched event: its container id, or 'host'."""
    c = event.get("container")
    cid = c.get("id") if isinstance(c, dict) else None
    return cid if isinstance(cid, str) and subjects.valid_token(cid) else HOST_KEY


def publish_subject(event: dict[str, Any], node: str, kind: str) -> str:
    """Where the enricher publishes `event` for partitioned consumers (pre-mapping)."""
    return f"{PEVENT}.{key_of(event)}.{node}.{kind}"


def mapping(n: int = DEFAULT_PARTITIONS) -> dict[str, str]:
    """The nats-server `mappings` block that assigns partitions."""
    check_partitions(n)
    return {f"{PEVENT}.*.*.*":
            f"{PEVENT}.{{{{partition({n},1,2)}}}}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}.{{{{wildcard(3)}}}}"}


def server_config(n: int = DEFAULT_PARTITIONS) -> str:
    """nats.conf text holding the mapping (add it to any server's config)."""
    lines = ["mappings {"]
    lines += [f'  "{src}": "{dst}"' for src, dst in mapping(n).items()]
    lines.append("}")
    return "\n".join(lines) + "\n"


def fnv1a32(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def partition_of(key: str, node: str, n: int = DEFAULT_PARTITIONS) -> int:
    """The partition nats-server assigns (same hash: FNV-1a 32 of the tokens joined)."""
    return fnv1a32((key + node).encode()) % n


def owned_partitions(replica: int, replicas: int, n: int = DEFAULT_PARTITIONS) -> list[int]:
    """Partitions alerter replica `replica` (0-based) of `replicas` consumes."""
    check_partitions(n)
    if not (1 <= replicas <= n):
        raise ConfigError(f"replicas: {replicas} not in [1, partitions={n}]")
    if not (0 <= replica < replicas):
        raise ConfigError(f"replica: {replica} not in [0, {replicas})")
    return [p for p in range(n) if p % replicas == replica]


def subscriptions(replica: int, replicas: int, n: int = DEFAULT_PARTITIONS) -> list[str]:
    """Subjects alerter replica `replica` of `replicas` subscribes to."""
    return [f"{PEVENT}.{p}.>" for p in owned_partitions(replica, replicas, n)]


def alerter_subscriptions(replica: int, replicas: int, subject: str, queue: str) -> list[tuple[str, str]]:
    """(subject, queue group) pairs an alerter subscribes to.

    replicas == 0: not partitioned, the shared queue group on `subject`.
    replicas >= 1: replica `replica` owns partitions p % replicas == replica of
    the partition subjects (no queue group: each partition has one owner).
    """
    if replicas == 0:
        return [(subject, queue)]
    return [(s, "") for s in subscriptions(replica, replicas, server_partitions())]


def replica_of(key: str, node: str, replicas: int, n: int = DEFAULT_PARTITIONS) -> int:
    return partition_of(key, node, n) % replicas
