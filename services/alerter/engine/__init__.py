"""The rules engine: Falco-style YAML rules compiled to Python callables.

    from services.alerter.engine import load_rules, load_rules_text, RuleError, Ruleset, Match, PRIORITIES
    rs = load_rules([path, ...])          # files or dirs of *.yaml, in order; raises RuleError
    for m in rs.evaluate(event): ...      # m.rule, m.priority, m.tags, m.desc, m.output, m.fields

Files: items `rule` (desc, condition, output, priority, tags, enabled,
exceptions, source), `macro`, `list`; `append: true` and
`override: {key: append|replace}` change earlier items; a later full
definition replaces a rule in place; `- rule: X / enabled: false` disables.
Rules whose `source` is not syscall are skipped with a warning.

Conditions: and/or/not, parentheses; = == != < <= > >= in contains
icontains startswith endswith glob pmatch exists regex (Python re.search)
intersects; lists as `(a, "b", list_name)` or a bare list name; macros by
name. A missing field (None) compares false; `not X` of it is true.
`eunomia rules fields` lists the fields (engine/fields.py).

Errors: RuleError .file/.line/.column/.reason, str() "file:line:col: reason";
a load reports every problem in `.errors` (sorted by file order and line).
Evaluation never raises: a rule failing on a malformed event is counted in
`rs.eval_errors` (last message in `rs.last_eval_error`).
"""
from __future__ import annotations

from shared.priorities import PRIORITIES, normalize_priority, priority_rank

from .errors import RuleError
from .loader import load_rules, load_rules_text
from .ruleset import CompiledRule, Match, Ruleset

__all__ = ["load_rules", "load_rules_text", "RuleError", "Ruleset", "Match", "CompiledRule",
           "PRIORITIES", "priority_rank", "normalize_priority"]
