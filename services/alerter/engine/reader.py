"""Reading rule files: text -> the YAML mapping nodes of its items, with positions.

Items are read from the YAML node tree (yaml.compose) so that every error names
file, line and column. A file too large, unreadable or not YAML is one error
(collected, never raised): the other files still load.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from .errors import RuleError
from .source import FileText, Segment

MAX_FILE_BYTES = 8 << 20        # a rules file larger than this is refused (the default set is ~100 KiB)
MAX_YAML_DEPTH = 32             # nested YAML collections (rules need 4)


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader whose (recursive) composer refuses deep nesting with a
    position instead of running out of stack."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                self.check_event()    # parses the next event into current_event, as peek_event (untyped) does
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_YAML_DEPTH} levels deep",
                                                  self.current_event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


class Item:
    """One YAML mapping item with typed accessors that fail with positions."""

    def __init__(self, ft: FileText, node: yaml.Node) -> None:
        if not isinstance(node, yaml.MappingNode):
            raise ft.error_at(node, "each item must be a mapping (rule, macro or list)")
        self.ft, self.node = ft, node
        self.keys: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode):
                raise ft.error_at(k, "keys must be plain names")
            if k.value in self.keys:
                raise ft.error_at(k, f"duplicate key {k.value!r}")
            self.keys[k.value] = (k, v)

    def has(self, key: str) -> bool:
        return key in self.keys

    def val(self, key: str) -> yaml.Node | None:
        kv = self.keys.get(key)
        return kv[1] if kv else None

    def check_keys(self, allowed: frozenset[str], what: str) -> None:
        for k, (knode, _) in self.keys.items():
            if k not in allowed:
                raise self.ft.error_at(knode, f"{what}: unknown key {k!r} (allowed: {', '.join(sorted(allowed))})")

    def text(self, key: str, what: str) -> str:
        node = self.val(key)
        if node is None or is_null(node):
            raise self.ft.error_at(node or self.node, f"{what}: missing {key!r}")
        if not isinstance(node, yaml.ScalarNode):
            raise self.ft.error_at(node, f"{what}: {key!r} must be text")
        value: str = node.value
        return value

    def segment(self, key: str, what: str) -> Segment:
        text = self.text(key, what)
        return Segment(text, self.ft, self.val(key))

    def flag(self, key: str, what: str, default: bool = False) -> bool:
        node = self.val(key)
        if node is None:
            return default
        if not isinstance(node, yaml.ScalarNode) or node.value.lower() not in ("true", "false", "yes", "no"):
            raise self.ft.error_at(node, f"{what}: {key!r} must be true or false")
        return node.value.lower() in ("true", "yes")

    def str_list(self, key: str, what: str) -> list[tuple[str, bool]]:
        node = self.val(key)
        if node is None or is_null(node):
            return []
        if not isinstance(node, yaml.SequenceNode):
            raise self.ft.error_at(node, f"{what}: {key!r} must be a list")
        out = []
        for it in node.value:
            if not isinstance(it, yaml.ScalarNode):
                raise self.ft.error_at(it, f"{what}: {key!r} items must be text")
            out.append((it.value, it.style in ("'", '"')))
        return out


def file_paths(path: Path) -> list[Path]:
    """The rule files of `path`: itself, or a directory's *.yaml then *.yml, each sorted."""
    if not path.is_dir():
        return [path]
    return [f for p in sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml")) for f in file_paths(p)]


def read_path(path: Path, errors: list[RuleError]) -> str | None:
    """The text of one rule file, or None with the reason in `errors`."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            errors.append(RuleError(str(path), 1, 1, f"file too large: {path.stat().st_size} bytes "
                                                     f"(at most {MAX_FILE_BYTES})"))
            return None
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        errors.append(RuleError(str(path), 1, 1, f"cannot read rules file: {e}"))
        return None


def read_items(text: str, filename: str, errors: list[RuleError]) -> tuple[FileText, list[yaml.Node]]:
    """The file and its items' nodes (none, with the reason in `errors`, if it is no list of items)."""
    ft = FileText(filename, text)
    if len(text) > MAX_FILE_BYTES:
        errors.append(RuleError(filename, 1, 1, f"file too large: {len(text)} characters "
                                                f"(at most {MAX_FILE_BYTES})"))
        return ft, []
    try:
        root = yaml.compose(text, Loader=_YamlLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reason = " ".join(x for x in (e.context, e.problem) if x) or "bad YAML"
        errors.append(RuleError(filename, line, col, f"bad YAML: {reason}"))
        return ft, []
    except yaml.YAMLError as e:
        errors.append(RuleError(filename, 1, 1, f"bad YAML: {e}"))
        return ft, []
    if root is None or is_null(root):
        return ft, []
    if not isinstance(root, yaml.SequenceNode):
        errors.append(ft.error_at(root, "a rules file is a list of items (rule, macro, list)"))
        return ft, []
    return ft, list(root.value)
