"""The filter plan: which kernel events some rule (or feature) can use.

The alerter compiles it from its loaded rules (services/alerter/engine/plan.py)
and sends it to every probe on `eunomia.ctl.probes`; the probe loads it into
BPF maps (services/probe/plan_maps.py). It is a conservative superset: an
event the plan drops could never have matched a rule.

- `kinds`: event kinds emitted at all (process kinds always: the enricher's
  process table needs them; dns always: the enricher's name map needs it);
- for the path kinds (open, unlink, chmod, chown, truncate), events are emitted when
  `any_path[kind]` has a bit of the event's access class, or a pattern of the
  kind matches the path with such a bit. The kernel judges the absolute path
  it composes (`judged_path`: a relative argument joined to the directory it
  is relative to, resolved in the kernel, its leading `./` and `../` folded);
  rules see that path normalised. Other non-canonical paths (`//`, `.`, `..`
  further on, and `../` anywhere, `x../y` too) are always emitted; so is a relative path whose directory the
  kernel could not resolve. Access bits shifted by CLIMBING are wanted only
  when the path climbs (a relative path's leading `../`): rules that test
  fd.nameraw contains "../".

- `env`: exec environment variables the rules read (proc.env[NAME]); the
  probe looks for them in envp at every execve and sends an `execenv` event
  when one is there (kind `execenv` is on only when this is not empty).

Access classes (bits): READ (O_RDONLY, O_RDWR), WRITE (O_WRONLY, O_RDWR,
O_TRUNC), CREATE (O_CREAT); events of the other path kinds are READ.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

READ, WRITE, CREATE = 1, 2, 4
ALL_ACCESS = READ | WRITE | CREATE
CLIMBING = 3                    # access << CLIMBING: wanted only when the path climbs (bpf CLS_CLIMBING)
ALL_BITS = ALL_ACCESS | ALL_ACCESS << CLIMBING
ACCESS_NAMES = {READ: "read", WRITE: "write", CREATE: "create"}
PATH_KINDS = ("open", "unlink", "chmod", "chown", "truncate", "mkdir")  # the kernel judges their path
ALWAYS_KINDS = ("exec", "exit", "fork", "chdir")  # kept by the process table whatever the rules
# Kinds a feature uses whatever the rules: dns feeds the enricher's per-container name map
# (`dname` on connections and flows). Low volume; turn it off with the probe's kinds.
FEATURE_KINDS = ("dns",)
MATCHES = ("exact", "prefix", "suffix")
MAX_PATTERNS = 8192             # PLAN_ENTRIES in bpf/file.bpf.c (per trie)
MAX_PATH_LEN = 250              # longer paths are always emitted (PLAN_PATH_SZ - 5)
MAX_SUFFIX_LEN = 64             # PLAN_SUFFIX_SZ: the kernel compares this many last bytes
MAX_ENV_NAMES = 256             # env_watch entries in bpf/process.bpf.c
DOTS_MAX = 8                    # leading `./` and `../` the kernel folds (bpf/file.bpf.c)
# Watched when a rule reads proc.env without naming a variable (and with capture all).
DANGEROUS_ENV = ("LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "GLIBC_TUNABLES", "HTTP_PROXY", "HTTPS_PROXY",
                 "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy", "HISTFILE", "HISTSIZE", "HISTFILESIZE",
                 "BASH_ENV", "PROMPT_COMMAND", "KUBERNETES_SERVICE_HOST")


class PlanError(ValueError):
    """A plan message that is not a valid plan; the text says what and where."""


def open_access(flags: int) -> int:
    """The access classes of an open with these flags (as bpf/file.bpf.c open_class)."""
    acc = 0 if flags & 3 == 1 else READ
    if flags & 3 or flags & 0o1000:
        acc |= WRITE
    if flags & 0o100:
        acc |= CREATE
    return acc


def access_text(mask: int) -> str:
    names = "|".join(n for b, n in ACCESS_NAMES.items() if mask & b)
    climbing = "|".join(n for b, n in ACCESS_NAMES.items() if mask >> CLIMBING & b & ~mask)
    return " ".join(filter(None, (names, climbing and f"{climbing} (climbing)"))) or "none"


def climb_bits(access: int, climbs: bool) -> int:
    """The plan bits an event of these access classes asks for (bpf/file.bpf.c path_stash_fold)."""
    return access | access << CLIMBING if climbs else access


@dataclass(frozen=True, order=True)
class Pattern:
    kind: str
    match: str      # exact | prefix | suffix
    path: str
    access: int     # classes wanted when the pattern matches

    def __post_init__(self) -> None:
        if self.kind not in PATH_KINDS:
            raise PlanError(f"pattern {self.path!r}: kind {self.kind!r} is not a path kind {PATH_KINDS}")
        if self.match not in MATCHES:
            raise PlanError(f"pattern {self.path!r}: match {self.match!r} not in {MATCHES}")
        if not isinstance(self.path, str) or not self.path or "\0" in self.path:
            raise PlanError(f"pattern {self.path!r}: path must be a non-empty string without NUL")
        if self.match != "suffix" and not self.path.startswith("/"):
            raise PlanError(f"pattern {self.path!r}: {self.match} patterns are absolute paths")
        if not isinstance(self.access, int) or not 0 < self.access <= ALL_BITS:
            raise PlanError(f"pattern {self.path!r}: access {self.access!r} not in 1..{ALL_BITS}")


@dataclass(frozen=True)
class FilterPlan:
    kinds: frozenset[str]
    any_path: dict[str, int] = field(default_factory=dict)   # path kind -> classes wanted for any path
    patterns: tuple[Pattern, ...] = ()
    full: dict[str, list[str]] = field(default_factory=dict)  # "kind access" -> rules forcing it
    source: str = ""                                          # who compiled it (for logs)
    env: tuple[str, ...] = ()                                 # exec environment variables watched
    # kinds every rule that can match asks from a container: the kernel drops them for host
    # processes (those in the node's initial mount namespace; every container has its own)
    containers_only: frozenset[str] = frozenset()

    @classmethod
    def capture_all(cls, kinds: Iterable[str], source: str = "capture all") -> "FilterPlan":
        kinds = frozenset(kinds)
        return cls(kinds, {k: ALL_ACCESS for k in PATH_KINDS if k in kinds}, (), {}, source, DANGEROUS_ENV)

    def wants(self, kind: str, path: str | None, access: int = READ, host: bool = False,
              climbs: bool = False) -> bool:
        """The plan's decision for one event, as the kernel takes it (for tests and `rules check`);
        `path` is the one the kernel judges (`judged_path`); a relative one is an unresolved base;
        `host`: from a process in the node's initial mount namespace; `climbs`: the argument was
        relative with a leading `../` (`climbs()`)."""
        if kind not in self.kinds or (host and kind in self.containers_only):
            return False
        access = climb_bits(access, climbs)
        if kind not in PATH_KINDS or self.any_path.get(kind, 0) & access:
            return True
        if not path or len(path.encode()) >= MAX_PATH_LEN or unjudgeable(path) or not path.startswith("/"):
            return True
        for p in self.patterns:
            if p.kind == kind and p.access & access and _matches(p, path):
                return True
        return False

    def to_dict(self) -> dict[str, Any]:
        return {"kinds": sorted(self.kinds), "any_path": dict(sorted(self.any_path.items())),
                "patterns": [[p.kind, p.match, p.path, p.access] for p in self.patterns],
                "full": self.full, "source": self.source, "env": list(self.env),
                "containers_only": sorted(self.containers_only), "climbing": True}

    @classmethod
    def from_dict(cls, d: Any) -> "FilterPlan":
        """Validate a plan from the bus; PlanError names the bad part."""
        if not isinstance(d, dict):
            raise PlanError(f"plan is {type(d).__name__}, not an object")
        kinds = d.get("kinds")
        if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
            raise PlanError("plan.kinds: not a list of kind names")
        any_path = d.get("any_path", {})
        if not isinstance(any_path, dict) or not all(
                k in PATH_KINDS and isinstance(v, int) and 0 <= v <= ALL_BITS for k, v in any_path.items()):
            raise PlanError(f"plan.any_path: not a map of {PATH_KINDS} to access bits 0..{ALL_BITS}")
        if d.get("climbing") is not True:  # compiled before the kernel folded `../`: it relied on
            any_path = {k: any_path.get(k, 0) | ALL_ACCESS << CLIMBING for k in PATH_KINDS}  # their being sent
        raw = d.get("patterns", [])
        if not isinstance(raw, list) or len(raw) > MAX_PATTERNS:
            raise PlanError(f"plan.patterns: not a list of at most {MAX_PATTERNS} patterns")
        pats = []
        for i, p in enumerate(raw):
            if not isinstance(p, list) or len(p) != 4:
                raise PlanError(f"plan.patterns[{i}]: not [kind, match, path, access]")
            try:
                pats.append(Pattern(*p))
            except PlanError as e:
                raise PlanError(f"plan.patterns[{i}]: {e}") from None
        full = d.get("full", {})
        source = d.get("source", "")
        env = d.get("env", [])
        if not isinstance(env, list) or len(env) > MAX_ENV_NAMES or not all(
                isinstance(n, str) and n and "=" not in n and "\0" not in n for n in env):
            raise PlanError(f"plan.env: not a list of at most {MAX_ENV_NAMES} variable names")
        scoped = d.get("containers_only", [])
        if not isinstance(scoped, list) or not all(isinstance(k, str) for k in scoped):
            raise PlanError("plan.containers_only: not a list of kind names")
        return cls(frozenset(kinds), dict(any_path), tuple(pats), full if isinstance(full, dict) else {},
                   source if isinstance(source, str) else "", tuple(env), frozenset(scoped) & frozenset(kinds))


def leading_dots(raw: str) -> tuple[int, str]:
    """(levels up, the rest) of a relative argument's leading `./` and `../` (and a last `.` or
    `..`), at most DOTS_MAX of them, as bpf/file.bpf.c path_absolute folds them."""
    ups = at = 0
    for _ in range(DOTS_MAX):
        head = raw[at:at + 3]
        if head.startswith("./") or head == ".":
            at += len(head[:2])
            if head == ".":
                break
        elif head == "../" or head == "..":
            ups, at = ups + 1, at + len(head)
            if head == "..":
                break
        else:
            break
    return ups, raw[at:]


def climbs(raw: str) -> bool:
    """A relative argument the kernel folds up at least one level (CLIMBING)."""
    return not raw.startswith("/") and leading_dots(raw)[0] > 0


def judged_path(raw: str, base: str | None) -> str:
    """The path the kernel judges: `raw` if absolute, else `base`/`raw` with raw's leading `./` and
    `../` folded (`base` is the absolute directory the kernel resolved, None if it could not: then
    `raw` itself, always sent)."""
    if raw.startswith("/") or not base:
        return raw
    ups, rest = leading_dots(raw)
    for _ in range(ups):  # the base is the kernel's walk, free of links: its parent is what `..` reaches
        base = base.rsplit("/", 1)[0] or "/"
    if not rest:
        return base
    return (base if base == "/" else base + "/") + rest


def unjudgeable(path: str) -> bool:
    """Paths the kernel leaves to user space: //, /./ and /../ components, and `../` anywhere."""
    return "//" in path or "/./" in path or "../" in path or path.endswith(("/.", "/.."))


def _matches(p: Pattern, path: str) -> bool:
    if p.match == "exact":
        return path == p.path
    if p.match == "prefix":
        return path.startswith(p.path)
    return path[-MAX_SUFFIX_LEN:].endswith(p.path[-MAX_SUFFIX_LEN:])


def env_key(name: str) -> int:
    """env_watch's key for a variable name (bpf/process.bpf.c env_key): the first 8
    bytes of "NAME=", NUL-padded; names of 8+ bytes share keys with their prefix."""
    raw = (name + "=").encode()[:8].ljust(8, b"\0")
    return int.from_bytes(raw, "little")
