"""Which words occur in which container, per piece of the word index (SQLite's shards,
PostgreSQL's partitions).

A word search within a container intersects the words' lists with the
container's scope token; where the container holds none of the words, both
lists are walked to their ends in every piece (~1 s at 10M events). So each
piece also records its distinct (container, word) pairs, as crc32 of the word
(a few bytes per distinct pair, not per row), and such a search skips a piece
that lacks a pair. A hash collision only makes a search read a piece for
nothing; a pair is never left out: the words are FTS5's and PostgreSQL's own
tokens of the row (ASCII; a non-ASCII query word is not checked).
"""
from __future__ import annotations

import re
import zlib
from collections.abc import Iterable

SEEN_PAIRS = 200_000            # pairs a writer remembers for its newest piece (past that, the table decides)

# the ASCII tokens of our lowercased words as FTS5 (unicode61, tokenchars '._:') and PostgreSQL's
# array_to_tsvector (the words as they are) take them: runs of these
_ASCII_TOKEN = re.compile(r"[a-z0-9._:]+")


def row_tokens(text: str) -> list[str]:
    """Every ASCII token a search may find in a row's words: the words themselves when they are ASCII
    (codec.split_words made them of those characters), else every ASCII run in them, also once case
    folded (FTS5 folds 'ſ' to 's', which Python's lower() leaves)."""
    if text.isascii():
        return text.split(" ")
    return _ASCII_TOKEN.findall(text) + _ASCII_TOKEN.findall(text.casefold())


def query_tokens(words: list[str]) -> set[str] | None:
    """The tokens a row must hold to match these whole words; None if one is not ASCII."""
    if not all(w.isascii() for w in words):
        return None
    return {t for w in words for t in _ASCII_TOKEN.findall(w)}


def word_hash(w: str) -> int:
    return zlib.crc32(w.encode())


def query_hashes(words: list[str]) -> set[int] | None:
    """The hashes a piece must hold for a container, or None when the pairs cannot tell."""
    tokens = query_tokens(words)
    return {word_hash(t) for t in tokens} if tokens else None


class Seen:
    """The pairs a writer knows one piece holds already (bounded: past that, the table's own
    uniqueness decides). Forget after a rollback: what it saw may not have been kept."""

    def __init__(self) -> None:
        self.piece: int | None = None
        self.pairs: set[tuple[int, str]] = set()

    def forget(self) -> None:
        self.piece, self.pairs = None, set()

    def new_pairs(self, piece: int, rows: Iterable[tuple[str, int | None]]) -> list[tuple[int, int]]:
        """(container, word hash) of rows' (words, container) pairs not seen in `piece` yet."""
        if piece != self.piece or len(self.pairs) > SEEN_PAIRS:
            self.piece, self.pairs = piece, set()
        seen, out = self.pairs, []
        for text, cont in rows:
            if cont is None:
                continue
            for w in row_tokens(text):
                if (cont, w) not in seen:
                    seen.add((cont, w))
                    out.append((cont, word_hash(w)))
        return out
