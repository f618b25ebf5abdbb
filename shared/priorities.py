"""Falco's priority names: the one definition every service uses.

Rank 0 is the most severe (EMERGENCY); `severity` counts the other way
(0 for DEBUG) and is what the store keeps as `prio_level`, so "at least
WARNING" is `prio_level >= severity("WARNING")`.
"""
from __future__ import annotations

PRIORITIES: tuple[str, ...] = ("EMERGENCY", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE",
                               "INFORMATIONAL", "DEBUG")
ALIASES = {"INFO": "INFORMATIONAL", "WARN": "WARNING", "ERR": "ERROR", "CRIT": "CRITICAL",
           "EMERG": "EMERGENCY"}
_RANK = {p: i for i, p in enumerate(PRIORITIES)}


def normalize_priority(name: object) -> str | None:
    """The canonical upper-case name (aliases and any case accepted), or None when `name` is no priority."""
    if not isinstance(name, str):
        return None
    up = name.strip().upper()
    up = ALIASES.get(up, up)
    return up if up in _RANK else None


def priority_rank(name: str) -> int:
    """0 for EMERGENCY ... 7 for DEBUG (lower is more severe); unknown names rank as DEBUG."""
    return _RANK[normalize_priority(name) or "DEBUG"]


def severity(name: object) -> int:
    """0 for DEBUG ... 7 for EMERGENCY, or -1 when `name` is no priority."""
    p = normalize_priority(name)
    return len(PRIORITIES) - 1 - _RANK[p] if p else -1


def at_least(name: object, minimum: str) -> bool:
    """`name` is `minimum` or more severe (unknown names are not)."""
    p = normalize_priority(name)
    return p is not None and _RANK[p] <= priority_rank(minimum)


def choices() -> str:
    """For error messages: the names and the aliases accepted."""
    return ", ".join(PRIORITIES) + " (or " + ", ".join(ALIASES) + ")"
