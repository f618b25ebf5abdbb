"""RuleError: a rule file problem with the place it happened."""
from __future__ import annotations


class RuleError(ValueError):
    """A broken rule file. str() is "file:line:col: reason" (1-based).

    When a load finds several problems, the first is raised and all of them
    are in `.errors` (each a RuleError)."""

    def __init__(self, file: str, line: int, column: int, reason: str) -> None:
        self.file, self.line, self.column, self.reason = file, line, column, reason
        self.errors: list[RuleError] = [self]
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.reason}"

