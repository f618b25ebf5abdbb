"""`eunomia rules check`: errors as file:line:col and exit 1, or a summary."""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from services.alerter.rules_cli import register_rules

GOOD = """\
- list: shells
  items: [bash, sh]
- macro: spawned
  condition: evt.type = execve
- rule: Shell
  desc: d
  condition: spawned and proc.name in (shells)
  output: "%proc.name"
  priority: WARNING
- rule: Any
  desc: d
  condition: proc.name = nc
  output: "%proc.name"
  priority: NOTICE
"""
BAD = """\
- rule: A
  desc: d
  condition: evt.type = open and fd.nme = /etc
  output: o
  priority: INFO
- rule: B
  desc: d
  output: o
  priority: INFO
"""


def run(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="eunomia")
    register_rules(p.add_subparsers())
    args = p.parse_args(argv)
    return args.func(args)


def test_check_good_file_prints_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "good.yaml"
    f.write_text(GOOD)
    assert run(["rules", "check", str(f)]) == 0
    out = capsys.readouterr().out
    assert "2 rules (2 enabled), 1 macros, 1 lists from 1 file(s)" in out
    assert "exec=2" in out and "open=1" in out and "(any kind: 1)" in out


def test_check_bad_file_prints_every_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD)
    bad.write_text(BAD)
    assert run(["rules", "check", str(good), str(bad)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{bad}:3:34: unknown field 'fd.nme'", f"{bad}:6:3: rule 'B': missing 'condition'"]


def test_fields_lists_the_field_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["rules", "fields"]) == 0
    out = capsys.readouterr().out
    for name in ("proc.cmdline", "fd.sip", "container.image.repository", "k8s.ns.name", "evt.arg.NAME"):
        assert name in out


@pytest.mark.skipif(importlib.util.find_spec("services.alerter.cli") is None,
                    reason="services/alerter/cli.py (alerter engineer) not present yet")
def test_through_the_eunomia_command(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "services.cli.main", "rules", "check", str(bad)],
                       cwd=root, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert f"{bad}:3:34: unknown field 'fd.nme'" in r.stdout


def test_check_names_rules_that_force_full_capture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from services.alerter.rules_cli import check

    f = tmp_path / "r.yaml"
    f.write_text("- rule: wide\n  desc: d\n  condition: evt.type = open and fd.name contains x\n"
                 "  output: o\n  priority: WARNING\n"
                 "- rule: narrow\n  desc: d\n  condition: evt.type = unlink and fd.name startswith /etc/\n"
                 "  output: o\n  priority: WARNING\n")
    assert check(argparse.Namespace(files=[f])) == 0
    out = capsys.readouterr().out
    assert "open (read|write|create): every path sent, because of: 'wide'" in out
    assert "unlink: 1 path pattern(s)" in out


@pytest.mark.parametrize("body", [
    "- rule: R\n  desc: d\n  condition: " + "(" * 20000 + "proc.name = a" + ")" * 20000 + "\n  output: o\n"
    "  priority: NOTICE\n",
    "[" * 100000,
    "- rule: R\n  condition: {a: [b]}\n",
])
def test_check_malformed_prints_errors_not_tracebacks(tmp_path: Path, body: str) -> None:
    bad = tmp_path / "deep.yaml"
    bad.write_text(body)
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "services.cli.main", "rules", "check", str(bad)],
                       cwd=root, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    first = r.stdout.splitlines()[0]
    assert first.startswith(f"{bad}:") and first.split(":")[1].isdigit() and first.split(":")[2].isdigit(), first
