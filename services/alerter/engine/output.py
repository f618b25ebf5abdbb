"""Output templates: "%proc.name wrote %fd.name" or "%(proc.name)"."""
from __future__ import annotations

import re
from typing import Any

from . import fields as F
from .source import Source

_FIELD = re.compile(r"%\(([^)]*)\)|%([A-Za-z_][A-Za-z0-9_.]*(?:\[[^\]]*\])?)")
NA = "<NA>"


def _render(v: Any) -> str:
    if v is None:
        return NA
    if isinstance(v, (list, tuple)):
        return ",".join(NA if x is None else str(x) for x in v) if v else NA
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


class Template:
    """A compiled output: literal text and field reads, rendered per match."""

    __slots__ = ("parts", "fields")

    def __init__(self, parts: list[str | F.Field], fields: dict[str, F.Field]) -> None:
        self.parts, self.fields = parts, fields

    def render(self, ev: F.Event) -> tuple[str, dict[str, Any]]:
        values = {name: f.get(ev) for name, f in self.fields.items()}
        out = [p if isinstance(p, str) else _render(values[p.name]) for p in self.parts]
        return "".join(out).strip(), values


def compile_output(src: Source) -> Template:
    text = src.text
    parts: list[str | F.Field] = []
    fields: dict[str, F.Field] = {}
    last = 0
    for m in _FIELD.finditer(text):
        spec = (m.group(1) if m.group(1) is not None else m.group(2)).strip()
        end = m.end()
        if m.group(2) is not None:
            stripped = spec.rstrip(".")          # "%fd.name." ends a sentence
            end -= len(spec) - len(stripped)
            spec = stripped
        name, arg = spec, None
        if spec.endswith("]") and "[" in spec:
            name, arg = spec[:-1].split("[", 1)
            arg = arg.strip().strip("'\"")
        try:
            f = F.resolve(name, arg)
        except KeyError as e:
            raise src.error(m.start() + 1, f"output: {e.args[0]}") from None
        parts.append(text[last:m.start()])
        parts.append(f)
        fields.setdefault(f.name, f)
        last = end
    parts.append(text[last:])
    return Template([p for p in parts if p != ""], fields)
