"""Rules -> filter plan (shared/filterplan.py): what the kernel must emit.

Each enabled rule's condition (macros expanded, exceptions included) is
over-approximated by the set of events it can match, per kind: a set of
atoms (path pattern or None for any path, access classes). `and` keeps, for
each pair of atoms, the narrower of the two (both are supersets of their
intersection, and disjoint patterns cancel out); `or` unites; `not` and any
test the plan cannot bound stand for "anything". So a dropped event can never
have matched: the plan is a superset, never a guess.

The exec environment: the names read with proc.env[NAME] become the plan's
`env` (all of DANGEROUS_ENV for proc.env without a name), and kind execenv is
on only then. fchmod, fchown and ftruncate are judged by their fd's path, which
the kernel walks (bpf/file.bpf.c fd_exit), as the path forms are.

Path tests bound the path kinds (open, unlink, chmod, chown, truncate): fd.name / evt.arg.path
with =, in, startswith, pmatch, endswith, glob (up to the first wildcard);
fd.directory =, in, pmatch, startswith; fd.filename =, in, endswith; fd.nameraw tests that
force a `../` in the argument (paths the kernel sends when they climb, or always); and the open class tests
evt.is_open_read/write/create/trunc/exec = true.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

from shared.filterplan import (
    ALL_ACCESS,
    ALWAYS_KINDS,
    CLIMBING,
    CREATE,
    DANGEROUS_ENV,
    FEATURE_KINDS,
    MAX_ENV_NAMES,
    MAX_PATH_LEN,
    MAX_PATTERNS,
    MAX_SUFFIX_LEN,
    PATH_KINDS,
    READ,
    WRITE,
    FilterPlan,
    Pattern,
    access_text,
)

from .compiler import MacroTable
from .evtypes import KNOWN_KINDS, kind_of
from .parser import BoolOp, Compare, Const, MacroRef, Node, Not

if TYPE_CHECKING:
    from .ruleset import CompiledRule

Pat = tuple[str, str] | None             # (match, path) or None: any path
Atom = tuple[Pat, int]                    # (path pattern, access classes)
Abs = dict[str, frozenset[Atom]]          # kind -> atoms; a kind absent cannot match
ANY: frozenset[Atom] = frozenset({(None, ALL_ACCESS)})
ALL_KINDS = frozenset(KNOWN_KINDS)
PATH_FIELDS = frozenset(("fd.name", "evt.arg.path"))
OPEN_CLASSES = {"evt.is_open_read": READ, "evt.is_open_write": WRITE, "evt.is_open_trunc": WRITE,
                "evt.is_open_create": CREATE, "evt.is_open_exec": CREATE}
MAX_ATOMS = 4096                          # per kind; past it the kind is taken whole
# An argument with `../` in it (fd.nameraw contains "../"): the kernel either folds it (a relative
# path's leading `../`, bpf/file.bpf.c path_absolute) and judges the folded path, which is the
# rule's fd.name, by the classes wanted when a path climbs (CLIMBING), or it sends it whatever the
# plan (`../` anywhere else: path_unjudgeable). So it is any path, for those classes only: with a
# path test, that path's pattern, still only when climbing.
TRAVERSAL: Pat = ("traversal", "/../")
CLIMBING_ANY: Atom = (None, ALL_ACCESS << CLIMBING)
# Facts the alerter's state (services/alerter/state.py) derives from earlier events.
STATE_FIELDS = frozenset(("proc.is_exe_upper_layer", "proc.is_exe_from_memfd"))


def top() -> Abs:
    return dict.fromkeys(ALL_KINDS, ANY)


def _narrow_pat(a: Pat, b: Pat) -> Pat | Literal[False]:
    """A pattern covering both a and b's paths (False: they share none)."""
    if a is None or b is None:
        return b if a is None else a
    (ma, pa), (mb, pb) = a, b
    if ma == mb == "exact":
        return a if pa == pb else False
    if "exact" in (ma, mb):
        (me, pe), (mo, po) = (a, b) if ma == "exact" else (b, a)
        ok = pe.startswith(po) if mo == "prefix" else pe.endswith(po)
        return (me, pe) if ok else False
    if ma == mb == "prefix":
        return (a if len(pa) >= len(pb) else b) if pa.startswith(pb) or pb.startswith(pa) else False
    if ma == mb == "suffix":
        return (a if len(pa) >= len(pb) else b) if pa.endswith(pb) or pb.endswith(pa) else False
    return a if ma == "prefix" else b   # a prefix and a suffix: either bounds both


def _fewer(a: int, b: int) -> int:
    return a if bin(a).count("1") <= bin(b).count("1") else b


def _narrow_access(a: int, b: int) -> int:
    """Bits covering both a's and b's events: those of the fewer classes, for any path and (with
    the classes each wants for any path) for a path that climbs."""
    low = _fewer(a & ALL_ACCESS, b & ALL_ACCESS)
    climbing = _fewer((a | a >> CLIMBING) & ALL_ACCESS, (b | b >> CLIMBING) & ALL_ACCESS)
    return low | (climbing & ~low) << CLIMBING


def and_(x: Abs, y: Abs) -> Abs:
    out: Abs = {}
    for k in x.keys() & y.keys():
        if x[k] == ANY or y[k] == ANY:
            out[k] = y[k] if x[k] == ANY else x[k]
            continue
        atoms: set[Atom] = set()
        for pa, aa in x[k]:
            for pb, ab in y[k]:
                p = _narrow_pat(pa, pb)
                if p is not False:
                    atoms.add((p, _narrow_access(aa, ab)))
        if atoms:
            out[k] = _cap(atoms)
    return out


def or_(x: Abs, y: Abs) -> Abs:
    out = dict(x)
    for k, atoms in y.items():
        out[k] = _cap(out[k] | atoms) if k in out else atoms
    return out


def _cap(atoms: set[Atom] | frozenset[Atom]) -> frozenset[Atom]:
    return frozenset(atoms) if len(atoms) <= MAX_ATOMS else ANY


def _only(kinds: Iterable[str], atoms: frozenset[Atom]) -> Abs:
    return dict.fromkeys(kinds, atoms)


class PlanCompiler:
    """Over-approximates conditions (AST nodes) as Abs values."""

    def __init__(self, table: MacroTable) -> None:
        self.table = table
        self._macros: dict[str, Abs] = {}
        self._stack: list[str] = []

    def eval(self, node: Node) -> Abs:
        if isinstance(node, BoolOp):
            parts = [self.eval(a) for a in node.args]
            out = parts[0]
            for p in parts[1:]:
                out = and_(out, p) if node.op == "and" else or_(out, p)
            return out
        if isinstance(node, Not):
            return top()
        if isinstance(node, Const):
            return top() if node.value else {}
        if isinstance(node, MacroRef):
            return self.macro(node.name)
        if isinstance(node, Compare):
            return self.compare(node)
        return top()

    def macro(self, name: str) -> Abs:
        if name not in self._macros:
            body = self.table.macros.get(name)
            if body is None or name in self._stack:  # the rule compiler has reported it already
                return top()
            self._stack.append(name)
            try:
                self._macros[name] = self.eval(body)
            finally:
                self._stack.pop()
        return self._macros[name]

    def values(self, node: Compare) -> list[str]:
        v = node.value
        items = v if isinstance(v, list) else [] if v is None else [v]
        out: list[str] = []
        for it in items:
            if not it.quoted and it.text in self.table.lists:
                out.extend(self.table.lists[it.text])
            else:
                out.append(it.text)
        return out

    def compare(self, node: Compare) -> Abs:
        name = node.field if node.arg is None else f"{node.field}.{node.arg}"
        op, vals = node.op, self.values(node)
        if name == "evt.type" and op in ("=", "in"):
            kinds = {k for k in map(kind_of, vals) if k}
            return _only(kinds, ANY) if kinds else top()
        if name in OPEN_CLASSES and op in ("=", "==") and [v.lower() for v in vals] == ["true"]:
            return {"open": frozenset({(None, OPEN_CLASSES[name])})}
        pats = path_patterns(name, op, vals)
        if pats is None:
            return top()
        bounded = frozenset(CLIMBING_ANY if p == TRAVERSAL else (p, ALL_ACCESS) for p in pats)
        out = top()
        out.update(_only(PATH_KINDS, bounded))
        return out


def path_patterns(name: str, op: str, vals: list[str]) -> set[Pat] | None:
    """Patterns covering every path the test can hold for; None when unbounded."""
    out: set[Pat] = set()
    for v in vals:
        p = _pattern(name, op, v)
        if p is None:
            return None
        out |= p
    return out or None


def _forces_dotdot_slash(op: str, v: str) -> bool:
    """Whether every argument the fd.nameraw test holds for has `../` in it."""
    if op in ("=", "==", "in", "contains", "startswith", "bstartswith", "endswith"):
        return "../" in v
    if op == "glob":  # a literal `../` before any bracket expression (fnmatch's `[]..]` is one class)
        return any("../" in part for part in re.split(r"[*?]", v.split("[", 1)[0]))
    return False


def _pattern(name: str, op: str, v: str) -> set[Pat] | None:
    if not v:
        return None
    if name == "fd.nameraw" and _forces_dotdot_slash(op, v):
        return {TRAVERSAL}
    if name in PATH_FIELDS:
        if op in ("=", "==", "in"):  # a relative name: its tail bounds it (kernel patterns are absolute)
            return {("exact", v)} if v.startswith("/") else {("suffix", v[-MAX_SUFFIX_LEN:])}
        if op in ("startswith", "bstartswith"):
            return {_prefix(v)} if v.startswith("/") else None
        if op == "pmatch":
            base = v.rstrip("/")
            return {("exact", base or "/"), _prefix(base + "/")} if v.startswith("/") else None
        if op == "endswith":
            return {("suffix", v[-MAX_SUFFIX_LEN:])}
        if op == "glob":
            head = v[:min((v.find(c) for c in "*?[" if c in v), default=len(v))]
            if head == v:
                return {("exact", v)} if v.startswith("/") else {("suffix", v[-MAX_SUFFIX_LEN:])}
            return {_prefix(head)} if head.startswith("/") else None
        return None
    if name == "fd.directory":
        if op in ("=", "==", "in", "pmatch"):
            return {_prefix(v.rstrip("/") + "/")} if v.startswith("/") else None
        if op == "startswith":
            return {_prefix(v)} if v.startswith("/") else None
        return None
    if name == "fd.filename":
        if op in ("=", "==", "in"):
            # no leading "/": a relative path's base name is all of it
            return {("suffix", v[-MAX_SUFFIX_LEN:])} if "/" not in v else set()
        if op == "endswith":
            return {("suffix", v[-MAX_SUFFIX_LEN:])}
        return None
    return None


def _prefix(p: str) -> Pat:
    return ("prefix", p[:MAX_PATH_LEN])


def _fields(node: Node | None, table: MacroTable, seen: set[str]) -> set[str]:
    """Every field a condition reads (through macros)."""
    if isinstance(node, BoolOp):
        return set().union(*(_fields(a, table, seen) for a in node.args))
    if isinstance(node, Not):
        return _fields(node.arg, table, seen)
    if isinstance(node, Compare):
        return {node.field}
    if isinstance(node, MacroRef) and node.name not in seen and node.name in table.macros:
        seen.add(node.name)
        return _fields(table.macros[node.name], table, seen)
    return set()


def _env_names(node: Node, table: MacroTable, seen: set[str]) -> set[str | None]:
    """The variables a condition reads with proc.env[NAME] (None: proc.env unkeyed)."""
    if isinstance(node, BoolOp):
        return set().union(*(_env_names(a, table, seen) for a in node.args))
    if isinstance(node, Not):
        return _env_names(node.arg, table, seen)
    if isinstance(node, Compare):
        return {node.arg} if node.field == "proc.env" else set()
    if isinstance(node, MacroRef) and node.name not in seen and node.name in table.macros:
        seen.add(node.name)
        return _env_names(table.macros[node.name], table, seen)
    return set()


class ContainerScope:
    """Whether a condition can only hold for events from a container (`container.id != host`
    required by every way it can be true). Anything it cannot tell counts as "no"."""

    def __init__(self, table: MacroTable) -> None:
        self.table = table
        self._macros: dict[str, bool] = {}

    def required(self, node: Node | None) -> bool:
        if isinstance(node, BoolOp):
            parts = [self.required(a) for a in node.args]
            return any(parts) if node.op == "and" else all(parts)
        if isinstance(node, MacroRef):
            if node.name not in self._macros:
                self._macros[node.name] = False  # a cycle (reported by the rule compiler) says "no"
                body = self.table.macros.get(node.name)
                self._macros[node.name] = body is not None and self.required(body)
            return self._macros[node.name]
        if isinstance(node, Not) and isinstance(node.arg, Compare):
            return _is_host_test(node.arg, ("=", "=="))
        if isinstance(node, Compare):
            return _is_host_test(node, ("!=",))
        return False

    def host_kinds(self, node: Node | None, pc: PlanCompiler, seen: frozenset[str] = frozenset()) -> set[str]:
        """The kinds `node` can match for a host process: each branch of an `or` on its own."""
        if node is None:
            return set(ALL_KINDS)
        if isinstance(node, MacroRef) and node.name in self.table.macros and node.name not in seen:
            return self.host_kinds(self.table.macros[node.name], pc, seen | {node.name})
        if isinstance(node, BoolOp) and node.op == "or":
            return set().union(*(self.host_kinds(a, pc, seen) for a in node.args))
        return set() if self.required(node) else set(pc.eval(node))


def _is_host_test(node: Compare, ops: tuple[str, ...]) -> bool:
    v = node.value
    return (node.field == "container.id" and node.arg is None and node.op in ops and v is not None
            and not isinstance(v, list) and v.text == "host")


def compile_plan(rules: Iterable[CompiledRule], table: MacroTable, source: str = "rules") -> FilterPlan:
    """The plan of a ruleset's enabled rules (CompiledRule objects with .ast)."""
    pc = PlanCompiler(table)
    scope = ContainerScope(table)
    from_host: set[str] = set()    # kinds some rule can match on the host
    total: Abs = {}
    full: dict[str, list[str]] = {}
    env: set[str] = set()
    for r in rules:
        if not r.enabled:
            continue
        a = matched = pc.eval(r.ast) if r.ast is not None else top()
        if STATE_FIELDS & _fields(r.ast, table, set()):  # state needs creates, renames, links, memfds
            a = or_(a, {"open": frozenset({(None, CREATE)}), "rename": ANY, "link": ANY, "memfd": ANY})
        if r.ast is not None:
            names = _env_names(r.ast, table, set())
            env |= {n for n in names if n} | (set(DANGEROUS_ENV) if None in names else set())
        for k in PATH_KINDS:
            wide = 0
            for pat, acc in a.get(k, ()):
                wide |= acc if pat is None else 0
            if wide:
                full.setdefault(f"{k} {access_text(wide)}", []).append(r.name)
        # kinds added above for state count as the host's (they are not the condition's)
        from_host |= scope.host_kinds(r.ast, pc) | (set(a) - set(matched))
        total = or_(total, a)
    plan = build(total, full, source, tuple(sorted(env)[:MAX_ENV_NAMES]))
    # the process table and features need every process's events: never scoped
    scoped = plan.kinds - from_host - set(ALWAYS_KINDS) - set(FEATURE_KINDS) - {"execenv"}
    return dataclasses.replace(plan, containers_only=frozenset(scoped))


def build(total: Abs, full: dict[str, list[str]], source: str, env: tuple[str, ...] = ()) -> FilterPlan:
    kinds = (set(total) - {"execenv"}) | set(ALWAYS_KINDS) | set(FEATURE_KINDS) | ({"execenv"} if env else set())
    any_path: dict[str, int] = {}
    merged: dict[tuple[str, str, str], int] = {}
    for k in PATH_KINDS:
        for pat, acc in total.get(k, ()):
            if pat is None:
                any_path[k] = any_path.get(k, 0) | acc
            else:
                merged[(k, *pat)] = merged.get((k, *pat), 0) | acc
    patterns = [Pattern(k, m, p, acc) for (k, m, p), acc in merged.items()
                if acc & ~(any_path.get(k, 0) | (any_path.get(k, 0) & ALL_ACCESS) << CLIMBING)]
    while len(patterns) > MAX_PATTERNS:  # more than the kernel holds: the busiest kind is sent whole
        counts: dict[str, int] = {}
        for p in patterns:
            counts[p.kind] = counts.get(p.kind, 0) + 1
        widest = max(counts, key=counts.__getitem__)
        any_path[widest] = ALL_ACCESS
        full.setdefault(f"{widest} {access_text(ALL_ACCESS)}", []).append(
            f"(more than {MAX_PATTERNS} path patterns in all)")
        patterns = [p for p in patterns if p.kind != widest]
    return FilterPlan(frozenset(kinds), any_path, tuple(sorted(patterns)), full, source, env)
