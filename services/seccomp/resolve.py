"""Find a container's cgroup id from its name or id prefix.

The cgroup id that bpf_get_current_cgroup_id() returns is the inode number
of the container's cgroup-v2 directory. Sources, in order: the enricher's
container table (over NATS, see cli.py), then this node's own view:
`podman inspect` for the cgroup path, then a search of the cgroup-v2 tree
for a directory named after the id (libpod-<id>, docker-<id>.scope,
cri-containerd-<id>.scope, crio-<id>.scope, <id>).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from shared import cgroupfs

HEX_ID = re.compile(r"^[0-9a-f]{4,64}$")
PODMAN_TIMEOUT = 20


class ResolveError(LookupError):
    """The container cannot be resolved to a cgroup; the text says why."""


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    cgroup_id: int
    source: str  # "enricher", "podman" or "cgroupfs"
    cgroup_ids: tuple[int, ...] = ()  # every cgroup of the container (nested ones too), cgroup_id first

    def __post_init__(self) -> None:
        if self.cgroup_id not in self.cgroup_ids:
            object.__setattr__(self, "cgroup_ids", (self.cgroup_id, *self.cgroup_ids))


def cgroup2_root() -> Path:
    """The cgroup-v2 mount, or ResolveError."""
    root = cgroupfs.cgroup2_root()
    if root is None:
        raise ResolveError("no cgroup-v2 hierarchy mounted at "
                           + " or ".join(str(p) for p in cgroupfs.ROOT_CANDIDATES))
    return root


def cgroup_id_of(path: Path) -> int:
    return os.stat(path).st_ino


def cgroup_ids_under(path: Path) -> tuple[int, ...]:
    """The ids of `path` and of every cgroup below it (e.g. libpod-<id>.scope/container)."""
    ids = [cgroup_id_of(path)]
    for dirpath, dirnames, _ in os.walk(path):
        ids += [cgroup_id_of(Path(dirpath, d)) for d in dirnames]
    return tuple(ids)


def match_table(query: str, containers: list[dict]) -> Container | None:
    """Pick `query` (exact name, or id prefix) out of the enricher's table.

    Items are dicts with `id`, `name` and `cgroup_id`; items without a
    cgroup id are ignored. Raises ResolveError if a prefix is ambiguous.
    """
    rows = [c for c in containers if isinstance(c, dict) and isinstance(c.get("cgroup_id"), int)
            and c["cgroup_id"] > 1]
    by_name = [c for c in rows if str(c.get("name", "")).lstrip("/") == query]
    hits = by_name or [c for c in rows if str(c.get("id", "")).startswith(query)]
    ids = {c["cgroup_id"] for c in hits}
    if len(ids) > 1:
        raise ResolveError(f"container {query!r} is ambiguous: matches {len(ids)} containers")
    if not hits:
        return None
    c = hits[0]
    more = tuple(i for i in c.get("cgroup_ids") or () if isinstance(i, int) and i > 1)
    return Container(str(c.get("id", "")), str(c.get("name", "")).lstrip("/"), c["cgroup_id"], "enricher", more)


def from_podman(query: str) -> Container | None:
    """Ask the local podman; None if podman is absent or does not know `query`."""
    if not shutil.which("podman"):
        return None
    try:
        r = subprocess.run(["podman", "inspect", "--type", "container", "--format", "json", query],
                           capture_output=True, text=True, timeout=PODMAN_TIMEOUT)
    except subprocess.TimeoutExpired:
        return None
    if r.returncode != 0:
        return None
    try:
        info = json.loads(r.stdout)[0]
    except (ValueError, IndexError, KeyError):
        return None
    cid, name = info.get("Id", ""), info.get("Name", "")
    state = info.get("State") or {}
    if not state.get("Running"):
        raise ResolveError(f"container {query!r} ({cid[:12]}) is not running: it has no cgroup")
    rel = (state.get("CgroupPath") or "").lstrip("/")
    path = cgroup2_root() / rel if rel else None
    if path is None or not path.is_dir():
        found = from_cgroupfs(cid)
        if found is None:
            raise ResolveError(f"container {query!r} ({cid[:12]}): cgroup directory {path} not found")
        return Container(cid, name, found.cgroup_id, "podman", found.cgroup_ids)
    return Container(cid, name, cgroup_id_of(path), "podman", cgroup_ids_under(path))


CGROUP_ID_DIR = re.compile(r"(?:^|[-_])([0-9a-f]{64})(?:\.scope)?$")


def _cgroup_dirs(root: Path, prefix: str) -> list[tuple[Path, str]]:
    """(directory, full container id) for every cgroup dir whose id starts with `prefix`."""
    hits = []
    for dirpath, dirnames, _ in os.walk(root):
        for d in dirnames:
            m = CGROUP_ID_DIR.search(d)
            if m and m.group(1).startswith(prefix) and "conmon" not in d:  # conmon: the monitor, not the container
                hits.append((Path(dirpath, d), m.group(1)))
    return hits


def from_cgroupfs(query: str) -> Container | None:
    """Find a cgroup directory named after container id (prefix) `query`."""
    if not HEX_ID.match(query):
        return None
    hits = _cgroup_dirs(cgroup2_root(), query)
    if len(hits) > 1:
        raise ResolveError(f"container id {query!r} is ambiguous: {len(hits)} cgroups match")
    if not hits:
        return None
    path, cid = hits[0]
    return Container(cid, "", cgroup_id_of(path), "cgroupfs", cgroup_ids_under(path))


def resolve_locally(query: str) -> Container:
    """podman, then the cgroup tree; raises ResolveError when neither knows `query`."""
    found = from_podman(query) or from_cgroupfs(query)
    if found is None:
        raise ResolveError(f"unknown container {query!r}: not known to the enricher, podman or the cgroup tree")
    return found
