"""Condition text -> AST.

    expr    := and ('or' and)*
    and     := unary ('and' unary)*
    unary   := 'not' unary | '(' expr ')' | FIELD OP [VALUE] | MACRO
    VALUE   := 'quoted' | "quoted" | bare | '(' [item (',' item)*] ')' | LISTNAME

Every node keeps its `src` (a Source) and offset, so the compiler can report
errors at the exact place, even inside a macro or an appended condition.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import RuleError
from .source import Source

SYMBOL_OPS = ("==", "!=", "<=", ">=", "=", "<", ">")
WORD_OPS = frozenset(("in", "contains", "icontains", "startswith", "endswith", "glob", "pmatch",
                      "exists", "regex", "intersects", "bcontains", "bstartswith"))
LIST_OPS = frozenset(("in", "pmatch", "intersects"))
_BARE_STOP = frozenset(" \t\r\n(),'\"")
_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_IDENT_CHARS = _IDENT_START | frozenset("0123456789.-")
MAX_DEPTH = 50              # nested parentheses and `not`s in one condition (macros: see compiler)


@dataclass
class Node:
    src: Source
    pos: int

    def error(self, reason: str) -> RuleError:
        return self.src.error(self.pos, reason)


@dataclass
class BoolOp(Node):
    op: str                    # "and" | "or"
    args: list[Node] = field(default_factory=list)


@dataclass
class Not(Node):
    arg: Node


@dataclass
class MacroRef(Node):
    name: str = ""


@dataclass
class Value:
    text: str
    pos: int
    quoted: bool


@dataclass
class Compare(Node):
    field: str = ""
    arg: str | None = None     # proc.aname[2] -> "2"
    op: str = ""
    op_pos: int = 0
    value: Value | list[Value] | None = None   # list for (a, b) forms; None for exists


@dataclass
class Const(Node):
    """Always true or false (an exception with no values)."""
    value: bool = True


class Parser:
    def __init__(self, src: Source) -> None:
        self.src, self.s, self.i = src, src.text, 0
        self.depth = 0

    def nest(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(pos, f"condition nested too deeply (more than {MAX_DEPTH} levels of "
                                 "parentheses and 'not')")

    def fail(self, pos: int, reason: str) -> RuleError:
        return self.src.error(pos, reason)

    def parse(self) -> Node:
        if not self.s.strip():
            raise self.fail(0, "empty condition")
        node = self.expr()
        self.ws()
        if self.i < len(self.s):
            raise self.fail(self.i, f"unexpected {self.peek_token()!r}: expected 'and', 'or' or the end")
        return node

    # --- lexing helpers ---
    def ws(self) -> None:
        s, i = self.s, self.i
        while i < len(s) and s[i].isspace():
            i += 1
        self.i = i

    def peek_token(self) -> str:
        s, i = self.s, self.i
        if i >= len(s):
            return "end of condition"
        j = i
        while j < len(s) and not s[j].isspace() and s[j] not in "()":
            j += 1
        return s[i:max(j, i + 1)]

    def keyword(self, word: str) -> bool:
        self.ws()
        s, i, n = self.s, self.i, len(word)
        if s.startswith(word, i) and (i + n == len(s) or s[i + n] not in _IDENT_CHARS):
            self.i = i + n
            return True
        return False

    def ident(self) -> str | None:
        s, i = self.s, self.i
        if i < len(s) and s[i] in _IDENT_START:
            j = i + 1
            while j < len(s) and s[j] in _IDENT_CHARS:
                j += 1
            self.i = j
            return s[i:j]
        return None

    # --- grammar ---
    def expr(self) -> Node:
        start = self.i
        args = [self.and_()]
        while self.keyword("or"):
            args.append(self.and_())
        return args[0] if len(args) == 1 else BoolOp(self.src, start, "or", args)

    def and_(self) -> Node:
        self.ws()
        start = self.i
        args = [self.unary()]
        while self.keyword("and"):
            args.append(self.unary())
        return args[0] if len(args) == 1 else BoolOp(self.src, start, "and", args)

    def unary(self) -> Node:
        self.ws()
        start = self.i
        if self.keyword("not"):
            self.nest(start)
            node: Node = Not(self.src, start, self.unary())
            self.depth -= 1
            return node
        if self.i >= len(self.s):
            raise self.fail(self.i, "expected a condition, found the end")
        if self.s[self.i] == "(":
            self.nest(start)
            self.i += 1
            node = self.expr()
            self.depth -= 1
            self.ws()
            if self.i >= len(self.s) or self.s[self.i] != ")":
                raise self.fail(self.i, f"expected ')' to close the '(' at offset {start}, "
                                        f"found {self.peek_token()!r}")
            self.i += 1
            return node
        name = self.ident()
        if name is None:
            raise self.fail(start, f"expected a field or macro name, found {self.peek_token()!r}")
        if name in ("and", "or"):
            raise self.fail(start, f"expected a condition before {name!r}")
        arg = None
        if self.i < len(self.s) and self.s[self.i] == "[":
            end = self.s.find("]", self.i)
            if end < 0:
                raise self.fail(self.i, "unterminated '[' in field name")
            arg = self.s[self.i + 1:end].strip().strip("'\"")
            self.i = end + 1
        self.ws()
        op_pos = self.i
        op = self.operator()
        if op is None:
            nxt = self.s[self.i] if self.i < len(self.s) else ""
            if arg is not None or not (nxt in ("", ")") or self.keyword_ahead()):
                raise self.fail(op_pos, f"bad operator {self.peek_token()!r} after {name!r}")
            return MacroRef(self.src, start, name)
        value: Value | list[Value] | None = None
        if op != "exists":
            value = self.value(op)
        return Compare(self.src, start, name, arg, op, op_pos, value)

    def keyword_ahead(self) -> bool:
        save = self.i
        ok = self.keyword("and") or self.keyword("or")
        self.i = save
        return ok

    def operator(self) -> str | None:
        s, i = self.s, self.i
        for op in SYMBOL_OPS:
            if s.startswith(op, i):
                self.i = i + len(op)
                return "=" if op == "==" else op
        save = i
        word = self.ident()
        if word in WORD_OPS:
            return word
        self.i = save
        return None

    def value(self, op: str) -> Value | list[Value]:
        self.ws()
        s = self.s
        if self.i < len(s) and s[self.i] == "(":
            return self.list_value()
        if self.i >= len(s):
            raise self.fail(self.i, f"operator {op!r} needs a value, found the end")
        v = self.scalar()
        if v is None:
            raise self.fail(self.i, f"operator {op!r} needs a value, found {self.peek_token()!r}")
        return v

    def list_value(self) -> list[Value]:
        open_pos = self.i
        self.i += 1
        items: list[Value] = []
        while True:
            self.ws()
            if self.i >= len(self.s):
                raise self.fail(open_pos, "unterminated list: missing ')'")
            if self.s[self.i] == ")":
                self.i += 1
                return items
            v = self.scalar()
            if v is None:
                raise self.fail(self.i, f"expected a list item, found {self.peek_token()!r}")
            items.append(v)
            self.ws()
            if self.i < len(self.s) and self.s[self.i] == ",":
                self.i += 1
            elif self.i < len(self.s) and self.s[self.i] != ")":
                raise self.fail(self.i, f"expected ',' or ')' in list, found {self.peek_token()!r}")

    def scalar(self) -> Value | None:
        s, i = self.s, self.i
        if i < len(s) and s[i] in "'\"":
            q, j, out = s[i], i + 1, []
            while j < len(s) and s[j] != q:
                if s[j] == "\\" and j + 1 < len(s):
                    j += 1
                out.append(s[j])
                j += 1
            if j >= len(s):
                raise self.fail(i, "unterminated string")
            self.i = j + 1
            return Value("".join(out), i, True)
        if i < len(s) and s[i] == "=":
            return None                    # an operator where a value belongs: quote it if meant
        j = i
        while j < len(s) and s[j] not in _BARE_STOP:
            j += 1
        if j == i:
            return None
        self.i = j
        return Value(s[i:j], i, False)


def parse(src: Source) -> Node:
    return Parser(src).parse()
