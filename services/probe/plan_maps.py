"""Load a filter plan (shared/filterplan.py) into the probe's BPF maps.

Maps (bpf/common.h, bpf/file.bpf.c): kind_on (kinds emitted), plan_any
(access classes wanted for any path, per path kind; as every value, with those
wanted only for a path that climbs: shared/filterplan.CLIMBING), plan_prefix and
plan_suffix (LPM tries keyed by kind byte + path, or + reversed path tail),
plan_tail and plan_open_head (the quick tests before each trie),
env_watch (exec environment variables watched, by the first 8 bytes of "NAME=").

A swap never drops what either plan wants: first every path passes and the
new kinds are switched on, then the tries are rewritten, then plan_any and
the kinds take their new values.
"""
from __future__ import annotations

import os
from collections.abc import Iterable

from shared import log
from shared.filterplan import ALL_BITS, ALWAYS_KINDS, MAX_PATH_LEN, MAX_SUFFIX_LEN, PATH_KINDS, FilterPlan, env_key

_log = log.get("probe.plan")
BATCH_WRITES = 256  # array entries changed at once: one batch update, not one syscall each

Entries = dict[tuple[int, bytes], int]   # (kind number, key bytes) -> access classes


def trie_entries(plan: FilterPlan, numbers: dict[str, int]) -> tuple[Entries, Entries]:
    """(prefix trie, suffix trie) entries, each value ORed with those of its shorter matches."""
    prefix: Entries = {}
    suffix: Entries = {}
    prefixes: dict[int, list[tuple[bytes, int]]] = {}
    for p in plan.patterns:
        if p.kind not in numbers:
            continue
        kind, raw = numbers[p.kind], p.path.encode()
        if p.match == "suffix":
            key = raw[-MAX_SUFFIX_LEN:][::-1]
            suffix[(kind, key)] = suffix.get((kind, key), 0) | p.access
        elif p.match == "exact":
            if len(raw) < MAX_PATH_LEN:  # longer paths are always sent
                prefix[(kind, raw + b"\0")] = prefix.get((kind, raw + b"\0"), 0) | p.access
        else:
            key = raw[:MAX_PATH_LEN - 1]
            prefix[(kind, key)] = prefix.get((kind, key), 0) | p.access
            prefixes.setdefault(kind, []).append((key, p.access))
    for (kind, key) in prefix:
        for short, acc in prefixes.get(kind, ()):
            if key.startswith(short):
                prefix[(kind, key)] |= acc
    for (kind, key), _acc in list(suffix.items()):
        for (k2, short), acc2 in list(suffix.items()):
            if k2 == kind and key.startswith(short):
                suffix[(kind, key)] |= acc2
    return prefix, suffix


def tail_entries(suffix: Entries) -> dict[int, int]:
    """bpf/file.bpf.c plan_tail: {last byte | second-to-last << 8: access classes} of the suffix
    trie's (reversed, never empty: shared/filterplan.Pattern) keys; a one-byte suffix under every
    pair it ends."""
    tails: dict[int, int] = {}
    for (_kind, key), acc in suffix.items():
        keys = [key[0] | key[1] << 8] if len(key) >= 2 else [key[0] | b << 8 for b in range(256)]
        for t in keys:
            tails[t] = tails.get(t, 0) | acc
    return tails


def open_head_entries(prefix: Entries, open_kind: int) -> dict[int, int]:
    """bpf/file.bpf.c plan_open_head: {second byte | third << 8: access classes} of the prefix trie's
    open keys (absolute paths; an exact one ends in its NUL); a key too short to have both bytes,
    or not absolute, under every pair it can start."""
    heads: dict[int, int] = {}
    for (kind, key), acc in prefix.items():
        if kind != open_kind:
            continue
        if len(key) >= 3 and key[0] == ord("/"):
            keys: Iterable[int] = (key[1] | key[2] << 8,)
        elif len(key) == 2 and key[0] == ord("/"):
            keys = (key[1] | b << 8 for b in range(256))
        else:
            keys = range(65536)
        for h in keys:
            heads[h] = heads.get(h, 0) | acc
    return heads


def _key(table, kind: int, raw: bytes):
    k = table.Key()
    k.prefixlen = 8 + 8 * len(raw)
    k.kind = kind
    k.s = raw
    return k


def _rewrite(table, entries: Entries, loaded: Entries) -> None:
    for kind, raw in set(loaded) - set(entries):
        try:
            del table[_key(table, kind, raw)]
        except KeyError:
            pass
    for (kind, raw), acc in entries.items():
        table[_key(table, kind, raw)] = table.Leaf(acc)


class PlanMaps:
    """The plan now in the kernel, and how to swap it."""

    def __init__(self, bpf, numbers: dict[str, int], has_paths: bool) -> None:
        self.bpf, self.numbers, self.has_paths = bpf, numbers, has_paths
        self.plan: FilterPlan | None = None
        self._kinds: set[str] = set()
        self._scoped: set[str] = set()
        self._prefix: Entries = {}
        self._suffix: Entries = {}
        self._tails: dict[int, int] = {}
        self._heads: dict[int, int] = {}
        self._env: set[int] = set()

    def _set_kinds(self, kinds: Iterable[str], containers_only: Iterable[str] = ()) -> None:
        """kind_on: 0 off, 1 on, 2 on for containers only (bpf/common.h skip())."""
        on = self.bpf[b"kind_on"]
        kinds, scoped = set(kinds), set(containers_only)
        for name, num in self.numbers.items():
            on[on.Key(num)] = on.Leaf(0 if name not in kinds else 2 if name in scoped else 1)
        self._kinds, self._scoped = kinds, scoped & kinds

    def _set_any(self, values: dict[str, int]) -> None:
        table = self.bpf[b"plan_any"]
        for kind in PATH_KINDS:
            if kind in self.numbers:
                table[table.Key(self.numbers[kind])] = table.Leaf(values.get(kind, 0))

    def _set_array(self, name: bytes, old: dict[int, int], new: dict[int, int]) -> None:
        """Rewrite the array map `name` from `old` to `new` values (absent: 0)."""
        table = self.bpf[name]
        changes = dict.fromkeys(set(old) - set(new), 0)
        changes.update((t, acc) for t, acc in new.items() if old.get(t) != acc)
        if len(changes) >= BATCH_WRITES:  # a "/" prefix rewrites all 65536 entries of plan_open_head
            try:
                table.items_update_batch((table.Key * len(changes))(*map(table.Key, changes)),
                                         (table.Leaf * len(changes))(*map(table.Leaf, changes.values())))
                return
            except Exception as e:  # no batch operations in this kernel: one at a time
                _log.debug("batch update of %s failed (%s): writing entries one by one", name.decode(), e)
        for t, acc in changes.items():
            table[table.Key(t)] = table.Leaf(acc)

    def _set_env(self, names: Iterable[str]) -> None:
        try:
            table = self.bpf[b"env_watch"]
        except KeyError:  # process.bpf.c not loaded
            return
        keys = {env_key(n) for n in names}
        for k in self._env - keys:
            try:
                del table[table.Key(k)]
            except KeyError:
                pass
        for k in keys - self._env:
            table[table.Key(k)] = table.Leaf(1)
        self._env = keys

    def load(self, plan: FilterPlan, allowed: Iterable[str]) -> dict:
        """Swap to `plan`, limited to the kinds the probe's config allows; returns a summary."""
        # the process kinds stay on whatever a plan says: the enricher's process table needs them
        kinds = (set(plan.kinds) | set(ALWAYS_KINDS)) & set(allowed) & set(self.numbers)
        if self.has_paths:
            self._set_any(dict.fromkeys(PATH_KINDS, ALL_BITS))
        self._set_env(set(plan.env) | set(self.plan.env if self.plan else ()))  # the union while swapping
        self._set_kinds(self._kinds | kinds)
        prefix, suffix = trie_entries(plan, self.numbers)
        if self.has_paths:
            _rewrite(self.bpf[b"plan_prefix"], prefix, self._prefix)
            _rewrite(self.bpf[b"plan_suffix"], suffix, self._suffix)
            tails, heads = tail_entries(suffix), open_head_entries(prefix, self.numbers.get("open", -1))
            self._set_array(b"plan_tail", self._tails, tails)
            self._set_array(b"plan_open_head", self._heads, heads)
            self._tails, self._heads = tails, heads
            self._set_any(plan.any_path)
        self._prefix, self._suffix = prefix, suffix
        self._set_env(plan.env)
        self._set_kinds(kinds, set(plan.containers_only) - set(ALWAYS_KINDS))
        self.plan = plan
        return self.summary()

    def summary(self) -> dict:
        p = self.plan
        return {"source": p.source if p else None, "kinds": sorted(self._kinds),
                "any_path": dict(p.any_path) if p else {}, "prefix_entries": len(self._prefix),
                "suffix_entries": len(self._suffix), "full": p.full if p else {},
                "env": sorted(p.env) if p else [], "containers_only": sorted(self._scoped)}


def host_mount_ns(proc: str = "/proc") -> int:
    """Inode of the node's initial mount namespace, 0 when it cannot be read: init's, else
    kthreadd's (kernel threads live in the initial namespaces; init may refuse to be inspected)."""
    for pid in (1, 2):
        try:
            link = os.readlink(f"{proc}/{pid}/ns/mnt")   # "mnt:[4026531832]"
            return int(link[link.index("[") + 1:-1])
        except (OSError, ValueError):
            continue
    return 0


def set_host_mount_ns(bpf) -> int:
    """Tell the kernel which mount namespace is the host's (0 leaves container-only kinds unscoped)."""
    ns = host_mount_ns()
    table = bpf[b"host_mnt_ns"]
    table[table.Key(0)] = table.Leaf(ns)
    return ns
