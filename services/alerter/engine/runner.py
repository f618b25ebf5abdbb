"""One generated function per event kind that runs all of that kind's rules.

    def run(ev, out, err):
        try:
            if <rule 0 condition specialised to the kind>: out.append(r0.match(ev))
        except Exception as e: err(r0, e)
        ...

Saves a Python call and a tuple unpack per rule against looping over
(cond, rule) pairs; try blocks cost nothing until something raises.

A field that several rules read (fd.name, the open flags of every file rule)
is read once per event: its reads become `(vN if vN is not U else (vN :=
fN(ev)))`, still lazy (a rule whose earlier test fails does not read it). A
condition where that cannot be written (a read in a comprehension's iterable)
keeps its plain reads.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .fields import Event

if TYPE_CHECKING:
    from .ruleset import CompiledRule, Match

# run(ev, out, err): appends each match to `out`, calls err(rule, exception) for a rule that raised
Runner = Callable[[Event, "list[Match]", Callable[["CompiledRule", Exception], None]], None]


def build_runner(label: str, items: Sequence[tuple[str, CompiledRule]], ns: dict[str, Any]) -> Runner:
    """`items` are (condition code over `ev`, CompiledRule) in rule order;
    `ns` is the compiler namespace the codes refer to."""
    glb = dict(ns)
    glb["__builtins__"] = {**ns.get("__builtins__", {}), "Exception": Exception}
    glb["U"] = _UNREAD
    codes, shared = _memoized([code for code, _ in items])
    lines = ["def run(ev, out, err):"]
    if shared:
        lines.append("    " + " = ".join(f"v{n}" for n in shared) + " = U")
    for i, (code, rule) in enumerate(zip(codes, (r for _, r in items))):
        glb[f"r{i}"] = rule
        lines += ["    try:",
                  f"        if {code}: out.append(r{i}.match(ev))",
                  "    except Exception as e:",
                  f"        err(r{i}, e)"]
    if not items:
        lines.append("    return")
    fname = "<rules for " + re.sub(r"[^\w.-]", "_", label) + ">"
    exec(compile("\n".join(lines) + "\n", fname, "exec"), glb)  # noqa: S102 - our own generated code
    run: Runner = glb["run"]
    return run


_UNREAD = object()
_READ = re.compile(r"(?<![\w.])f(\d+)\(ev\)")


def _memoized(codes: list[str]) -> tuple[list[str], list[str]]:
    """The codes with reads of fields that two or more of them make memoized, and those fields."""
    uses = Counter(n for code in codes for n in set(_READ.findall(code)))
    shared = {n for n, c in uses.items() if c > 1}
    out = []
    for code in codes:
        memo = _READ.sub(lambda m: f"(v{m[1]} if v{m[1]} is not U else (v{m[1]} := f{m[1]}(ev)))"
                         if m[1] in shared else m[0], code)
        try:
            compile(f"def _(ev):\n    return {memo}\n", "<check>", "exec")
        except SyntaxError:     # e.g. a read in a comprehension's iterable
            memo = code
        out.append(memo)
    return out, sorted(shared, key=int)
