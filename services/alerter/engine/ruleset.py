"""A loaded, compiled ruleset and its hot path: `evaluate(event)`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from .compiler import MacroTable
from .evtypes import KNOWN_KINDS
from .fields import Event
from .output import Template
from .parser import Node
from .runner import Runner, build_runner

if TYPE_CHECKING:
    from shared.filterplan import FilterPlan


@dataclass(slots=True)
class Match:
    rule: str
    priority: str
    tags: list[str]
    desc: str
    output: str
    fields: dict[str, Any]


@dataclass(eq=False)
class CompiledRule:
    name: str
    desc: str
    priority: str
    tags: list[str]
    enabled: bool
    kinds: frozenset[str] | None          # None: any kind
    cond: Callable[[Event], bool]
    template: Template
    condition: str                         # the full condition text (after appends)
    code: str = ""                         # the generated Python expression
    file: str = ""
    line: int = 0
    by_kind: dict[str, tuple[Callable[[Event], bool], str]] = field(default_factory=dict)  # per kind: fn, code
    ast: Node | None = None                # the parsed condition with exceptions (for the filter plan)

    def match(self, ev: Event) -> Match:
        out, values = self.template.render(ev)
        return Match(self.name, self.priority, self.tags, self.desc, out, values)


@dataclass(eq=False)
class Ruleset:
    rules: list[CompiledRule]
    ns: dict[str, Any] | None = field(default=None, repr=False)  # compiler namespace of the rules' code
    macros: dict[str, str] = field(default_factory=dict)      # name -> condition text
    lists: dict[str, list[str]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    table: MacroTable | None = field(default=None, repr=False)  # macro ASTs and lists (for the plan)
    kinds_index: dict[str, tuple[CompiledRule, ...]] = field(init=False)
    any_kind: tuple[CompiledRule, ...] = field(init=False)
    _runners: dict[str, Runner] = field(init=False, repr=False)   # kind -> generated function
    _any_runner: Runner = field(init=False, repr=False)
    eval_errors: int = 0                   # rules that raised on an event (bad event shape)
    last_eval_error: str = ""

    def __post_init__(self) -> None:
        self.reindex()

    def reindex(self) -> None:
        """Index enabled rules by the kinds they can match, in rule order."""
        enabled = [r for r in self.rules if r.enabled]
        kinds = set(KNOWN_KINDS)
        for r in enabled:
            kinds |= r.kinds or set()
        self.any_kind = tuple(r for r in enabled if r.kinds is None)
        self.kinds_index = {k: tuple(r for r in enabled if r.kinds is None or k in r.kinds)
                            for k in sorted(kinds)}
        self._runners = {k: self._runner(k, rules) for k, rules in self.kinds_index.items()}
        self._any_runner = self._runner(None, self.any_kind)

    def kinds_matched(self) -> frozenset[str] | None:
        """The kinds some enabled rule can match; None when a rule matches any kind."""
        if self.any_kind:
            return None
        return frozenset(k for k, rules in self.kinds_index.items() if rules)

    def _runner(self, kind: str | None, rules: tuple[CompiledRule, ...]) -> Runner:
        if self.ns is not None and all(r.code for r in rules):
            items = [(r.by_kind[kind][1] if kind in r.by_kind else r.code, r) for r in rules]
            return build_runner(kind or "any kind", items, self.ns)
        plan = tuple((r.by_kind[kind][0] if kind in r.by_kind else r.cond, r) for r in rules)

        def run(ev: Event, out: list[Match], err: Callable[[CompiledRule, Exception], None]) -> None:
            for cond, r in plan:
                try:
                    if cond(ev):
                        out.append(r.match(ev))
                except Exception as e:  # noqa: BLE001
                    err(r, e)
        return run

    def _error(self, rule: CompiledRule, e: Exception) -> None:
        self.eval_errors += 1
        self.last_eval_error = f"rule {rule.name!r}: {type(e).__name__}: {e}"

    def evaluate(self, ev: Event) -> list[Match]:
        """Every enabled rule that matches `ev`, in rule order. A rule that
        fails on a malformed event is counted in `eval_errors`, never raised."""
        try:
            kind: Any = ev.get("kind")       # any JSON value: only a known kind's text finds a runner
            run = self._runners.get(kind, self._any_runner)
        except (AttributeError, TypeError):
            self.eval_errors += 1
            self.last_eval_error = f"event is {type(ev).__name__}, not an object with a text kind"
            return []
        out: list[Match] = []
        run(ev, out, self._error)      # a rule failing on a bad event is counted, never raised
        return out

    def evaluate_all(self, ev: Event) -> list[Match]:
        """Baseline without the kind index (for tests and the benchmark)."""
        out: list[Match] = []
        for r in self.rules:
            if r.enabled:
                try:
                    if r.cond(ev):
                        out.append(r.match(ev))
                except Exception:  # noqa: BLE001
                    self.eval_errors += 1
        return out

    def filter_plan(self, source: str = "rules", max_rank: int | None = None) -> FilterPlan:
        """What the kernel must emit for these rules (shared/filterplan.py); with
        `max_rank`, only for rules of that priority rank or more urgent."""
        from shared.priorities import priority_rank

        from .plan import compile_plan
        rules = [r for r in self.rules if max_rank is None or priority_rank(r.priority) <= max_rank]
        table = self.table if self.table is not None else MacroTable({}, {})  # built without the loader: no macros
        return compile_plan(rules, table, source)

    def summary(self) -> dict[str, Any]:
        per_kind = {k: len(v) for k, v in self.kinds_index.items() if v}
        return {"rules": len(self.rules), "enabled": sum(r.enabled for r in self.rules),
                "macros": len(self.macros), "lists": len(self.lists), "any_kind": len(self.any_kind),
                "per_kind": per_kind}
