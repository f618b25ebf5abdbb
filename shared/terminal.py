"""Text from events (file names, argv, container names) made safe for a terminal.

Attackers choose those strings: an escape sequence in a file name must not
move the cursor, rewrite earlier lines or change the window title of whoever
reads `eunomia events` / `eunomia alerts`. Every control character (C0, DEL,
C1) and every invisible format character (bidi overrides, zero-width) is
shown as an escape; a backslash is doubled so the escapes are unambiguous.
"""
from __future__ import annotations

import unicodedata

_C0 = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\x1b": "\\e"}


def _esc(c: str) -> str:
    o = ord(c)
    return _C0.get(c) or (f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")


def unsafe(c: str) -> bool:
    return c == "\\" or unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")


def escape(s: str) -> str:
    """`s` with control and format characters escaped (printable text unchanged)."""
    if s.isascii() and s.isprintable() and "\\" not in s:
        return s
    return "".join("\\\\" if c == "\\" else _esc(c) if unsafe(c) else c for c in s)


def json_line(text: str) -> str:
    """JSON text (one or more lines) with the characters JSON leaves raw (DEL, C1, format) as \\u escapes."""
    if text.isascii() and "\x7f" not in text:
        return text
    return "".join(f"\\u{ord(c):04x}" if c not in "\\\n" and unsafe(c) and ord(c) < 0x10000 else c
                   for c in text)
