"""Falco's priority names, most severe first."""
from __future__ import annotations

PRIORITIES: tuple[str, ...] = ("EMERGENCY", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE",
                               "INFORMATIONAL", "DEBUG")
_ALIASES = {"INFO": "INFORMATIONAL", "WARN": "WARNING", "ERR": "ERROR", "CRIT": "CRITICAL",
            "EMERG": "EMERGENCY"}
_RANK = {p: i for i, p in enumerate(PRIORITIES)}


def normalize_priority(name: object) -> str | None:
    """The canonical upper-case name, or None when `name` is no priority."""
    if not isinstance(name, str):
        return None
    up = name.strip().upper()
    up = _ALIASES.get(up, up)
    return up if up in _RANK else None


def priority_rank(name: str) -> int:
    """0 for EMERGENCY ... 7 for DEBUG (lower is more severe)."""
    return _RANK[normalize_priority(name) or "DEBUG"]
