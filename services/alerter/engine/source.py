"""Where text came from: maps an offset in a (possibly concatenated)
condition or output string back to file, line and column of the YAML file."""
from __future__ import annotations

from dataclasses import dataclass

import yaml

from .errors import RuleError


@dataclass(frozen=True)
class FileText:
    name: str
    text: str

    def line_col(self, index: int) -> tuple[int, int]:
        index = max(0, min(index, len(self.text)))
        line = self.text.count("\n", 0, index) + 1
        return line, index - (self.text.rfind("\n", 0, index) + 1) + 1

    def error_at(self, node: yaml.Node | None, reason: str) -> RuleError:
        if node is None:
            return RuleError(self.name, 1, 1, reason)
        m = node.start_mark
        return RuleError(self.name, m.line + 1, m.column + 1, reason)


@dataclass(frozen=True)
class Segment:
    """One YAML scalar's value and where it sits in its file."""
    text: str
    file: FileText
    node: yaml.Node | None

    def locate(self, offset: int) -> tuple[int, int]:
        node = self.node
        if node is None:
            return 1, 1
        start, end = node.start_mark.index, node.end_mark.index
        raw = self.file.text
        if not isinstance(node, yaml.ScalarNode):
            return self.file.line_col(start)
        # Walk the value and the raw scalar together: folding, quotes,
        # indentation and escapes only add raw characters, so each value
        # character is found at or after the previous one's raw position.
        j, value = start, self.text
        offset = max(0, min(offset, len(value)))
        for i in range(offset + 1):
            if i == len(value):
                break
            c = value[i]
            if c.isspace():
                if i == offset:
                    break
                if j < end and raw[j].isspace():
                    j += 1
                continue
            k = raw.find(c, j, end)
            if k < 0:
                break
            j = k if i == offset else k + 1
        return self.file.line_col(j)


class Source:
    """Text made of one or more segments joined by single spaces (Falco's
    `append` concatenates conditions that way)."""

    def __init__(self, segments: list[Segment]) -> None:
        self.segments = segments
        self.text = " ".join(s.text for s in segments)

    def error(self, offset: int, reason: str) -> RuleError:
        base = 0
        for s in self.segments:
            if offset <= base + len(s.text) or s is self.segments[-1]:
                line, col = s.locate(offset - base)
                return RuleError(s.file.name, line, col, reason)
            base += len(s.text) + 1
        return RuleError("<unknown>", 1, 1, reason)
