"""Malformed rule files, however deep or large, give file:line:col errors
(RuleError), never another exception: conditions nested thousands deep,
macro chains, deep YAML, huge files, bad YAML and every wrong type in every
place (a seeded fuzzer over the shapes of real items)."""
import random
import re

import pytest
import yaml

from services.alerter.engine import RuleError, load_rules, load_rules_text
from services.alerter.engine.loader import MAX_FILE_BYTES

POS = re.compile(r"^[^:]+:\d+:\d+: .+")

BASE = """\
- list: shells
  items: [sh, bash]
- macro: spawned
  condition: evt.type = execve
- rule: Shell
  desc: a shell
  condition: spawned and proc.name in (shells) and not proc.pname = init
  output: shell %proc.name
  priority: NOTICE
  tags: [a, b]
  exceptions:
    - name: known
      fields: [proc.name, proc.pname]
      values: [[sh, cron]]
- rule: Shell
  append: true
  condition: and proc.args contains x
- rule: Other
  desc: other
  condition: evt.type = open and fd.name startswith /etc
  output: "%fd.name"
  priority: WARNING
- rule: Other
  override: {condition: append}
  condition: and proc.name = x
"""


def load_err(text: str, name: str = "bad.yaml") -> RuleError:
    with pytest.raises(RuleError) as ei:
        load_rules_text(text, name)
    e = ei.value
    for x in e.errors:
        assert POS.match(str(x)), str(x)
    return e


def rule(cond: str) -> str:
    return f"- rule: R\n  desc: d\n  condition: {cond}\n  output: o\n  priority: NOTICE\n"


@pytest.mark.parametrize("depth", [60, 5000, 100_000])
def test_deep_parentheses(depth):
    e = load_err(rule("(" * depth + "proc.name = a" + ")" * depth))
    assert "nested too deeply" in e.reason and e.file == "bad.yaml" and e.line == 3
    assert e.column > 14   # at the first parenthesis past the limit, not at the start


def test_deep_not_chain():
    e = load_err(rule("not " * 20_000 + "proc.name = a"))
    assert "nested too deeply" in e.reason and e.line == 3


def test_deep_macro_chain():
    # each macro wraps the next one in parentheses: shallow in the text, deep once expanded
    items = ["- macro: m0\n  condition: proc.name = a\n"]
    items += [f"- macro: m{i}\n  condition: (m{i - 1} or proc.name = b)\n" for i in range(1, 3000)]
    e = load_err("".join(items) + rule("m2999"))
    assert "nested too deeply" in e.reason and "through macros" in e.reason


def test_macro_used_deep_after_compiling_shallow():
    macro = "- macro: m\n  condition: " + "not " * 40 + "proc.name = a\n"
    e = load_err(macro + rule("not " * 40 + "m"))
    assert "nested too deeply" in e.reason


def test_many_terms_flat_is_fine():
    rs = load_rules_text(rule(" or ".join(f"proc.name = n{i}" for i in range(2000))))
    assert rs.evaluate({"kind": "exec", "proc": {"name": "n1999"}})


@pytest.mark.parametrize("doc", ["[" * 50_000, "- " * 20_000 + "x", "{a: " * 50_000])
def test_deep_yaml(doc):
    e = load_err(doc)
    assert "YAML" in e.reason


def test_deep_list_chain():
    items = ["- list: l0\n  items: [a]\n"] + [f"- list: l{i}\n  items: [l{i - 1}]\n" for i in range(1, 500)]
    e = load_err("".join(items) + rule("proc.name in (l499)"))
    assert "nested more than" in e.reason and e.line > 1


def test_huge_file(tmp_path):
    f = tmp_path / "huge.yaml"
    f.write_text("# " + "x" * MAX_FILE_BYTES + "\n")
    with pytest.raises(RuleError) as ei:
        load_rules([f])
    assert "too large" in ei.value.reason and ei.value.file == str(f)


@pytest.mark.parametrize("text,where", [
    ("- rule: [a]\n", (1, 9)),
    ("- rule: R\n  condition: {a: b}\n  output: o\n  priority: NOTICE\n", (2, 14)),
    ("- rule: R\n  condition: a = b\n  output: o\n  priority: [x]\n", (4, 13)),
    ("- rule: R\n  condition: proc.name = a\n  output: o\n  priority: NOTICE\n  tags: {a: 1}\n", (5, 9)),
    ("- rule: R\n  condition: proc.name = a\n  output: o\n  priority: NOTICE\n  enabled: maybe\n", (5, 12)),
    ("- list: l\n  items: {a: 1}\n", (2, 10)),
    ("- list: l\n  items: [[a]]\n", (2, 11)),
    ("- macro: m\n  condition: [a]\n", (2, 14)),
    ("- rule: R\n  condition: proc.name = a\n  output: o\n  priority: NOTICE\n  override: {[a]: append}\n",
     (5, 14)),
    ("- rule: R\n  condition: proc.name = a\n  output: o\n  priority: NOTICE\n"
     "  exceptions: [{name: e, fields: [proc.name], values: [[{x: 1}]]}]\n", (5, 57)),
    ("- rule: R\n  condition: proc.name = a\n  output: o\n  priority: NOTICE\n  exceptions: 5\n", (5, 15)),
    ("rule: R\n", (1, 1)),
    ("- 5\n", (1, 3)),
    ("- rule: R\n  condition: 'unterminated\n", (3, 1)),
    ("- rule: R\n\tcondition: x\n", (2, 1)),
    ("- rule: R\n  condition: a\n  condition: b\n", (3, 3)),
])
def test_bad_types_and_yaml_point_at_the_place(text, where):
    e = load_err(text)
    assert (e.line, e.column) == where, str(e)


def _mutate(obj, rnd: random.Random, depth: int = 0):
    """A copy of `obj` with some subtree replaced by a value of a wrong shape."""
    junk = [None, 5, -1, 3.5, True, "", "((", "a = ", [], {}, [[["x"]]], {"k": {"k": ["v"]}}, ["a", {"b": 1}],
            "x" * 5000, "proc.name in (", "%", "not", ")", "evt.type = nosuch", [1, 2], {"rule": "x"}]
    if depth > 3 or not isinstance(obj, (list, dict)) or rnd.random() < 0.15:
        return rnd.choice(junk)
    if isinstance(obj, list):
        out = list(obj)
        if out:
            i = rnd.randrange(len(out))
            out[i] = _mutate(out[i], rnd, depth + 1)
        return out
    out = dict(obj)
    if rnd.random() < 0.1:
        out[rnd.choice(["override", "append", "enabled", "values", "fields", "comps", "items", "junk"])] = \
            rnd.choice(junk)
    else:
        k = rnd.choice(list(out))
        out[k] = _mutate(out[k], rnd, depth + 1)
    return out


def test_fuzzed_items_only_ever_raise_rule_errors():
    base = yaml.safe_load(BASE)
    load_rules_text(BASE)  # the unmutated set is valid
    rnd = random.Random(1234)
    errors = 0
    for _ in range(1000):
        doc = _mutate(base, rnd)
        text = yaml.safe_dump(doc, width=10_000)
        try:
            load_rules_text(text, "fuzz.yaml")
        except RuleError as e:
            errors += 1
            for x in e.errors:
                assert POS.match(str(x)), (str(x), text)
                # the loader's checks, not its safety net, found it
                assert "malformed item:" not in x.reason and "cannot compile:" not in x.reason, (str(x), text)
    assert errors > 300   # the mutations do break things


def test_fuzzed_bytes_only_ever_raise_rule_errors():
    rnd = random.Random(99)
    raw = BASE
    for _ in range(600):
        b = list(raw)
        for _ in range(rnd.randint(1, 6)):
            i = rnd.randrange(len(b))
            b[i] = rnd.choice(["(", ")", "[", "]", "{", "}", ":", "-", "'", '"', "\t", "\n", " ", "&", "*", "!",
                               "%", "|", ">", "#", "\x00", "\x1b", "é"])
        try:
            load_rules_text("".join(b), "bytes.yaml")
        except RuleError as e:
            for x in e.errors:
                assert POS.match(str(x)), str(x)
