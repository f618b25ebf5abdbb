"""AST -> one generated Python function per rule.

The whole condition becomes a single `def cond(ev): return <expr>` compiled
once, with field extractors and constants bound as globals: evaluation costs
one Python call per rule plus one per field read, and short-circuits like
the rule text. Literals are converted to the field's type at compile time
(numbers, booleans, kinds, CIDRs, regexes, globs).
"""
from __future__ import annotations

import fnmatch
import functools
import ipaddress
import re
from typing import Any, Callable

from . import fields as F
from .evtypes import kind_of
from .parser import BoolOp, Compare, Const, MacroRef, Node, Not, Value

STR_OPS = frozenset(("contains", "icontains", "startswith", "endswith", "glob", "regex", "pmatch",
                     "bcontains", "bstartswith"))
ORDER_OPS = frozenset(("<", "<=", ">", ">="))
MULTI_OPS = frozenset(("in", "pmatch", "intersects", "contains", "icontains", "startswith", "endswith", "glob",
                       "bcontains", "bstartswith"))
Kinds = frozenset[str] | None   # None: may match any kind
Net = ipaddress.IPv4Network | ipaddress.IPv6Network
# Nesting of and/or/not with macros expanded: keeps the generated expression
# well inside what Python's own parser and compiler accept.
MAX_NESTING = 60


class MacroTable:
    """Macros (name -> parsed AST) and lists (name -> expanded items)."""

    def __init__(self, macros: dict[str, Node], lists: dict[str, list[str]]) -> None:
        self.macros, self.lists = macros, lists


class Compiler:
    """Compiles conditions sharing one namespace of extractors/constants."""

    def __init__(self, table: MacroTable) -> None:
        self.table = table
        self.ns: dict[str, Any] = {"_E": F._E, "__builtins__": {"any": any, "map": map, "str": str, "int": int,
                                                    "isinstance": isinstance, "len": len}}
        self._consts: dict[tuple[Any, ...], str] = {}
        self._fields: dict[str, str] = {}
        self._macro_code: dict[tuple[str, str | None], tuple[str, Kinds, int]] = {}  # code, kinds, height
        self.kind: str | None = None       # compiling a variant specialised to this event kind
        self._stack: list[str] = []
        self._depth = 0
        self._peak = 0                     # deepest level reached (macro heights are cached)
        self.warnings: list[str] = []

    # --- namespace ---
    def const(self, value: Any) -> str:
        try:
            key: tuple[Any, ...] = ("v", type(value).__name__, value)
            hash(key)
        except TypeError:
            key = ("id", id(value))
        name = self._consts.get(key)
        if name is None:
            name = f"c{len(self._consts)}"
            self._consts[key] = name
            self.ns[name] = value
        return name

    def read(self, f: F.Field) -> str:
        """Python expression reading field `f` from `ev`."""
        return f.inline if f.inline else f"{self.field_ref(f)}(ev)"

    def field_ref(self, f: F.Field) -> str:
        name = self._fields.get(f.name)
        if name is None:
            name = f"f{len(self._fields)}"
            self._fields[f.name] = name
            self.ns[name] = f.get
        return name

    # --- entry point ---
    def compile(self, node: Node, label: str) -> tuple[Callable[[F.Event], bool], Kinds, str]:
        """The generic callable, the kinds it can match (None: any) and its code."""
        self.kind = None
        code, kinds = self.expr(node)
        return self._function(code, label), kinds, code

    def compile_for(self, node: Node, label: str, kind: str) -> tuple[Callable[[F.Event], bool], str]:
        """A variant for events of one kind: evt.type tests fold to constants."""
        self.kind = kind
        try:
            code, _ = self.expr(node)
        finally:
            self.kind = None
        return self._function(code, f"{label} [{kind}]"), code

    def _function(self, code: str, label: str) -> Callable[[F.Event], bool]:
        fn_name = "cond_" + re.sub(r"\W", "_", label)[:40]
        src = f"def {fn_name}(ev):\n    return {code}\n"
        exec(compile(src, f"<rule {label}>", "exec"), self.ns)  # noqa: S102 - our own generated code
        fn: Callable[[F.Event], bool] = self.ns.pop(fn_name)
        return fn

    # --- nodes ---
    def expr(self, node: Node) -> tuple[str, Kinds]:
        self._depth += 1
        try:
            self._check_depth(node, self._depth)
            return self._expr(node)
        finally:
            self._depth -= 1

    def _check_depth(self, node: Node, depth: int) -> None:
        self._peak = max(self._peak, depth)
        if depth > MAX_NESTING:
            via = f" (through macros {' -> '.join(self._stack)})" if self._stack else ""
            raise node.error(f"condition nested too deeply: more than {MAX_NESTING} levels{via}")

    def _expr(self, node: Node) -> tuple[str, Kinds]:
        if isinstance(node, BoolOp):
            parts = [self.expr(a) for a in node.args]
            ks = [p[1] for p in parts]
            stop, skip = ("False", "True") if node.op == "and" else ("True", "False")
            codes = [p[0] for p in parts if p[0] != skip]
            if stop in codes:
                code = stop
            elif not codes:
                code = skip
            else:
                code = codes[0] if len(codes) == 1 else "(" + f" {node.op} ".join(codes) + ")"
            known = [k for k in ks if k is not None]
            if node.op == "and":
                kinds = frozenset.intersection(*known) if known else None
            else:
                kinds = None if len(known) < len(ks) else frozenset().union(*known)
            return code, kinds
        if isinstance(node, Not):
            code, _ = self.expr(node.arg)
            if code in ("True", "False"):
                return ("False" if code == "True" else "True"), None
            return f"(not {code})", None
        if isinstance(node, MacroRef):
            return self.macro(node)
        if isinstance(node, Compare):
            return self.compare(node)
        if isinstance(node, Const):
            return ("True" if node.value else "False"), None
        raise node.error(f"cannot compile {type(node).__name__}")

    def macro(self, node: MacroRef) -> tuple[str, Kinds]:
        name = node.name
        key = (name, self.kind)
        if key in self._macro_code:
            code, kinds, height = self._macro_code[key]
            self._check_depth(node, self._depth + height)
            return code, kinds
        body = self.table.macros.get(name)
        if body is None:
            if "." in name:
                try:
                    F.resolve(name, None)
                    raise node.error(f"field {name!r} needs an operator")
                except KeyError:
                    pass
                raise node.error(f"unknown field or macro {name!r}")
            raise node.error(f"unknown macro {name!r}")
        if name in self._stack:
            raise node.error(f"macro {name!r} refers to itself ({' -> '.join(self._stack + [name])})")
        self._stack.append(name)
        start, peak = self._depth, self._peak
        self._peak = start
        try:
            result = self.expr(body)
        finally:
            self._stack.pop()
            height, self._peak = self._peak - start, max(peak, self._peak)
        self._macro_code[key] = (*result, height)
        return result

    def compare(self, node: Compare) -> tuple[str, Kinds]:
        try:
            f = F.resolve(node.field, node.arg)
        except KeyError as e:
            raise node.error(e.args[0]) from None
        op = node.op
        values = self.values(node)
        if f.type == "kind":
            return self.kind_compare(node, f, op, values)
        pred = self.scalar_pred(node, f, op, values)
        read = self.read(f)
        if f.many:
            if op == "exists":
                return f"(len({read}) > 0)", None
            p = self.lambda_(pred.format(x="_x", y="_x"))
            return f"any(map({p}, {read}))", None
        return pred.format(x=f"(_v := {read})", y="_v"), None

    def lambda_(self, body: str) -> str:
        fn = eval(f"lambda _x: {body}", self.ns)  # noqa: S307 - our own generated code
        return self.const(fn)

    # --- values ---
    def values(self, node: Compare) -> list[Value] | None:
        """The literal(s), with list names expanded; None for exists."""
        v = node.value
        if v is None:
            return None
        items = v if isinstance(v, list) else [v]
        out: list[Value] = []
        for it in items:
            if not it.quoted and it.text in self.table.lists:
                out.extend(Value(t, it.pos, True) for t in self.table.lists[it.text])
            else:
                out.append(it)
        if node.op not in MULTI_OPS:
            if isinstance(v, list):
                raise node.src.error(node.op_pos, f"operator {node.op!r} takes one value, not a list")
            if len(out) != 1:
                raise node.src.error(v.pos, f"operator {node.op!r} takes one value, {v.text!r} is a list")
        return out

    def kind_compare(self, node: Compare, f: F.Field, op: str, values: list[Value] | None) -> tuple[str, Kinds]:
        read = self.read(f)
        if op == "exists":
            return ("True" if self.kind else f"({read} is not None)"), None
        if op not in ("=", "!=", "in"):
            raise node.src.error(node.op_pos, f"operator {op!r} is not supported for evt.type "
                                              "(use =, != or in)")
        kinds, unknown = set(), []
        for v in values or ():
            k = kind_of(v.text)
            if k is None:
                unknown.append(v)
            else:
                kinds.add(k)
        if not kinds:
            bad = unknown[0] if unknown else node.value
            pos = bad.pos if isinstance(bad, Value) else node.op_pos
            raise node.src.error(pos, f"unknown event type {bad.text if isinstance(bad, Value) else ''!r}")
        if unknown:
            self.warnings.append(f"evt.type: ignoring unknown event types {[u.text for u in unknown]}")
        ks = frozenset(kinds)
        if self.kind is not None:
            return str((self.kind in ks) != (op == "!=")), (ks if op != "!=" else None)
        if op == "!=":
            return f"({read} not in {self.const(ks)})", None
        return f"({read} in {self.const(ks)})", ks

    def convert(self, node: Compare, f: F.Field, v: Value) -> Any:
        t = f.type
        if t == "int":
            try:
                return int(v.text, 0)
            except ValueError:
                raise node.src.error(v.pos, f"{f.name} is a number, {v.text!r} is not") from None
        if t == "bool":
            low = v.text.lower()
            if low not in ("true", "false"):
                raise node.src.error(v.pos, f"{f.name} is true or false, not {v.text!r}")
            return low == "true"
        if t == "net":
            try:
                return _canon_net(ipaddress.ip_network(v.text, strict=False))
            except ValueError:
                raise node.src.error(v.pos, f"{f.name}: {v.text!r} is not an IP network (CIDR)") from None
        if f.name in F.IP_FIELDS:
            return F.canon_ip(v.text)   # addresses are compared canonical on both sides
        return v.text

    def scalar_pred(self, node: Compare, f: F.Field, op: str, values: list[Value] | None) -> str:
        """A Python expression template over {x} (first read of the value,
        may bind it) and {y} (later reads)."""
        if op == "exists":
            return "({x} is not None)"
        assert values is not None
        t = f.type
        if t == "any":
            return self.any_pred(node, op, values)
        if t == "net":
            return self.net_pred(node, f, op, values)
        if op in STR_OPS and t != "str":
            raise node.src.error(node.op_pos, f"operator {op!r} needs a text field, {f.name} is {t}")
        if op in ORDER_OPS and t != "int":
            raise node.src.error(node.op_pos, f"operator {op!r} needs a numeric field, {f.name} is {t}")
        lits = [self.convert(node, f, v) for v in values]
        if f.name == "container.id" and op in ("=", "!=") and lits[0] == "host":
            # Falco's ubiquitous `container.id != host`, without building the short id.
            on_host = '(ev.get("container") or _E).get("id") is None'
            return f"({on_host})" if op == "=" else f"(not {on_host})"
        make = _PREDICATES.get(op)
        if make is None:
            raise node.src.error(node.op_pos, f"operator {op!r} is not supported for {f.name}")
        return make(self, node, op, values, lits)

    def net_pred(self, node: Compare, f: F.Field, op: str, values: list[Value]) -> str:
        """An address field against CIDRs (=, != or in)."""
        if op not in ("=", "!=", "in"):
            raise node.src.error(node.op_pos, f"operator {op!r} is not supported for {f.name} "
                                              "(use =, != or in with CIDRs)")
        nets = tuple(self.convert(node, f, v) for v in values)
        test = self.const(_in_nets(nets))
        return f"({test}({{x}}))" if op != "!=" else f"({{x}} is not None and not {test}({{y}}))"

    def any_pred(self, node: Compare, op: str, values: list[Value]) -> str:
        """evt.arg.* may be a number or a string: compare numbers as numbers
        when both sides are, else as text."""
        texts = [v.text for v in values]
        nums: list[int | None] = []
        for t in texts:
            try:
                nums.append(int(t, 0))
            except ValueError:
                nums.append(None)
        if op in ORDER_OPS:
            if nums[0] is None:
                raise node.src.error(values[0].pos, f"operator {op!r} needs a number, not {texts[0]!r}")
            return f"(isinstance({{x}}, int) and {{y}} {op} {self.const(nums[0])})"
        if op in ("=", "in", "intersects", "!="):
            s_set = self.const(frozenset(texts))
            n_set = self.const(frozenset(n for n in nums if n is not None))
            test = f"({{y}} in {n_set} if isinstance({{y}}, int) else str({{y}}) in {s_set})"
            if op == "!=":
                return f"({{x}} is not None and not {test})"
            return f"({{x}} is not None and {test})"
        fake = F.Field(f"{node.field}", "str", lambda ev: None)
        inner = self.scalar_pred(node, fake, op, values)
        return inner.replace("{y}", "_s").replace("{x}", "(_s := (None if {x} is None else str({y})))")


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _canon_net(net: Net) -> Net:
    """A CIDR as the fields' canonical addresses are tested against it: an
    IPv4-mapped IPv6 network (::ffff:127.0.0.0/104) as the IPv4 one."""
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 and net.subnet_of(_MAPPED):
        return ipaddress.ip_network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96))
    return net


@functools.lru_cache(maxsize=8192)
def _ip(text: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _in_nets(nets: tuple[Net, ...]) -> Callable[[Any], bool]:
    @functools.lru_cache(maxsize=8192)
    def test(ip: Any) -> bool:
        a = _ip(ip) if isinstance(ip, str) else None
        return a is not None and any(a in n for n in nets if n.version == a.version)
    return test


# Predicate templates of scalar_pred, by operator: (compiler, node, op, values, literals) -> template.
Predicate = Callable[["Compiler", Compare, str, list[Value], list[Any]], str]


def _regex(c: Compiler, node: Compare, op: str, values: list[Value], lits: list[Any]) -> str:
    try:
        rx = re.compile(lits[0])
    except re.error as e:
        raise node.src.error(values[0].pos, f"bad regex {lits[0]!r}: {e}") from None
    return f"({{x}} is not None and {c.const(rx)}.search({{y}}) is not None)"


def _glob(c: Compiler, node: Compare, op: str, values: list[Value], lits: list[Any]) -> str:
    rx = re.compile("|".join(f"(?:{fnmatch.translate(s)})" for s in lits), re.S)
    return f"({{x}} is not None and {c.const(rx)}.match({{y}}) is not None)"


def _contains(c: Compiler, node: Compare, op: str, values: list[Value], lits: list[Any]) -> str:
    if len(lits) == 1:
        return f"({{x}} is not None and {c.const(lits[0])} in {{y}})"
    return f"({{x}} is not None and any(map({{y}}.__contains__, {c.const(tuple(lits))})))"


def _pmatch(c: Compiler, node: Compare, op: str, values: list[Value], lits: list[Any]) -> str:
    exact = frozenset(p.rstrip("/") or "/" for p in lits)
    prefixes = tuple("/" if p.rstrip("/") == "" else p.rstrip("/") + "/" for p in lits)
    return f"({{x}} is not None and ({{y}} in {c.const(exact)} or {{y}}.startswith({c.const(prefixes)})))"


_PREDICATES: dict[str, Predicate] = {
    "=": lambda c, n, op, v, lits: f"({{x}} == {c.const(lits[0])})",
    "!=": lambda c, n, op, v, lits: f"({{x}} is not None and {{y}} != {c.const(lits[0])})",
    **{o: (lambda c, n, op, v, lits: f"({{x}} is not None and {{y}} {op} {c.const(lits[0])})") for o in ORDER_OPS},
    "in": lambda c, n, op, v, lits: f"({{x}} in {c.const(frozenset(lits))})",
    "intersects": lambda c, n, op, v, lits: f"({{x}} in {c.const(frozenset(lits))})",
    "contains": _contains,
    "bcontains": _contains,
    "icontains": lambda c, n, op, v, lits: (f"({{x}} is not None and any(map({{y}}.lower().__contains__, "
                                            f"{c.const(tuple(s.lower() for s in lits))})))"),
    "startswith": lambda c, n, op, v, lits: f"({{x}} is not None and {{y}}.startswith({c.const(tuple(lits))}))",
    "bstartswith": lambda c, n, op, v, lits: f"({{x}} is not None and {{y}}.startswith({c.const(tuple(lits))}))",
    "endswith": lambda c, n, op, v, lits: f"({{x}} is not None and {{y}}.endswith({c.const(tuple(lits))}))",
    "glob": _glob,
    "regex": _regex,
    "pmatch": _pmatch,
}
