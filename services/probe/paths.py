"""Event paths as absolute, normalised paths.

The kernel sends a path argument as the process wrote it and, when it is
relative, the absolute directory it is relative to (the working directory
or the dirfd's file, walked in bpf/file.bpf.c). Here the two are joined and
`//`, `.` and `..` are folded lexically, as the kernel itself walks them from
the process's root (`..` of `/` is `/`). Rules see the result in `path`;
the argument stays in `raw_path`.
"""
from __future__ import annotations

from shared.filterplan import judged_path


def needs_folding(path: str) -> bool:
    return "//" in path or "/." in path or path.endswith("/") and len(path) > 1


def fold(path: str) -> str:
    """`path` (absolute) with empty, `.` and `..` components folded."""
    out: list[str] = []
    for part in path.split("/"):
        if part == "" or part == ".":
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        out.append(part)
    return "/" + "/".join(out)


def absolute(raw: str, base: str | None) -> str:
    """The absolute, normalised path of argument `raw`, relative to `base` when not absolute.
    A relative path whose base the kernel could not resolve stays as written."""
    if not raw.startswith("/") and (not raw or not base or not base.startswith("/")):
        return raw
    path = judged_path(raw, base)  # what the kernel's filter plan judged
    return fold(path) if needs_folding(path) else path
