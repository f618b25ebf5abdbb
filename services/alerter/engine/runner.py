"""One generated function per event kind that runs all of that kind's rules.

    def run(ev, out, err):
        try:
            if <rule 0 condition specialised to the kind>: out.append(r0.match(ev))
        except Exception as e: err(r0, e)
        ...

Saves a Python call and a tuple unpack per rule against looping over
(cond, rule) pairs; try blocks cost nothing until something raises.
"""
from __future__ import annotations

import re
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
    lines = ["def run(ev, out, err):"]
    for i, (code, rule) in enumerate(items):
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
