"""Attacker-chosen text (file names, argv, container names) cannot drive the reader's terminal."""
from __future__ import annotations

import orjson

from services.alerter.cli import format_alert
from services.alerter.sinks.stdout import json_lines
from services.enricher.format import line
from shared import terminal

EVIL = "/tmp/\x1b]0;owned\x07x\x1b[2J\r\n\x9b31m\u202egnp.exe\u200b\x7f\\e"


def _clean(s: str) -> bool:
    return not any(terminal.unsafe(c) and c != "\\" for c in s)


def test_escape_keeps_plain_text_and_escapes_everything_else():
    assert terminal.escape("/etc/passwd ok é ü 中") == "/etc/passwd ok é ü 中"
    out = terminal.escape(EVIL)
    assert _clean(out)
    assert "\\e]0;owned\\x07" in out and "\\x9b" in out and "\\u202e" in out and "\\\\e" in out


def test_events_and_alerts_lines_are_escaped():
    ev = {"v": 1, "kind": "open", "ts": 1_700_000_000_000_000_000, "pid": 7, "comm": "\x1b[31mcat",
          "path": EVIL, "flags": 0, "container": {"id": "c" * 64, "name": "n\x1b[8m"}}
    assert _clean(line(ev))
    ex = {"v": 1, "kind": "exec", "ts": 1, "pid": 7, "comm": "sh", "argv": ["sh", "-c", EVIL], "filename": "/bin/sh"}
    assert _clean(line(ex))
    alert = {"ts": 1, "priority": "WARNING", "rule": "r\x1b[1m", "container": {"name": "x\u202e"},
             "output": f"read {EVIL}"}
    assert _clean(format_alert(alert)) and "\n" not in format_alert(alert)


def test_json_output_is_valid_json_without_raw_controls():
    a = {"output": EVIL}
    data = json_lines([a, a])
    text = data.decode()
    assert _clean(text.replace("\n", ""))
    assert [orjson.loads(x) for x in data.splitlines()] == [a, a]  # still the same strings
