"""Action conditions: a tiny, safe expression language over one record ("run only if ...").

Users write the names they see in the SPEC (``EmailPermission == true and ProviderType in [3, 7]``)
while records carry snake_case keys, so field names match case-insensitively and ignoring ``_``.
The expressions come from tenants, so there is no ``eval``, no attribute access and no calls
other than ``exists()``; the input length and nesting depth are bounded. No library fits: jmespath
(already a dependency) has no case/underscore-insensitive names and evaluates to values rather
than a yes/no with our typing rules, and the general-purpose evaluators (simpleeval, asteval) are
Python-syntax and too large an attack surface. So this is a hand-written tokenizer and
recursive-descent parser::

    expr := or
    or   := and ('or' and)*
    and  := not ('and' not)*
    not  := 'not' not | '(' expr ')' | cmp
    cmp  := operand (('=='|'!='|'<'|'<='|'>'|'>='|'in'|'contains') operand)?
    operand := path | number | string | true | false | null | '[' operand, ... ']' | exists(path)

Semantics, chosen so a condition never raises on real data:

* paths are dotted (``address.city``; ``list_ids.0`` indexes a list); a key spelt exactly as
  written wins over one that only matches case/underscore-insensitively;
* a bare operand means "present and truthy" (``EmailPermission``);
* a missing field equals ``null`` and nothing else; ``exists(a.b)`` is true when the key is there
  (even if its value is null);
* ``==`` is strict: no string/number coercion, ``true`` is not ``1``; ints and floats compare by
  value; ``!=`` is exactly ``not ==``;
* ``<``, ``<=``, ``>``, ``>=`` compare numbers with numbers and strings with strings (so ISO dates
  order correctly); any other pairing is false;
* ``x in [..]`` is list membership, ``"sub" in text`` is substring, ``"key" in obj`` is key
  presence; ``a contains b`` is ``b in a``; other pairings are false.

Keywords (``and or not in contains true false null``) are case-insensitive.
"""

from __future__ import annotations

import numbers
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_LENGTH", "Condition", "ConditionError", "compile_condition"]

MAX_LENGTH = 1000
MAX_DEPTH = 32


class ConditionError(ValueError):
    """A condition that does not compile; ``position`` is the 0-based offset into ``source``."""

    def __init__(self, message: str, position: int, source: str = "") -> None:
        super().__init__(f"{message} (at position {position})")
        self.message = message
        self.position = position
        self.source = source


# --------------------------------------------------------------------------------------------- values


class _Missing:
    """Result of resolving a path that is not in the record (distinct from an explicit null)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


def _norm(name: str) -> str:
    return name.casefold().replace("_", "")


def _is_num(v: Any) -> bool:
    return isinstance(v, numbers.Real | Decimal) and not isinstance(v, bool)


def _lookup(container: Any, segment: str, normalized: str) -> Any:
    if isinstance(container, Mapping):
        if segment in container:
            return container[segment]
        for key, value in container.items():
            if isinstance(key, str) and _norm(key) == normalized:
                return value
        return MISSING
    if _is_seq(container) and segment.isascii() and segment.isdigit():
        index = int(segment)
        return container[index] if index < len(container) else MISSING
    return MISSING


def _eq(a: Any, b: Any) -> bool:
    if a is MISSING:
        a = None
    if b is MISSING:
        b = None
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_num(a) or _is_num(b):
        try:
            return _is_num(a) and _is_num(b) and bool(a == b)
        except ArithmeticError:  # Decimal signalling NaN
            return False
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        if not (isinstance(a, Mapping) and isinstance(b, Mapping)) or len(a) != len(b):
            return False
        return all(k in b and _eq(v, b[k]) for k, v in a.items())
    if _is_seq(a) or _is_seq(b):
        if not (_is_seq(a) and _is_seq(b)) or len(a) != len(b):
            return False
        return all(_eq(x, y) for x, y in zip(a, b, strict=True))
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # foreign objects (dates, ...) compare by their own rules, but never raise here
        return False


def _is_seq(v: Any) -> bool:
    return isinstance(v, list | tuple)


_ORDER: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _order(op: str, a: Any, b: Any) -> bool:
    if (_is_num(a) and _is_num(b)) or (isinstance(a, str) and isinstance(b, str)):
        try:
            return bool(_ORDER[op](a, b))
        except ArithmeticError:  # Decimal NaN refuses to be ordered
            return False
    return False


def _in(needle: Any, haystack: Any) -> bool:
    if _is_seq(haystack):
        return any(_eq(needle, item) for item in haystack)
    if isinstance(haystack, str):
        return isinstance(needle, str) and needle in haystack
    if isinstance(haystack, Mapping):
        return isinstance(needle, str) and _lookup(haystack, needle, _norm(needle)) is not MISSING
    return False


def _compare(op: str, a: Any, b: Any) -> bool:
    if op == "==":
        return _eq(a, b)
    if op == "!=":
        return not _eq(a, b)
    if op == "in":
        return _in(a, b)
    if op == "contains":
        return _in(b, a)
    if a is MISSING or b is MISSING:
        return False
    return _order(op, a, b)


def _truthy(v: Any) -> bool:
    try:
        return bool(v)
    except Exception:  # an exotic value whose __bool__ raises is simply not truthy
        return False


# ---------------------------------------------------------------------------------------------- AST


class _Operand:
    def value(self, record: Mapping[str, Any]) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class _Literal(_Operand):
    v: Any

    def value(self, record: Mapping[str, Any]) -> Any:
        return self.v


@dataclass(frozen=True)
class _Path(_Operand):
    segments: tuple[str, ...]
    normalized: tuple[str, ...]

    def value(self, record: Mapping[str, Any]) -> Any:
        current: Any = record
        for seg, norm in zip(self.segments, self.normalized, strict=True):
            current = _lookup(current, seg, norm)
            if current is MISSING:
                break
        return current


@dataclass(frozen=True)
class _ListLit(_Operand):
    items: tuple[_Operand, ...]

    def value(self, record: Mapping[str, Any]) -> Any:
        return [item.value(record) for item in self.items]


@dataclass(frozen=True)
class _Exists(_Operand):
    path: _Path

    def value(self, record: Mapping[str, Any]) -> Any:
        return self.path.value(record) is not MISSING


class _Node:
    def test(self, record: Mapping[str, Any]) -> bool:
        raise NotImplementedError


@dataclass(frozen=True)
class _Or(_Node):
    parts: tuple[_Node, ...]

    def test(self, record: Mapping[str, Any]) -> bool:
        return any(p.test(record) for p in self.parts)


@dataclass(frozen=True)
class _And(_Node):
    parts: tuple[_Node, ...]

    def test(self, record: Mapping[str, Any]) -> bool:
        return all(p.test(record) for p in self.parts)


@dataclass(frozen=True)
class _Not(_Node):
    inner: _Node

    def test(self, record: Mapping[str, Any]) -> bool:
        return not self.inner.test(record)


@dataclass(frozen=True)
class _Truthy(_Node):
    operand: _Operand

    def test(self, record: Mapping[str, Any]) -> bool:
        v = self.operand.value(record)
        return v is not MISSING and _truthy(v)


@dataclass(frozen=True)
class _Compare(_Node):
    op: str
    left: _Operand
    right: _Operand

    def test(self, record: Mapping[str, Any]) -> bool:
        return _compare(self.op, self.left.value(record), self.right.value(record))


# ------------------------------------------------------------------------------------------ tokens


@dataclass(frozen=True)
class _Tok:
    kind: str  # num str path kw op ( ) [ ] , end
    value: Any
    pos: int
    text: str


_KEYWORDS = {"and", "or", "not", "in", "contains", "true", "false", "null"}
_CMP_KEYWORDS = {"in", "contains"}
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_IDENT = r"[^\W\d]\w*"
_PATH = re.compile(rf"{_IDENT}(?:\.(?:{_IDENT}|[0-9]+))*")
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t", "r": "\r"}
_HINTS = {
    "=": "use '==' to compare",
    "!": "use 'not' or '!='",
    "&": "use 'and'",
    "|": "use 'or'",
}


def _tokenize(src: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(src)
    while i < n:
        ch = src[i]
        if ch.isspace():
            i += 1
            continue
        if src.startswith(("==", "!=", "<=", ">="), i):
            toks.append(_Tok("op", src[i : i + 2], i, src[i : i + 2]))
            i += 2
            continue
        if ch in "<>":
            toks.append(_Tok("op", ch, i, ch))
            i += 1
            continue
        if ch in "()[],":
            toks.append(_Tok(ch, ch, i, ch))
            i += 1
            continue
        if ch in "'\"":
            i = _string(src, i, toks)
            continue
        m = _NUMBER.match(src, i)
        if m:
            end = m.end()
            if end < n and (src[end].isalnum() or src[end] in "_."):
                raise ConditionError(f"malformed number {src[i : end + 1]!r}", i, src)
            text = m.group()
            value: float | int = float(text) if any(c in text for c in ".eE") else int(text)
            toks.append(_Tok("num", value, i, text))
            i = end
            continue
        m = _PATH.match(src, i)
        if m:
            end = m.end()
            if end < n and src[end] == ".":
                raise ConditionError("expected a field name after '.'", end + 1, src)
            text = m.group()
            if "." not in text and text.casefold() in _KEYWORDS:
                toks.append(_Tok("kw", text.casefold(), i, text))
            else:
                toks.append(_Tok("path", text, i, text))
            i = end
            continue
        hint = _HINTS.get(ch)
        raise ConditionError(f"unexpected character {ch!r}" + (f"; {hint}" if hint else ""), i, src)
    toks.append(_Tok("end", None, n, ""))
    return toks


def _string(src: str, start: int, toks: list[_Tok]) -> int:
    quote = src[start]
    out: list[str] = []
    i, n = start + 1, len(src)
    while i < n:
        ch = src[i]
        if ch == quote:
            toks.append(_Tok("str", "".join(out), start, src[start : i + 1]))
            return i + 1
        if ch == "\\":
            if i + 1 >= n:
                break
            esc = src[i + 1]
            if esc not in _ESCAPES:
                raise ConditionError(f"unknown escape '\\{esc}' in string", i, src)
            out.append(_ESCAPES[esc])
            i += 2
            continue
        out.append(ch)
        i += 1
    raise ConditionError("unterminated string", start, src)


def _describe(tok: _Tok) -> str:
    if tok.kind == "end":
        return "end of condition"
    if tok.kind == "path":
        return f"field {tok.text!r}"
    if tok.kind == "num":
        return f"number {tok.text}"
    if tok.kind == "str":
        return f"string {tok.text}"
    return f"'{tok.text}'"


# ------------------------------------------------------------------------------------------ parser


class _Parser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.toks = _tokenize(src)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def advance(self) -> _Tok:
        tok = self.toks[self.i]
        if tok.kind != "end":
            self.i += 1
        return tok

    def is_kw(self, word: str) -> bool:
        return self.tok.kind == "kw" and self.tok.value == word

    def fail(self, message: str, tok: _Tok | None = None) -> ConditionError:
        return ConditionError(message, (tok or self.tok).pos, self.src)

    def enter(self, opening: _Tok) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"condition is nested too deeply (limit {MAX_DEPTH})", opening)

    def parse(self) -> _Node:
        if self.tok.kind == "end":
            raise self.fail("empty condition")
        node = self.parse_or()
        if self.tok.kind != "end":
            raise self.fail(f"unexpected {_describe(self.tok)}; expected 'and', 'or' or end of condition")
        return node

    def parse_or(self) -> _Node:
        parts = [self.parse_and()]
        while self.is_kw("or"):
            self.advance()
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else _Or(tuple(parts))

    def parse_and(self) -> _Node:
        parts = [self.parse_not()]
        while self.is_kw("and"):
            self.advance()
            parts.append(self.parse_not())
        return parts[0] if len(parts) == 1 else _And(tuple(parts))

    def parse_not(self) -> _Node:
        if self.is_kw("not"):
            self.enter(self.advance())
            node: _Node = _Not(self.parse_not())
            self.depth -= 1
            return node
        if self.tok.kind == "(":
            opening = self.advance()
            self.enter(opening)
            node = self.parse_or()
            self.depth -= 1
            if self.tok.kind != ")":
                raise self.fail(
                    f"expected ')' to close '(' at position {opening.pos}, got {_describe(self.tok)}"
                )
            self.advance()
            return node
        return self.parse_cmp()

    def parse_cmp(self) -> _Node:
        left = self.parse_operand()
        tok = self.tok
        if tok.kind == "op" or (tok.kind == "kw" and tok.value in _CMP_KEYWORDS):
            self.advance()
            right = self.parse_operand(after=tok)
            return _Compare(tok.value, left, right)
        return _Truthy(left)

    def parse_operand(self, after: _Tok | None = None) -> _Operand:
        tok = self.tok
        if tok.kind in ("num", "str"):
            self.advance()
            return _Literal(tok.value)
        if tok.kind == "kw" and tok.value in ("true", "false", "null"):
            self.advance()
            return _Literal({"true": True, "false": False, "null": None}[tok.value])
        if tok.kind == "[":
            return self.parse_list()
        if tok.kind == "path":
            self.advance()
            if self.tok.kind == "(":
                if tok.text.casefold() != "exists":
                    raise self.fail(f"unknown function {tok.text!r}; the only function is exists()", tok)
                return self.parse_exists()
            return _path(tok.text)
        where = f" after '{after.text}'" if after else ""
        raise self.fail(
            f"expected a field, number, string, true/false/null or list{where}, got {_describe(tok)}"
        )

    def parse_exists(self) -> _Operand:
        self.advance()  # (
        tok = self.tok
        if tok.kind != "path":
            raise self.fail(f"exists() takes a field name, got {_describe(tok)}")
        self.advance()
        if self.tok.kind != ")":
            raise self.fail(f"expected ')' after the field name in exists(), got {_describe(self.tok)}")
        self.advance()
        return _Exists(_path(tok.text))

    def parse_list(self) -> _Operand:
        opening = self.advance()
        self.enter(opening)
        items: list[_Operand] = []
        while self.tok.kind != "]":
            items.append(self.parse_operand())
            if self.tok.kind == ",":
                self.advance()
            elif self.tok.kind != "]":
                raise self.fail(
                    f"expected ',' or ']' in the list opened at position {opening.pos}, got {_describe(self.tok)}"
                )
        self.advance()
        self.depth -= 1
        return _ListLit(tuple(items))


def _path(text: str) -> _Path:
    segments = tuple(text.split("."))
    return _Path(segments, tuple(_norm(s) for s in segments))


# --------------------------------------------------------------------------------------------- API


@dataclass(frozen=True)
class Condition:
    """A compiled condition; cheap to evaluate many times, safe to share between tasks."""

    source: str
    _root: _Node = field(repr=False, compare=False)

    def evaluate(self, record: Mapping[str, Any]) -> bool:
        """True when the record satisfies the condition; never raises on any record."""
        if not isinstance(record, Mapping):
            record = {}
        try:
            return self._root.test(record)
        except RecursionError:  # pathologically deep data compared with ==; treat as no match
            return False


def compile_condition(text: str) -> Condition:
    """Parse ``text``; raises :class:`ConditionError` with the offending position."""
    if not isinstance(text, str):
        raise ConditionError(f"a condition must be a string, got {type(text).__name__}", 0)
    if len(text) > MAX_LENGTH:
        raise ConditionError(
            f"condition is too long ({len(text):,} characters; the limit is {MAX_LENGTH:,})", MAX_LENGTH, text
        )
    return Condition(text, _Parser(text).parse())
