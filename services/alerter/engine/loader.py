"""YAML rule files -> Ruleset, in three steps as in Falco's engine: engine/reader.py
reads each file's items (errors with file, line and column), engine/collector.py
collects them in load order (later items replace, append to or override earlier
ones), engine/builder.py compiles the result once all files are in. All problems
are collected; the first is raised with `.errors` holding all.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from .builder import build
from .collector import UNFORESEEN, Collector
from .errors import RuleError
from .reader import MAX_FILE_BYTES, Item, file_paths, read_items, read_path
from .ruleset import Ruleset

__all__ = ["MAX_FILE_BYTES", "Loader", "load_rules", "load_rules_text"]


class Loader:
    """Files added in order; `finish()` builds the ruleset."""

    def __init__(self) -> None:
        self.collector = Collector()
        self.errors: list[RuleError] = []
        self.files: list[str] = []

    def add_text(self, text: str, filename: str) -> None:
        self.files.append(filename)
        ft, nodes = read_items(text, filename, self.errors)
        for node in nodes:
            try:
                self.collector.item(Item(ft, node))
            except RuleError as e:
                self.errors.append(e)
            except UNFORESEEN as e:
                self.errors.append(ft.error_at(node, f"malformed item: {type(e).__name__}: {e}"))

    def add_path(self, path: Path) -> None:
        for p in file_paths(Path(path)):
            text = read_path(p, self.errors)
            if text is not None:
                self.add_text(text, str(p))

    def finish(self) -> Ruleset:
        return build(self.collector, self.files, self.errors)


def load_rules(paths: Iterable[Path | str]) -> Ruleset:
    """Load rule files (or directories of *.yaml) in order; raises RuleError."""
    ld = Loader()
    for p in paths:
        ld.add_path(Path(p))
    return ld.finish()


def load_rules_text(text: str, filename: str = "<inline>") -> Ruleset:
    ld = Loader()
    ld.add_text(text, filename)
    return ld.finish()
