"""Building the Ruleset from what the collector holds, once every file is in: lists
expanded, macros and rules parsed and compiled (exceptions folded into each rule's
condition). All problems are gathered; the first is raised with `.errors` holding all.
"""
from __future__ import annotations

from .collector import UNFORESEEN, Collector, ListDef, RuleDef, split_field
from .compiler import Compiler, MacroTable
from .errors import RuleError
from .output import compile_output
from .parser import BoolOp, Compare, MacroRef, Node, Not, parse
from .reader import MAX_YAML_DEPTH
from .ruleset import CompiledRule, Ruleset
from .source import Segment, Source


def build(col: Collector, files: list[str], errors: list[RuleError]) -> Ruleset:
    """The compiled ruleset of `col`; raises the first of `errors` (reading's and these) if any."""
    seen: set[str] = set()
    warnings = list(col.warnings)

    def fail(e: RuleError) -> None:
        if str(e) not in seen:
            seen.add(str(e))
            errors.append(e)

    lists: dict[str, list[str]] = {}
    for name in col.lists:
        try:
            lists[name] = expand_list(col.lists, name, [])
        except RuleError as e:
            fail(e)
            lists[name] = []
    macro_ast: dict[str, Node] = {}
    for name, m in col.macros.items():
        try:
            macro_ast[name] = parse(Source(m.cond))
        except RuleError as e:
            fail(e)
    table = MacroTable(macro_ast, lists)
    comp = Compiler(table)
    for name in macro_ast:
        m = col.macros[name]
        try:
            comp.macro(MacroRef(macro_ast[name].src, 0, name))
        except RuleError as e:
            fail(e)
        except UNFORESEEN as e:
            fail(m.file.error_at(m.node, f"macro {name!r}: cannot compile: {type(e).__name__}: {e}"))
    compiled: list[CompiledRule] = []
    for r in col.rules.values():
        try:
            compiled.append(compile_rule(comp, r))
        except RuleError as e:
            if r.skip_unknown and "unknown" in e.reason:
                warnings.append(f"rule {r.name!r} skipped: {e}")
            else:
                fail(e)
        except UNFORESEEN as e:  # e.g. Python refusing generated code: the rule's error, not a crash
            fail(r.file.error_at(r.node, f"rule {r.name!r}: cannot compile: {type(e).__name__}: {e}"))
    if errors:
        order = {f: i for i, f in enumerate(files)}
        errors.sort(key=lambda e: (order.get(e.file, len(order)), e.line, e.column))
        first = errors[0]
        first.errors = list(errors)
        raise first
    warnings.extend(comp.warnings)
    return Ruleset(compiled, ns=comp.ns, macros={n: Source(m.cond).text for n, m in col.macros.items()},
                   lists=lists, files=list(files), warnings=list(dict.fromkeys(warnings)), table=table)


def expand_list(defs: dict[str, ListDef], name: str, stack: list[str]) -> list[str]:
    """The items of list `name`, with the lists it names (unquoted) expanded in place."""
    lst = defs[name]
    where = lst.file.error_at if lst.file else (lambda _n, reason: RuleError("<lists>", 1, 1, reason))
    if name in stack:
        raise where(lst.node, f"list {name!r} refers to itself ({' -> '.join(stack + [name])})")
    if len(stack) >= MAX_YAML_DEPTH:
        top = defs[stack[0]]
        raise where(top.node, f"list {name!r}: lists nested more than {MAX_YAML_DEPTH} deep "
                              f"({' -> '.join(stack[:3])} ... {name})")
    out: list[str] = []
    for text, quoted in lst.items:
        if not quoted and text in defs:
            out.extend(expand_list(defs, text, stack + [name]))
        else:
            out.append(text)
    return out


def compile_rule(comp: Compiler, r: RuleDef) -> CompiledRule:
    """One rule: its condition, and not any of its exceptions' value tuples."""
    what = f"rule {r.name!r}"
    src = Source(r.cond)
    ast = parse(src)
    tuples: list[Node] = []
    for exc in r.exceptions.values():
        for tnode, vals in exc.values:
            tsrc = Source([Segment("", exc.file, tnode)])
            cmps: list[Node] = []
            for fname, op, v in zip(exc.fields, exc.comps, vals):
                fname_, arg = split_field(fname)
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
