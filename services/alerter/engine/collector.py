"""Collecting rule items in load order: lists, macros and rules as defined so far.

Later items replace, append to (`append: true`) or override (`override: {key:
append|replace}`) earlier ones; each problem is a RuleError at its item. Nothing is
parsed or compiled here (engine/builder.py does that once every file is in), so an
item may use a macro or list defined further down or in a later file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from shared.priorities import normalize_priority

from . import fields as F
from .parser import LIST_OPS, Value
from .reader import Item, is_null
from .source import FileText, Segment

RULE_KEYS = frozenset(("rule", "desc", "condition", "output", "priority", "tags", "enabled", "exceptions",
                       "source", "append", "override", "warn_evttypes", "skip-if-unknown-filter"))
MACRO_KEYS = frozenset(("macro", "condition", "append", "override"))
LIST_KEYS = frozenset(("list", "items", "append", "override"))
IGNORED_ITEMS = frozenset(("required_engine_version", "required_plugin_versions"))
RULE_OVERRIDES = {"append": frozenset(("condition", "output", "desc", "tags", "exceptions")),
                  "replace": frozenset(("condition", "output", "desc", "priority", "tags", "exceptions",
                                        "enabled"))}
SYSCALL_SOURCES = frozenset(("syscall", "syscalls"))



@dataclass
class ListDef:
    items: list[tuple[str, bool]]          # (text, quoted)
    file: FileText | None = None
    node: yaml.Node | None = None


@dataclass
class MacroDef:
    cond: list[Segment]
    file: FileText
    node: yaml.Node


@dataclass
class ExceptionDef:
    name: str
    fields: list[str]
    comps: list[str]
    values: list[tuple[yaml.Node, list[Value | list[Value]]]]
    single: bool                           # `fields: name` form
    file: FileText
    node: yaml.Node


@dataclass
class RuleDef:
    name: str
    file: FileText
    node: yaml.Node
    cond: list[Segment] = field(default_factory=list)
    output: Segment | None = None
    desc: str = ""
    priority: str = "WARNING"
    tags: list[str] = field(default_factory=list)
    enabled: bool = True
    exceptions: dict[str, ExceptionDef] = field(default_factory=dict)
    skip_unknown: bool = False


# shapes the checks did not foresee: still an error at the item or rule, never a crash
UNFORESEEN = (RecursionError, MemoryError, SyntaxError, ValueError, TypeError, OverflowError, IndexError,
               KeyError, AttributeError)


def split_field(spec: str) -> tuple[str, str | None]:
    spec = spec.strip()
    if spec.endswith("]") and "[" in spec:
        name, arg = spec[:-1].split("[", 1)
        return name, arg.strip().strip("'\"")
    return spec, None


class Collector:
    """The definitions so far, by name, and warnings (skipped rules)."""

    def __init__(self) -> None:
        self.lists: dict[str, ListDef] = {}
        self.macros: dict[str, MacroDef] = {}
        self.rules: dict[str, RuleDef] = {}
        self.warnings: list[str] = []

    def item(self, it: Item) -> None:
        if it.has("rule"):
            self.rule(it)
        elif it.has("macro"):
            self.macro(it)
        elif it.has("list"):
            self.list_(it)
        elif not set(it.keys) <= IGNORED_ITEMS:
            raise it.ft.error_at(it.node, f"unknown item: expected 'rule', 'macro' or 'list', "
                                          f"found keys {sorted(it.keys)}")

    def _override(self, it: Item, what: str, allowed: dict[str, frozenset[str]]) -> dict[str, str]:
        node = it.val("override")
        if node is None:
            return {}
        if not isinstance(node, yaml.MappingNode):
            raise it.ft.error_at(node, f"{what}: 'override' must map keys to append or replace")
        out = {}
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode):
                raise it.ft.error_at(k, f"{what}: 'override' keys must be plain names")
            mode = v.value if isinstance(v, yaml.ScalarNode) else None
            if mode not in allowed:
                raise it.ft.error_at(v, f"{what}: override mode must be 'append' or 'replace'")
            if k.value not in allowed[mode]:
                raise it.ft.error_at(k, f"{what}: cannot {mode} {k.value!r} "
                                        f"(can {mode}: {', '.join(sorted(allowed[mode]))})")
            if not it.has(k.value):
                raise it.ft.error_at(k, f"{what}: override of {k.value!r} but no {k.value!r} given")
            out[k.value] = mode
        for k, (knode, _) in it.keys.items():
            if k not in out and k not in ("override", what.split()[0]):
                raise it.ft.error_at(knode, f"{what}: key {k!r} needs an entry in 'override'")
        return out

    def list_(self, it: Item) -> None:
        name = it.text("list", "list")
        what = f"list {name!r}"
        it.check_keys(LIST_KEYS, what)
        items = it.str_list("items", what)
        ov = self._override(it, what, {"append": frozenset(("items",)), "replace": frozenset(("items",))})
        if it.flag("append", what) or ov.get("items") == "append":
            if name not in self.lists:
                raise it.ft.error_at(it.node, f"{what}: append to a list not defined before")
            self.lists[name].items.extend(items)
            return
        if not it.has("items"):
            raise it.ft.error_at(it.node, f"{what}: missing 'items'")
        self.lists[name] = ListDef(items, it.ft, it.node)

    def macro(self, it: Item) -> None:
        name = it.text("macro", "macro")
        what = f"macro {name!r}"
        it.check_keys(MACRO_KEYS, what)
        ov = self._override(it, what, {"append": frozenset(("condition",)),
                                       "replace": frozenset(("condition",))})
        seg = it.segment("condition", what)
        if it.flag("append", what) or ov.get("condition") == "append":
            if name not in self.macros:
                raise it.ft.error_at(it.node, f"{what}: append to a macro not defined before")
            self.macros[name].cond.append(seg)
            return
        self.macros[name] = MacroDef([seg], it.ft, it.node)

    def rule(self, it: Item) -> None:
        name = it.text("rule", "rule")
        what = f"rule {name!r}"
        it.check_keys(RULE_KEYS, what)
        source = it.val("source")
        if source is not None and isinstance(source, yaml.ScalarNode) and source.value not in SYSCALL_SOURCES:
            self.warnings.append(f"{it.ft.name}: {what}: source {source.value!r} is not supported, skipped")
            return
        ov = self._override(it, what, RULE_OVERRIDES)
        append = it.flag("append", what)
        existing = self.rules.get(name)
        if append or ov:
            if existing is None:
                raise it.ft.error_at(it.node, f"{what}: append/override of a rule not defined before")
            if append:
                ov = {k: "append" for k in ("condition", "exceptions") if it.has(k)}
                extra = set(it.keys) - {"rule", "append", "condition", "exceptions"}
                if extra:
                    k = sorted(extra)[0]
                    raise it.ft.error_at(it.keys[k][0], f"{what}: with append: true only condition and "
                                                        f"exceptions can be given, not {k!r}")
            self._apply(existing, it, ov, what)
            return
        if existing is not None and set(it.keys) <= {"rule", "enabled"}:
            existing.enabled = it.flag("enabled", what, True)
            return
        if set(it.keys) <= {"rule", "enabled"}:
            raise it.ft.error_at(it.node, f"{what}: enabled given for a rule not defined before")
        r = RuleDef(name, it.ft, it.node)
        r.cond = [it.segment("condition", what)]
        r.output = it.segment("output", what)
        r.desc = it.text("desc", what) if it.has("desc") else ""
        r.priority = self._priority(it, what)
        r.tags = [t for t, _ in it.str_list("tags", what)]
        r.enabled = it.flag("enabled", what, True)
        r.skip_unknown = it.flag("skip-if-unknown-filter", what)
        for exc in self._exceptions(it, what):
            r.exceptions[exc.name] = exc
        self.rules[name] = r          # a redefinition replaces in place

    def _priority(self, it: Item, what: str) -> str:
        text = it.text("priority", what)
        p = normalize_priority(text)
        if p is None:
            raise it.ft.error_at(it.val("priority"), f"{what}: unknown priority {text!r}")
        return p

    def _apply(self, r: RuleDef, it: Item, ov: dict[str, str], what: str) -> None:
        for key, mode in ov.items():
            if key == "condition":
                seg = it.segment("condition", what)
                r.cond = r.cond + [seg] if mode == "append" else [seg]
            elif key == "output":
                seg = it.segment("output", what)
                r.output = Segment(r.output.text + " " + seg.text, seg.file, None) \
                    if mode == "append" and r.output else seg
            elif key == "desc":
                d = it.text("desc", what)
                r.desc = (r.desc + " " + d).strip() if mode == "append" else d
            elif key == "priority":
                r.priority = self._priority(it, what)
            elif key == "tags":
                tags = [t for t, _ in it.str_list("tags", what)]
                r.tags = r.tags + [t for t in tags if t not in r.tags] if mode == "append" else tags
            elif key == "enabled":
                r.enabled = it.flag("enabled", what, True)
            elif key == "exceptions":
                new = self._exceptions(it, what, r.exceptions)
                if mode == "replace":
                    r.exceptions = {}
                for exc in new:
                    old = r.exceptions.get(exc.name)
                    if old is not None and mode == "append":
                        old.values.extend(exc.values)
                    else:
                        r.exceptions[exc.name] = exc

    def _exceptions(self, it: Item, what: str,
                    existing: dict[str, ExceptionDef] | None = None) -> list[ExceptionDef]:
        node = it.val("exceptions")
        if node is None or is_null(node):
            return []
        ft = it.ft
        if not isinstance(node, yaml.SequenceNode):
            raise ft.error_at(node, f"{what}: 'exceptions' must be a list")
        out = []
        for en in node.value:
            e = Item(ft, en)
            e.check_keys(frozenset(("name", "fields", "comps", "values")), f"{what} exception")
            name = e.text("name", f"{what} exception")
            ew = f"{what} exception {name!r}"
            fnode = e.val("fields")
            prior = (existing or {}).get(name)
            if fnode is None and prior is not None:     # appending values to an existing exception
                values = self._exc_values(ft, e.val("values"), ew, prior.single, prior.comps[0],
                                          len(prior.fields))
                out.append(ExceptionDef(name, prior.fields, prior.comps, values, prior.single, ft, en))
                continue
            if fnode is None:
                raise ft.error_at(en, f"{ew}: missing 'fields'")
            single = isinstance(fnode, yaml.ScalarNode)
            fields = [fnode.value] if single else [t for t, _ in e.str_list("fields", ew)]
            fnodes = [fnode] if single else list(fnode.value)
            if not fields:
                raise ft.error_at(fnode, f"{ew}: 'fields' is empty")
            for fname, fn in zip(fields, fnodes):
                fname_, arg = split_field(fname)
                try:
                    F.resolve(fname_, arg)
                except KeyError as err:
                    raise ft.error_at(fn, f"{ew}: {err.args[0]}") from None
            cnode = e.val("comps")
            if cnode is None:
                comps = ["in" if single else "="] * len(fields)
            elif isinstance(cnode, yaml.ScalarNode):
                comps = [cnode.value] * len(fields)
            else:
                comps = [t for t, _ in e.str_list("comps", ew)]
            if len(comps) != len(fields):
                raise ft.error_at(cnode, f"{ew}: {len(comps)} comps for {len(fields)} fields")
            values = self._exc_values(ft, e.val("values"), ew, single, comps[0], len(fields))
            out.append(ExceptionDef(name, fields, comps, values, single, ft, en))
        return out

    def _exc_values(self, ft: FileText, node: yaml.Node | None, ew: str, single: bool, comp: str,
                    n: int) -> list[tuple[yaml.Node, list[Value | list[Value]]]]:
        if node is None or is_null(node):
            return []
        if not isinstance(node, yaml.SequenceNode):
            raise ft.error_at(node, f"{ew}: 'values' must be a list")

        def val(x: yaml.Node) -> Value | list[Value]:
            if isinstance(x, yaml.ScalarNode):
                return Value(x.value, 0, x.style in ("'", '"'))
            if isinstance(x, yaml.SequenceNode) and all(isinstance(y, yaml.ScalarNode) for y in x.value):
                return [Value(y.value, 0, y.style in ("'", '"')) for y in x.value]
            raise ft.error_at(x, f"{ew}: a value must be text or a list of text")

        if single:
            if comp in LIST_OPS:
                # one comparison with all the values (a nested list among them fails to compile later)
                items: list[Any] = [val(x) for x in node.value]
                return [(node, [items])]
            return [(x, [val(x)]) for x in node.value]
        out: list[tuple[yaml.Node, list[Value | list[Value]]]] = []
        for tup in node.value:
            if not isinstance(tup, yaml.SequenceNode) or len(tup.value) != n:
                raise ft.error_at(tup, f"{ew}: each value must be a list of {n} items (one per field)")
            out.append((tup, [val(x) for x in tup.value]))
        return out

