"""YAML rule files -> Ruleset.

Items are read from the YAML node tree (yaml.compose) so that every error
names file, line and column. Files load in order; later items replace,
append to (`append: true`) or override (`override: {key: append|replace}`)
earlier ones. Conditions are parsed and compiled once all files are in, so
an item may use a macro or list defined further down or in a later file.
All problems are collected; the first is raised with `.errors` holding all.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from shared.priorities import normalize_priority

from . import fields as F
from .compiler import Compiler, MacroTable
from .errors import RuleError
from .output import compile_output
from .parser import LIST_OPS, BoolOp, Compare, MacroRef, Node, Not, Value, parse
from .ruleset import CompiledRule, Ruleset
from .source import FileText, Segment, Source

RULE_KEYS = frozenset(("rule", "desc", "condition", "output", "priority", "tags", "enabled", "exceptions",
                       "source", "append", "override", "warn_evttypes", "skip-if-unknown-filter"))
MACRO_KEYS = frozenset(("macro", "condition", "append", "override"))
LIST_KEYS = frozenset(("list", "items", "append", "override"))
IGNORED_ITEMS = frozenset(("required_engine_version", "required_plugin_versions"))
RULE_OVERRIDES = {"append": frozenset(("condition", "output", "desc", "tags", "exceptions")),
                  "replace": frozenset(("condition", "output", "desc", "priority", "tags", "exceptions",
                                        "enabled"))}
SYSCALL_SOURCES = frozenset(("syscall", "syscalls"))
MAX_FILE_BYTES = 8 << 20        # a rules file larger than this is refused (the default set is ~100 KiB)
MAX_YAML_DEPTH = 32             # nested YAML collections (rules need 4)


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader whose (recursive) composer refuses deep nesting with a
    position instead of running out of stack."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                self.check_event()    # parses the next event into current_event, as peek_event (untyped) does
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_YAML_DEPTH} levels deep",
                                                  self.current_event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


@dataclass
class _List:
    items: list[tuple[str, bool]]          # (text, quoted)
    file: FileText | None = None
    node: yaml.Node | None = None


@dataclass
class _Macro:
    cond: list[Segment]
    file: FileText
    node: yaml.Node


@dataclass
class _Exception:
    name: str
    fields: list[str]
    comps: list[str]
    values: list[tuple[yaml.Node, list[Value | list[Value]]]]
    single: bool                           # `fields: name` form
    file: FileText
    node: yaml.Node


@dataclass
class _Rule:
    name: str
    file: FileText
    node: yaml.Node
    cond: list[Segment] = field(default_factory=list)
    output: Segment | None = None
    desc: str = ""
    priority: str = "WARNING"
    tags: list[str] = field(default_factory=list)
    enabled: bool = True
    exceptions: dict[str, _Exception] = field(default_factory=dict)
    skip_unknown: bool = False


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


class _Item:
    """One YAML mapping item with typed accessors that fail with positions."""

    def __init__(self, ft: FileText, node: yaml.Node) -> None:
        if not isinstance(node, yaml.MappingNode):
            raise ft.error_at(node, "each item must be a mapping (rule, macro or list)")
        self.ft, self.node = ft, node
        self.keys: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode):
                raise ft.error_at(k, "keys must be plain names")
            if k.value in self.keys:
                raise ft.error_at(k, f"duplicate key {k.value!r}")
            self.keys[k.value] = (k, v)

    def has(self, key: str) -> bool:
        return key in self.keys

    def val(self, key: str) -> yaml.Node | None:
        kv = self.keys.get(key)
        return kv[1] if kv else None

    def check_keys(self, allowed: frozenset[str], what: str) -> None:
        for k, (knode, _) in self.keys.items():
            if k not in allowed:
                raise self.ft.error_at(knode, f"{what}: unknown key {k!r} (allowed: {', '.join(sorted(allowed))})")

    def text(self, key: str, what: str) -> str:
        node = self.val(key)
        if node is None or _is_null(node):
            raise self.ft.error_at(node or self.node, f"{what}: missing {key!r}")
        if not isinstance(node, yaml.ScalarNode):
            raise self.ft.error_at(node, f"{what}: {key!r} must be text")
        value: str = node.value
        return value

    def segment(self, key: str, what: str) -> Segment:
        text = self.text(key, what)
        return Segment(text, self.ft, self.val(key))

    def flag(self, key: str, what: str, default: bool = False) -> bool:
        node = self.val(key)
        if node is None:
            return default
        if not isinstance(node, yaml.ScalarNode) or node.value.lower() not in ("true", "false", "yes", "no"):
            raise self.ft.error_at(node, f"{what}: {key!r} must be true or false")
        return node.value.lower() in ("true", "yes")

    def str_list(self, key: str, what: str) -> list[tuple[str, bool]]:
        node = self.val(key)
        if node is None or _is_null(node):
            return []
        if not isinstance(node, yaml.SequenceNode):
            raise self.ft.error_at(node, f"{what}: {key!r} must be a list")
        out = []
        for it in node.value:
            if not isinstance(it, yaml.ScalarNode):
                raise self.ft.error_at(it, f"{what}: {key!r} items must be text")
            out.append((it.value, it.style in ("'", '"')))
        return out


class Loader:
    def __init__(self) -> None:
        self.lists: dict[str, _List] = {}
        self.macros: dict[str, _Macro] = {}
        self.rules: dict[str, _Rule] = {}
        self.errors: list[RuleError] = []
        self.warnings: list[str] = []
        self.files: list[str] = []

    # --- reading ---
    def add_text(self, text: str, filename: str) -> None:
        self.files.append(filename)
        ft = FileText(filename, text)
        if len(text) > MAX_FILE_BYTES:
            self.errors.append(RuleError(filename, 1, 1, f"file too large: {len(text)} characters "
                                                         f"(at most {MAX_FILE_BYTES})"))
            return
        try:
            root = yaml.compose(text, Loader=_YamlLoader)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            reason = " ".join(x for x in (e.context, e.problem) if x) or "bad YAML"
            self.errors.append(RuleError(filename, line, col, f"bad YAML: {reason}"))
            return
        except yaml.YAMLError as e:
            self.errors.append(RuleError(filename, 1, 1, f"bad YAML: {e}"))
            return
        if root is None or _is_null(root):
            return
        if not isinstance(root, yaml.SequenceNode):
            self.errors.append(ft.error_at(root, "a rules file is a list of items (rule, macro, list)"))
            return
        for node in root.value:
            try:
                self.item(_Item(ft, node))
            except RuleError as e:
                self.errors.append(e)
            except _UNFORESEEN as e:
                # a shape the checks above did not foresee: still an error at the item, never a crash
                self.errors.append(ft.error_at(node, f"malformed item: {type(e).__name__}: {e}"))

    def add_path(self, path: Path) -> None:
        path = Path(path)
        if path.is_dir():
            for p in sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml")):
                self.add_path(p)
            return
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                self.errors.append(RuleError(str(path), 1, 1, f"file too large: {path.stat().st_size} bytes "
                                                              f"(at most {MAX_FILE_BYTES})"))
                return
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            self.errors.append(RuleError(str(path), 1, 1, f"cannot read rules file: {e}"))
            return
        self.add_text(text, str(path))

    def item(self, it: _Item) -> None:
        if it.has("rule"):
            self.rule(it)
        elif it.has("macro"):
            self.macro(it)
        elif it.has("list"):
            self.list_(it)
        elif not set(it.keys) <= IGNORED_ITEMS:
            raise it.ft.error_at(it.node, f"unknown item: expected 'rule', 'macro' or 'list', "
                                          f"found keys {sorted(it.keys)}")

    def _override(self, it: _Item, what: str, allowed: dict[str, frozenset[str]]) -> dict[str, str]:
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

    def list_(self, it: _Item) -> None:
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
        self.lists[name] = _List(items, it.ft, it.node)

    def macro(self, it: _Item) -> None:
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
        self.macros[name] = _Macro([seg], it.ft, it.node)

    def rule(self, it: _Item) -> None:
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
        r = _Rule(name, it.ft, it.node)
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

    def _priority(self, it: _Item, what: str) -> str:
        text = it.text("priority", what)
        p = normalize_priority(text)
        if p is None:
            raise it.ft.error_at(it.val("priority"), f"{what}: unknown priority {text!r}")
        return p

    def _apply(self, r: _Rule, it: _Item, ov: dict[str, str], what: str) -> None:
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

    def _exceptions(self, it: _Item, what: str,
                    existing: dict[str, _Exception] | None = None) -> list[_Exception]:
        node = it.val("exceptions")
        if node is None or _is_null(node):
            return []
        ft = it.ft
        if not isinstance(node, yaml.SequenceNode):
            raise ft.error_at(node, f"{what}: 'exceptions' must be a list")
        out = []
        for en in node.value:
            e = _Item(ft, en)
            e.check_keys(frozenset(("name", "fields", "comps", "values")), f"{what} exception")
            name = e.text("name", f"{what} exception")
            ew = f"{what} exception {name!r}"
            fnode = e.val("fields")
            prior = (existing or {}).get(name)
            if fnode is None and prior is not None:     # appending values to an existing exception
                values = self._exc_values(ft, e.val("values"), ew, prior.single, prior.comps[0],
                                          len(prior.fields))
                out.append(_Exception(name, prior.fields, prior.comps, values, prior.single, ft, en))
                continue
            if fnode is None:
                raise ft.error_at(en, f"{ew}: missing 'fields'")
            single = isinstance(fnode, yaml.ScalarNode)
            fields = [fnode.value] if single else [t for t, _ in e.str_list("fields", ew)]
            fnodes = [fnode] if single else list(fnode.value)
            if not fields:
                raise ft.error_at(fnode, f"{ew}: 'fields' is empty")
            for fname, fn in zip(fields, fnodes):
                fname_, arg = _split_field(fname)
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
            out.append(_Exception(name, fields, comps, values, single, ft, en))
        return out

    def _exc_values(self, ft: FileText, node: yaml.Node | None, ew: str, single: bool, comp: str,
                    n: int) -> list[tuple[yaml.Node, list[Value | list[Value]]]]:
        if node is None or _is_null(node):
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

    # --- compiling ---
    def finish(self) -> Ruleset:
        errors = self.errors
        seen: set[str] = set()

        def fail(e: RuleError) -> None:
            if str(e) not in seen:
                seen.add(str(e))
                errors.append(e)

        lists: dict[str, list[str]] = {}
        for name in self.lists:
            try:
                lists[name] = self._expand(name, [])
            except RuleError as e:
                fail(e)
                lists[name] = []
        macro_ast: dict[str, Node] = {}
        for name, m in self.macros.items():
            try:
                macro_ast[name] = parse(Source(m.cond))
            except RuleError as e:
                fail(e)
        table = MacroTable(macro_ast, lists)
        comp = Compiler(table)
        for name in macro_ast:
            m = self.macros[name]
            try:
                comp.macro(_macro_ref(name, macro_ast[name]))
            except RuleError as e:
                fail(e)
            except _UNFORESEEN as e:
                fail(m.file.error_at(m.node, f"macro {name!r}: cannot compile: {type(e).__name__}: {e}"))
        compiled: list[CompiledRule] = []
        for r in self.rules.values():
            try:
                compiled.append(self._compile_rule(comp, r))
            except RuleError as e:
                if r.skip_unknown and "unknown" in e.reason:
                    self.warnings.append(f"rule {r.name!r} skipped: {e}")
                else:
                    fail(e)
            except _UNFORESEEN as e:  # e.g. Python refusing generated code: the rule's error, not a crash
                fail(r.file.error_at(r.node, f"rule {r.name!r}: cannot compile: {type(e).__name__}: {e}"))
        if errors:
            order = {f: i for i, f in enumerate(self.files)}
            errors.sort(key=lambda e: (order.get(e.file, len(order)), e.line, e.column))
            first = errors[0]
            first.errors = list(errors)
            raise first
        self.warnings.extend(comp.warnings)
        return Ruleset(compiled, ns=comp.ns, macros={n: Source(m.cond).text for n, m in self.macros.items()},
                       lists=lists, files=list(self.files), warnings=list(dict.fromkeys(self.warnings)),
                       table=table)

    def _expand(self, name: str, stack: list[str]) -> list[str]:
        lst = self.lists[name]
        where = lst.file.error_at if lst.file else (lambda _n, reason: RuleError("<lists>", 1, 1, reason))
        if name in stack:
            raise where(lst.node, f"list {name!r} refers to itself ({' -> '.join(stack + [name])})")
        if len(stack) >= MAX_YAML_DEPTH:
            top = self.lists[stack[0]]
            raise where(top.node, f"list {name!r}: lists nested more than {MAX_YAML_DEPTH} deep "
                                  f"({' -> '.join(stack[:3])} ... {name})")
        out: list[str] = []
        for text, quoted in self.lists[name].items:
            if not quoted and text in self.lists:
                out.extend(self._expand(text, stack + [name]))
            else:
                out.append(text)
        return out

    def _compile_rule(self, comp: Compiler, r: _Rule) -> CompiledRule:
        what = f"rule {r.name!r}"
        src = Source(r.cond)
        ast = parse(src)
        tuples: list[Node] = []
        for exc in r.exceptions.values():
            for tnode, vals in exc.values:
                tsrc = Source([Segment("", exc.file, tnode)])
                cmps: list[Node] = []
                for fname, op, v in zip(exc.fields, exc.comps, vals):
                    fname_, arg = _split_field(fname)
                    cmps.append(Compare(tsrc, 0, fname_, arg, op, 0, v))
                tuples.append(cmps[0] if len(cmps) == 1 else BoolOp(tsrc, 0, "and", cmps))
        if tuples:
            exc_node = tuples[0] if len(tuples) == 1 else BoolOp(src, 0, "or", tuples)
            ast = BoolOp(src, 0, "and", [ast, Not(src, 0, exc_node)])
        cond, kinds, code = comp.compile(ast, r.name)
        by_kind = {k: comp.compile_for(ast, r.name, k) for k in sorted(kinds)} if kinds else {}
        if r.output is None:
            raise r.file.error_at(r.node, f"{what}: missing 'output'")
        template = compile_output(Source([r.output]))
        line = r.node.start_mark.line + 1
        return CompiledRule(r.name, r.desc, r.priority, list(r.tags), r.enabled, kinds, cond, template,
                            src.text, code, r.file.name, line, by_kind, ast)


_UNFORESEEN = (RecursionError, MemoryError, SyntaxError, ValueError, TypeError, OverflowError, IndexError,
               KeyError, AttributeError)


def _split_field(spec: str) -> tuple[str, str | None]:
    spec = spec.strip()
    if spec.endswith("]") and "[" in spec:
        name, arg = spec[:-1].split("[", 1)
        return name, arg.strip().strip("'\"")
    return spec, None


def _macro_ref(name: str, ast: Node) -> MacroRef:
    return MacroRef(ast.src, 0, name)


def load_rules(paths: Iterable[Path | str]) -> Ruleset:
    """Load rule files (or directories of *.yaml) in order; raises RuleError."""
    ld = Loader()
    for p in paths:
        ld.add_path(Path(p))
    return ld.finish()


def load_rules_text(text: str, filename: str = "<inline>") -> Ruleset:
    ld = Loader()
    ld.add_text(text, filename)
    return ld.finish()
