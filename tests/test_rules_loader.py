"""Rule files: macros, lists, append/override across files, exceptions,
enabled, and errors that name file, line and column."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from services.alerter.engine import PRIORITIES, RuleError, load_rules, load_rules_text
from tests.test_rules_engine import make_event

BASE = """\
- required_engine_version: 0.26.0
- list: shell_binaries
  items: [bash, sh]
- list: all_shells
  items: [shell_binaries, zsh, "fish"]
- macro: spawned_process
  condition: evt.type in (execve, execveat)
- macro: container
  condition: (container.id != host)
- macro: shell_procs
  condition: proc.name in (all_shells)
- rule: Shell in container
  desc: a shell started in a container
  condition: spawned_process and container and shell_procs
  output: "Shell (user=%user.name cmd=%proc.cmdline container=%container.id)"
  priority: Warning
  tags: [container, shell]
- rule: Read shadow
  desc: sensitive file read
  condition: evt.type = open and fd.name = /etc/shadow and evt.is_open_read = true
  output: "%proc.name read %fd.name"
  priority: ERROR
  source: syscall
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def names(rs, ev) -> list[str]:
    return [m.rule for m in rs.evaluate(ev)]


def test_macros_nested_lists_and_summary() -> None:
    rs = load_rules_text(BASE, "base.yaml")
    assert rs.lists["all_shells"] == ["bash", "sh", "zsh", "fish"]
    assert set(rs.macros) == {"spawned_process", "container", "shell_procs"}
    assert rs.summary() == {"rules": 2, "enabled": 2, "macros": 3, "lists": 2, "any_kind": 0,
                            "per_kind": {"exec": 1, "open": 1}}
    assert names(rs, make_event("exec")) == ["Shell in container"]
    assert names(rs, make_event("exec", comm="zsh", proc={"name": "zsh"})) == ["Shell in container"]
    assert names(rs, make_event("exec", container=False)) == []
    assert names(rs, make_event("open")) == ["Read shadow"]
    r = rs.rules[0]
    assert (r.name, r.priority, r.tags, r.enabled, r.file, r.line) == \
        ("Shell in container", "WARNING", ["container", "shell"], True, "base.yaml", 12)
    assert PRIORITIES[0] == "EMERGENCY" and PRIORITIES[-1] == "DEBUG" and len(PRIORITIES) == 8


def test_later_files_append_override_and_disable(tmp_path: Path) -> None:
    base = write(tmp_path, "a.yaml", BASE)
    local = write(tmp_path, "b.yaml", """\
        - list: shell_binaries
          items: [ash]
          append: true
        - macro: container
          condition: and container.name != trusted
          override:
            condition: append
        - rule: Shell in container
          condition: and not proc.pname = sshd
          append: true
        - rule: Shell in container
          priority: critical
          tags: [mitre_execution]
          override:
            priority: replace
            tags: append
        - rule: Read shadow
          enabled: false
        - rule: Module load
          desc: kernel module
          condition: evt.type in (init_module, finit_module)
          output: "module %evt.arg.name loaded by %proc.name"
          priority: CRITICAL
        """)
    rs = load_rules([base, local])
    assert rs.files == [str(base), str(local)]
    assert rs.lists["all_shells"] == ["bash", "sh", "ash", "zsh", "fish"]
    shell = rs.rules[0]
    assert shell.priority == "CRITICAL" and shell.tags == ["container", "shell", "mitre_execution"]
    assert shell.condition.endswith("and not proc.pname = sshd")
    assert names(rs, make_event("exec")) == []                           # parent is sshd
    ev = make_event("exec", comm="ash", proc={"name": "ash", "pname": "runc"})
    assert names(rs, ev) == ["Shell in container"]
    ev["container"] = dict(ev["container"], name="trusted")
    assert names(rs, ev) == []                                           # macro append
    assert not rs.rules[1].enabled and names(rs, make_event("open")) == []
    assert "Read shadow" not in [r.name for r in rs.kinds_index["open"]]
    (m,) = rs.evaluate(make_event("module"))
    assert m.output == "module rootkit loaded by bash" and m.priority == "CRITICAL"
    # A directory loads its *.yaml files in name order: same result.
    rs2 = load_rules([tmp_path])
    assert [r.name for r in rs2.rules] == [r.name for r in rs.rules]


def test_override_replace_and_redefinition() -> None:
    rs = load_rules_text(BASE + """\
- macro: container
  condition: container.id = host
  override:
    condition: replace
- rule: Read shadow
  desc: replaced
  condition: evt.type = open and fd.name startswith /etc/
  output: "replaced %fd.name"
  priority: NOTICE
- rule: Shell in container
  enabled: false
  override:
    enabled: replace
""")
    assert [r.name for r in rs.rules] == ["Shell in container", "Read shadow"]  # in place
    assert not rs.rules[0].enabled
    (m,) = rs.evaluate(make_event("open", path="/etc/hosts"))
    assert (m.rule, m.desc, m.output, m.priority) == ("Read shadow", "replaced", "replaced /etc/hosts", "NOTICE")


def test_exceptions_falco_style() -> None:
    rs = load_rules_text("""\
- list: trusted_images
  items: [docker.io/library/debian, registry.local:5000/team/nginx]
- rule: Write below etc
  desc: write to /etc
  condition: evt.type = open and evt.is_open_write = true and fd.name startswith /etc
  output: "%proc.name wrote %fd.name"
  priority: ERROR
  exceptions:
    - name: proc_writer
      fields: [proc.name, fd.directory]
      comps: [=, startswith]
      values:
        - [apk, /etc/apk]
        - [passwd, /etc]
    - name: images
      fields: container.image.repository
      comps: in
      values: [trusted_images]
    - name: pkg_parents
      fields: [proc.pname, proc.name]
      comps: [in, =]
      values:
        - [[dpkg, rpm], sed]
    - name: later
      fields: [proc.name]
""")
    w = dict(flags=1)
    base = make_event("open", path="/etc/motd", **w)
    base["container"] = dict(base["container"], image="quay.io/evil/img:1")
    assert names(rs, base) == ["Write below etc"]
    apk = make_event("open", path="/etc/apk/world", **w, proc={"name": "apk"})
    apk["container"] = base["container"]
    assert names(rs, apk) == []
    apk_other = make_event("open", path="/etc/motd", **w, proc={"name": "apk"})
    apk_other["container"] = base["container"]
    assert names(rs, apk_other) == ["Write below etc"]            # both fields must match
    trusted = make_event("open", path="/etc/motd", **w)            # default image is in trusted_images
    assert names(rs, trusted) == []
    sed = make_event("open", path="/etc/motd", **w, proc={"name": "sed", "pname": "rpm"})
    sed["container"] = base["container"]
    assert names(rs, sed) == []
    # Appending values to an existing exception by name.
    rs2 = load_rules_text("""\
- rule: R
  desc: d
  condition: evt.type = open
  output: o
  priority: INFO
  exceptions:
    - name: by_name
      fields: [proc.name]
- rule: R
  exceptions:
    - name: by_name
      values: [[bash]]
  override:
    exceptions: append
""")
    assert names(rs2, make_event("open")) == []
    assert names(rs2, make_event("open", proc={"name": "cat"})) == ["R"]


def test_unsupported_source_is_skipped_with_warning() -> None:
    rs = load_rules_text(BASE + """\
- rule: K8s audit
  desc: d
  condition: ka.verb = create
  output: o
  priority: INFO
  source: k8s_audit
- rule: Plugin field
  desc: d
  condition: foo.bar = 1
  output: o
  priority: INFO
  skip-if-unknown-filter: true
""")
    assert [r.name for r in rs.rules] == ["Shell in container", "Read shadow"]
    assert any("k8s_audit" in w for w in rs.warnings) and any("Plugin field" in w for w in rs.warnings)


BROKEN = [
    ("bad YAML", "- rule: x\n  condition: [unclosed\n  output: o\n", 3, 9, "bad YAML"),
    ("bad YAML tab", "- rule: x\n\tcondition: a\n", 2, 1, "bad YAML"),
    ("not a list", "rule: x\n", 1, 1, "a rules file is a list of items"),
    ("unknown field", "- rule: x\n  desc: d\n  condition: evt.type = open and fd.nam = /etc\n"
                      "  output: o\n  priority: INFO\n", 3, 34, "unknown field 'fd.nam'"),
    ("unknown field in folded condition", "- rule: x\n  desc: d\n  condition: >\n    evt.type = open\n"
                                          "    and proc.nme = sh\n  output: o\n  priority: INFO\n",
     5, 9, "unknown field 'proc.nme'"),
    ("unknown field in literal block", "- rule: x\n  desc: d\n  condition: |\n    evt.type = open and\n"
                                       "      (proc.name = a or\n       fd.nme = b)\n  output: o\n  priority: INFO\n",
     6, 8, "unknown field 'fd.nme'"),
    ("unknown field after escapes", '- rule: x\n  desc: d\n  condition: "proc.name = \\"a\\" and fd.nme = b"\n'
                                    "  output: o\n  priority: INFO\n", 3, 37, "unknown field 'fd.nme'"),
    ("unknown macro", "- rule: x\n  desc: d\n  condition: evt.type = open and not trusted_thing\n"
                      "  output: o\n  priority: INFO\n", 3, 38, "unknown macro 'trusted_thing'"),
    ("bad operator", "- rule: x\n  desc: d\n  condition: 'proc.name like bash'\n  output: o\n  priority: INFO\n",
     3, 25, "bad operator 'like'"),
    ("unterminated string", "- rule: x\n  desc: d\n  condition: \"proc.name = 'bash\"\n  output: o\n"
                            "  priority: INFO\n", 3, 27, "unterminated string"),
    ("missing condition", "- rule: x\n  desc: d\n  output: o\n  priority: INFO\n", 1, 3,
     "rule 'x': missing 'condition'"),
    ("missing output", "- rule: x\n  condition: proc.name = a\n  priority: INFO\n", 1, 3,
     "rule 'x': missing 'output'"),
    ("bad priority", "- rule: x\n  condition: proc.name = a\n  output: o\n  priority: URGENT\n", 4, 13,
     "unknown priority 'URGENT'"),
    ("unknown key", "- rule: x\n  condtion: proc.name = a\n", 2, 3, "unknown key 'condtion'"),
    ("unknown item", "- rulez: x\n", 1, 3, "unknown item"),
    ("bad output field", "- rule: x\n  condition: proc.name = a\n  output: 'got %proc.nmae here'\n"
                         "  priority: INFO\n", 3, 17, "output: unknown field 'proc.nmae'"),
    ("append to nothing", "- rule: x\n  condition: and a = b\n  append: true\n", 1, 3, "not defined before"),
    ("macro cycle", "- macro: a\n  condition: b\n- macro: b\n  condition: a\n", 2, 14, "refers to itself"),
    ("bad exception field", "- rule: x\n  condition: proc.name = a\n  output: o\n  priority: INFO\n"
                            "  exceptions:\n    - name: e\n      fields: [proc.nam]\n", 7, 16, "unknown field"),
    ("exception arity", "- rule: x\n  condition: proc.name = a\n  output: o\n  priority: INFO\n"
                        "  exceptions:\n    - name: e\n      fields: [proc.name, fd.name]\n"
                        "      values:\n        - [a]\n", 9, 11, "list of 2 items"),
    ("bad override", "- rule: x\n  condition: proc.name = a\n  output: o\n  priority: INFO\n"
                     "- rule: x\n  priority: INFO\n  override:\n    priority: append\n", 8, 5, "cannot append"),
]


@pytest.mark.parametrize("label,text,line,col,reason", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_files_name_the_place(label: str, text: str, line: int, col: int, reason: str) -> None:
    with pytest.raises(RuleError) as ei:
        load_rules_text(text, "broken.yaml")
    e = ei.value
    assert reason in e.reason, str(e)
    assert (e.file, e.line, e.column) == ("broken.yaml", line, col), str(e)
    assert str(e) == f"broken.yaml:{line}:{col}: {e.reason}"


def test_errors_point_into_macros_and_appending_files(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", """\
        - macro: m
          condition: proc.name = bash and fd.nope exists
        - rule: r
          desc: d
          condition: evt.type = open
          output: o
          priority: INFO
        """)
    b = write(tmp_path, "b.yaml", """\
        - rule: r
          condition: and proc.pid >= x
          append: true
        """)
    with pytest.raises(RuleError) as ei:
        load_rules([a, b])
    errs = [str(e) for e in ei.value.errors]
    assert errs == [f"{a}:2:35: unknown field 'fd.nope'", f"{b}:2:30: proc.pid is a number, 'x' is not"]


def test_all_errors_are_collected() -> None:
    text = "\n".join(f"- rule: r{i}\n  desc: d\n  condition: proc.nam{i} = x\n  output: o\n  priority: INFO"
                     for i in range(3))
    with pytest.raises(RuleError) as ei:
        load_rules_text(text, "many.yaml")
    assert [(e.line, e.column) for e in ei.value.errors] == [(3, 14), (8, 14), (13, 14)]


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(RuleError) as ei:
        load_rules([tmp_path / "missing.yaml"])
    assert ei.value.file.endswith("missing.yaml") and "cannot read" in ei.value.reason


def test_mutated_files_only_ever_raise_rule_error() -> None:
    """Random edits of a valid file: it loads or fails with a RuleError
    that has a position; nothing else escapes the loader."""
    import random

    rnd = random.Random(1)
    chars = list("()[]{}:,'\"-=<>! \n\tabcxyz.%&*|#")
    failed = 0
    for _ in range(400):
        s = list(BASE)
        for _ in range(rnd.randint(1, 4)):
            pos = rnd.randrange(len(s))
            op = rnd.random()
            if op < 0.4:
                del s[pos]
            elif op < 0.8:
                s[pos] = rnd.choice(chars)
            else:
                s.insert(pos, rnd.choice(chars))
        try:
            load_rules_text("".join(s), "m.yaml")
        except RuleError as e:
            failed += 1
            assert e.file == "m.yaml" and e.line >= 1 and e.column >= 1 and e.reason
    assert failed > 100
