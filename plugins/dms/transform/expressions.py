"""Derived fields: a small, safe expression language over a chunk's text columns.

A spec writes, for instance::

    Name: {expr: "concat(upper(strip(first_name)), ' ', last_name)"}
    Amount__c: {expr: "number(qty) * number(price)"}
    Active__c: {expr: "status == 'A'"}

Safety: the text is read by the tokenizer and recursive-descent (Pratt) parser below into
this module's own node classes. Nothing reaches Python's `eval`, `exec`, `compile`, `ast`
or `getattr`; the only callables are the functions in `FUNCTIONS`. There is no attribute
access, subscript, lambda or keyword argument in the grammar, so `__import__('os')`,
`a.b` or `x[0]` are syntax errors, not Python. Length (`MAX_LENGTH`) and nesting
(`MAX_DEPTH`) are bounded, so no spec can make the parser or the evaluation blow the stack.

Grammar, loosest binding first::

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare
    compare := sum (("==" | "!=" | "<" | "<=" | ">" | ">=") sum)?     -- no chains: a < b < c is an error
    sum     := product (("+" | "-") product)*
    product := unary (("*" | "/") unary)*
    unary   := "-" unary | primary
    primary := NUMBER | STRING | "true" | "false" | "null" | "(" expr ")"
             | NAME "(" [expr ("," expr)*] ")"                           -- a function call
             | NAME | `any column name`                                  -- a source column

NAME is a Unicode identifier (`first_name`, `客户名称`); any other column name goes in
backticks (`` `客户 名称` ``, `` `2024 sales` ``; a backtick inside is doubled). Strings are
'single' or "double" quoted with the escapes \\\\ \\' \\" \\n \\r \\t \\uXXXX. Numbers are
`123` or `1.5`. Keywords (and, or, not, true, false, null) and function names are
case-insensitive; column names are not.

Types, fixed when the expression is compiled, so mistakes show up before any row is read:

* text: every source column, string literals, the text functions. "" is empty.
* number: number literals, `number()`, `len()`, `round()` and arithmetic (floats; empty is
  NaN). Text becomes a number only through `number(...)`: `qty * 2` is an error, so
  "10" never silently turns into 10 or "102".
* true/false: comparisons, `and`/`or`/`not`, `is_empty()`, `true`/`false`.
* null: empty of whatever type it meets.

Operators: `+` adds two numbers or joins two texts; mixing the two is an error (use
`number(...)` to add, `concat(...)` to join). `-`, `*`, `/` and unary `-` take numbers;
division by zero gives empty, and any arithmetic with an empty operand is empty.
Comparisons compare two texts (by code point) or two numbers; `==`/`!=` treat empty as a
value equal only to empty (`x == null` tests for empty), and `<`, `<=`, `>`, `>=` are false
when either side is empty. A number meets text (function arguments, `concat`, mixed
`if`/`coalesce` branches, the result) written as text; true/false as `true`/`false`.

Results are text ("" for empty), ready for the rest of the field pipeline: numbers without
a trailing ".0" for whole numbers, as plain decimals otherwise (never 1e+20), rounded to 15
significant digits as spreadsheets show them (0.1 + 0.2 gives 0.3). Whole numbers below
2**53 are written exactly.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from dms.errors import FatalError

MAX_LENGTH = 2000
MAX_DEPTH = 50

TEXT = "text"
NUMBER = "number"
BOOL = "boolean"
NULL = "null"
_TYPE_WORDS = {TEXT: "text", NUMBER: "a number", BOOL: "true/false", NULL: "null"}

_STRING = pa.large_string()  # pandas' own string storage: no conversion on the way in or out
_NOTHING = pa.scalar("", _STRING)  # Arrow's joins want the separator in the strings' own type
# The forms casting.py accepts for numbers (grouped thousands need a point for decimals).
_NUMBER_RE = r"[+-]?(?:[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]*)?|[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_EXACT_LIMIT = 2.0**53  # whole floats below this are exact integers and are written in full
_SIGNIFICANT = 15  # digits a float holds reliably; more would print noise (0.30000000000000004)

Value = Any  # pa.Array of text, np.ndarray of float64 or bool, or None for a null literal


class ExpressionError(FatalError, ValueError):
    """An expression that cannot be compiled or evaluated; the message names the position.

    A `ValueError` so that spec validation (pydantic) reports it at the field's YAML path,
    and a `FatalError` because no retry fixes a spec. `position` is the 0-based offset in
    the expression text, when there is one.
    """

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


def _where(text: str, position: int) -> str:
    """ "column 7", or "line 2, column 3" for an expression written over several lines."""
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    return f"column {column}" if "\n" not in text else f"line {line}, column {column}"


# ---------------------------------------------------------------- tokens


@dataclass(frozen=True)
class _Token:
    kind: str  # "number", "string", "name", "column" (backticks), "op", "end"
    value: str
    position: int

    def describe(self) -> str:
        if self.kind == "end":
            return "the end of the expression"
        if self.kind == "string":
            return f"text {self.value!r}"
        if self.kind == "number":
            return f"number {self.value}"
        if self.kind == "column":
            return f"column `{self.value}`"
        return f"'{self.value}'"


_OPERATORS = ("==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "(", ")", ",")
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "r": "\r", "t": "\t"}
_KEYWORDS = ("and", "or", "not", "true", "false", "null")
# Operators from other languages, refused with the spelling this one uses.
_FOREIGN = {"=": "'==' to compare", "&&": "'and'", "||": "'or'", "!": "'not'", "<>": "'!='"}


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char.isspace():
            i += 1
            continue
        start = i
        if "0" <= char <= "9":
            while i < n and "0" <= text[i] <= "9":
                i += 1
            if i < n and text[i] == ".":
                i += 1
                if not (i < n and "0" <= text[i] <= "9"):
                    raise ExpressionError(f"expected a digit after '.' at {_where(text, i)}", i)
                while i < n and "0" <= text[i] <= "9":
                    i += 1
            if i < n and ("a" + text[i]).isidentifier():
                end = i
                while end < n and ("a" + text[end]).isidentifier():
                    end += 1
                raise ExpressionError(
                    f"a column name that starts with a digit must be written in backticks "
                    f"(`{text[start:end]}`) at {_where(text, start)}",
                    start,
                )
            tokens.append(_Token("number", text[start:i], start))
        elif char.isidentifier():
            i += 1
            while i < n and ("a" + text[i]).isidentifier():
                i += 1
            tokens.append(_Token("name", text[start:i], start))
        elif char in "'\"":
            value, i = _read_string(text, i)
            tokens.append(_Token("string", value, start))
        elif char == "`":
            value, i = _read_quoted_name(text, i)
            tokens.append(_Token("column", value, start))
        else:
            foreign = next((f for f in sorted(_FOREIGN, key=len, reverse=True) if text.startswith(f, i)), None)
            operator = next((o for o in _OPERATORS if text.startswith(o, i)), None)
            if operator is None or (foreign is not None and len(foreign) > len(operator)):
                if foreign is not None:
                    raise ExpressionError(
                        f"'{foreign}' is not an operator here at {_where(text, i)}; use {_FOREIGN[foreign]}", i
                    )
                raise ExpressionError(f"unexpected character {char!r} at {_where(text, i)}", i)
            tokens.append(_Token("op", operator, start))
            i += len(operator)
    tokens.append(_Token("end", "", n))
    return tokens


def _read_string(text: str, start: int) -> tuple[str, int]:
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == quote:
            return "".join(out), i + 1
        if char == "\\":
            code = text[i + 1 : i + 2]
            if code in _ESCAPES:
                out.append(_ESCAPES[code])
                i += 2
                continue
            if code == "u":
                digits = text[i + 2 : i + 6]
                if len(digits) == 4 and all(c in "0123456789abcdefABCDEF" for c in digits):
                    out.append(chr(int(digits, 16)))
                    i += 6
                    continue
                raise ExpressionError(f"'\\u' needs four hex digits at {_where(text, i)}", i)
            shown = "\\" + code if code else "\\"
            raise ExpressionError(f"unknown escape '{shown}' at {_where(text, i)}; write \\\\ for a backslash", i)
        out.append(char)
        i += 1
    raise ExpressionError(f"unterminated string starting at {_where(text, start)}", start)


def _read_quoted_name(text: str, start: int) -> tuple[str, int]:
    out: list[str] = []
    i = start + 1
    while i < len(text):
        if text[i] == "`":
            if text[i + 1 : i + 2] == "`":  # a doubled backtick is one backtick of the name
                out.append("`")
                i += 2
                continue
            if not out:
                raise ExpressionError(f"empty column name `` at {_where(text, start)}", start)
            return "".join(out), i + 1
        out.append(text[i])
        i += 1
    raise ExpressionError(f"unterminated `column name` starting at {_where(text, start)}", start)


# ---------------------------------------------------------------- evaluation helpers


class _Context:
    """One evaluation: the frame's columns as Arrow text (decoded once each) and today's date."""

    def __init__(self, frame: pd.DataFrame | None, n: int) -> None:
        self.frame = frame
        self.n = n
        self.today = dt.datetime.now(dt.UTC).date().isoformat()
        self._columns: dict[str, pa.Array] = {}

    def column(self, name: str) -> pa.Array:
        if name not in self._columns:
            assert self.frame is not None
            series = self.frame[name]
            if isinstance(series, pd.DataFrame):
                raise ExpressionError(f"the data has more than one column named {name!r}")
            if series.dtype != "str":
                series = series.astype("str")
            self._columns[name] = pc.fill_null(_arrow(series), "")
        return self._columns[name]


def _arrow(values: pd.Series | pa.Array | pa.ChunkedArray) -> pa.Array:
    column = pa.array(values, type=_STRING) if isinstance(values, pd.Series) else values
    if isinstance(column, pa.ChunkedArray):  # what pandas hands over for some columns
        column = column.combine_chunks()
    return column.cast(_STRING) if column.type != _STRING else column


def _repeat(text: str, n: int) -> pa.Array:
    # One Arrow string repeated by a take: no Python string per row.
    return pa.array([text], type=_STRING).take(np.zeros(n, dtype=np.int32))


def _bools(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=bool)


def _clean(numbers: np.ndarray) -> np.ndarray:
    """Infinities (division by zero, overflow) become empty, like every other impossible result."""
    return np.where(np.isfinite(numbers), numbers, np.nan)


def _pow10(exponent: np.ndarray) -> np.ndarray:
    return np.power(10.0, exponent.astype(np.float64))


def _scaled(magnitude: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """magnitude * 10**exponent: one correctly rounded operation while the power of ten is exact.

    10**k is exact in a float up to k = 22, so a division by it (not a multiplication by the
    inexact 10**-k) lands on the float nearest the decimal: 3e14 / 1e15 is exactly 0.3.
    Beyond, two steps keep 10**k from overflowing.
    """
    exact = np.abs(exponent) <= 22
    small = np.where(exact, exponent, 0)
    power = _pow10(np.abs(small))
    half = exponent // 2
    with np.errstate(all="ignore"):
        near = np.where(small >= 0, magnitude * power, magnitude / power)
        far = magnitude * _pow10(half) * _pow10(exponent - half)
    return np.where(exact, near, far)


def _significant_digits(magnitude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positive finite floats as `digits * 10**-decimals`, `digits` a 15-digit integer."""
    with np.errstate(all="ignore"):
        decimals = (_SIGNIFICANT - 1 - np.floor(np.log10(magnitude))).astype(np.int64)
    digits = np.round(_scaled(magnitude, decimals))
    # log10 can be off by one next to a power of ten, and rounding can carry to 10**15.
    for wrong, step in ((digits >= 10.0**_SIGNIFICANT, -1), (digits < 10.0 ** (_SIGNIFICANT - 1), 1)):
        if wrong.any():
            decimals = np.where(wrong, decimals + step, decimals)
            digits = np.where(wrong, np.round(_scaled(magnitude, decimals)), digits)
    return digits.astype(np.int64), decimals


def _significant(numbers: np.ndarray) -> np.ndarray:
    """`numbers` rounded to 15 significant digits: the float noise of 0.1 + 0.2 goes."""
    out = numbers.astype(np.float64, copy=True)
    rows = np.flatnonzero(np.isfinite(out) & (out != 0))
    if len(rows):
        digits, decimals = _significant_digits(np.abs(out[rows]))
        out[rows] = np.sign(out[rows]) * _scaled(digits.astype(np.float64), -decimals)
    return out


def format_numbers(numbers: np.ndarray) -> pa.Array:
    """Numbers as text: `12`, `-0.5`, `1234.25`, never scientific; NaN and infinities as "".

    Arrow's own float-to-text cast writes 1.2345678901225e+11, which Salesforce would take
    but people would not. So the digits are built from integers: whole numbers below 2**53
    directly, the others as 15 significant digits with the point placed per exponent (one
    group of rows per exponent, a handful in practice).
    """
    x = np.asarray(numbers, dtype=np.float64)
    finite = np.isfinite(x)
    exact = finite & (np.abs(x) < _EXACT_LIMIT) & (x == np.trunc(x))
    pieces: list[pa.Array] = []
    order: list[np.ndarray] = []
    rows = np.flatnonzero(exact)
    pieces.append(pa.array(x[rows].astype(np.int64)).cast(_STRING))
    order.append(rows)
    rows = np.flatnonzero(finite & ~exact)
    if len(rows):
        digits, decimals = _significant_digits(np.abs(x[rows]))
        negative = x[rows] < 0
        for exponent in np.unique(decimals):
            group = decimals == exponent
            text = pa.array(digits[group]).cast(_STRING)
            if exponent > 0:
                padded = pc.utf8_lpad(text, width=int(exponent) + 1, padding="0")
                whole = pc.utf8_slice_codeunits(padded, 0, -int(exponent))
                fraction = pc.utf8_rtrim(pc.utf8_slice_codeunits(padded, -int(exponent)), characters="0")
                dotted = pc.binary_join_element_wise(whole, fraction, pa.scalar(".", _STRING))
                text = pc.if_else(pc.equal(fraction, ""), whole, dotted)
            elif exponent < 0:
                text = pc.binary_join_element_wise(text, pa.scalar("0" * -int(exponent), _STRING), _NOTHING)
            minus = pc.binary_join_element_wise(pa.scalar("-", _STRING), text, _NOTHING)
            pieces.append(pc.if_else(pa.array(negative[group]), minus, text))
            order.append(rows[group])
    rows = np.flatnonzero(~finite)
    pieces.append(_repeat("", len(rows)))
    order.append(rows)
    combined = pa.concat_arrays([p.cast(_STRING) for p in pieces])
    return combined.take(pa.array(np.argsort(np.concatenate(order), kind="stable")))


def _parse_numbers(text: pa.Array) -> np.ndarray:
    """Text as float64: the forms casting.py accepts, after strip; anything else is NaN."""
    stripped = pc.utf8_trim_whitespace(text)
    ok = pc.match_substring_regex(stripped, f"^(?:{_NUMBER_RE})$")
    clean = pc.if_else(ok, pc.replace_substring(stripped, ",", ""), pa.scalar(None, _STRING))
    return clean.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)


def _convert(value: Value, source: str, target: str, n: int) -> Value:
    """A value of type `source` as `target`; only the conversions the type checker allows."""
    if source == target:
        return value
    if target == TEXT:
        if source == NUMBER:
            return format_numbers(value)
        if source == BOOL:
            return pa.array(["false", "true"], type=_STRING).take(pa.array(value.astype(np.int8)))
        return _repeat("", n)
    if source == NULL:
        return np.full(n, np.nan) if target == NUMBER else np.zeros(n, dtype=bool)
    raise AssertionError(f"no conversion from {source} to {target}")


def _unify(types: Sequence[str]) -> str:
    """The type of a value that is one of `types` (if/coalesce/default): text unless they agree."""
    known = {t for t in types if t != NULL}
    if not known:
        return NULL
    return known.pop() if len(known) == 1 else TEXT


# ---------------------------------------------------------------- nodes


class _Node:
    type: str
    columns: frozenset[str]
    position: int

    def evaluate(self, ctx: _Context) -> Value:
        raise NotImplementedError


class _Literal(_Node):
    def __init__(self, value: str | float | bool | None, type_: str, position: int) -> None:
        self.value, self.type, self.position = value, type_, position
        self.columns = frozenset()

    def evaluate(self, ctx: _Context) -> Value:
        if self.type == TEXT:
            return _repeat(str(self.value), ctx.n)
        if self.type == NUMBER:
            return np.full(ctx.n, float(self.value))  # type: ignore[arg-type]
        if self.type == BOOL:
            return np.full(ctx.n, bool(self.value))
        return None


class _Column(_Node):
    def __init__(self, name: str, position: int) -> None:
        self.name, self.position, self.type = name, position, TEXT
        self.columns = frozenset([name])

    def evaluate(self, ctx: _Context) -> Value:
        return ctx.column(self.name)


class _Convert(_Node):
    def __init__(self, operand: _Node, target: str) -> None:
        self.operand, self.type, self.position = operand, target, operand.position
        self.columns = operand.columns

    def evaluate(self, ctx: _Context) -> Value:
        return _convert(self.operand.evaluate(ctx), self.operand.type, self.type, ctx.n)


def _as(node: _Node, target: str) -> _Node:
    return node if node.type == target else _Convert(node, target)


class _Negate(_Node):
    def __init__(self, operand: _Node, position: int) -> None:
        self.operand, self.position, self.type = _as(operand, NUMBER), position, NUMBER
        self.columns = operand.columns

    def evaluate(self, ctx: _Context) -> Value:
        return -self.operand.evaluate(ctx)


class _Not(_Node):
    def __init__(self, operand: _Node, position: int) -> None:
        self.operand, self.position, self.type = _as(operand, BOOL), position, BOOL
        self.columns = operand.columns

    def evaluate(self, ctx: _Context) -> Value:
        return ~self.operand.evaluate(ctx)


@dataclass(frozen=True)
class _Step:
    operator: str
    position: int
    operand: _Node
    left: str  # the type of everything before this step
    type: str  # the type after it


class _Chain(_Node):
    """`a + b - c`, `a and b and c`, `a == b`: one level of operators, evaluated in a loop.

    A flat chain instead of a left-leaning tree keeps the tree as shallow as the text's
    nesting, so a long sum needs no deep recursion to evaluate.
    """

    def __init__(self, first: _Node, steps: list[_Step]) -> None:
        self.first, self.steps = first, tuple(steps)
        self.type, self.position = steps[-1].type, first.position
        self.columns = first.columns.union(*(s.operand.columns for s in steps))

    def evaluate(self, ctx: _Context) -> Value:
        value = self.first.evaluate(ctx)
        for step in self.steps:
            value = _apply(step, value, step.operand.evaluate(ctx), ctx.n)
        return value


def _apply(step: _Step, left: Value, right: Value, n: int) -> Value:
    operator, left_type, right_type = step.operator, step.left, step.operand.type
    if operator in ("and", "or"):
        a, b = _convert(left, left_type, BOOL, n), _convert(right, right_type, BOOL, n)
        return (a & b) if operator == "and" else (a | b)
    if operator in _COMPARISONS:
        return _compare(operator, left, left_type, right, right_type, n)
    if step.type == TEXT:  # "+" on text
        a, b = _convert(left, left_type, TEXT, n), _convert(right, right_type, TEXT, n)
        return pc.binary_join_element_wise(a, b, _NOTHING)
    if step.type == NULL:
        return None
    a, b = _convert(left, left_type, NUMBER, n), _convert(right, right_type, NUMBER, n)
    with np.errstate(all="ignore"):
        if operator == "+":
            return _clean(a + b)
        if operator == "-":
            return _clean(a - b)
        if operator == "*":
            return _clean(a * b)
        return _clean(np.where(b == 0, np.nan, a / np.where(b == 0, 1.0, b)))


_COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")
_ARROW_COMPARE: dict[str, Callable[..., Any]] = {
    "==": pc.equal,
    "!=": pc.not_equal,
    "<": pc.less,
    "<=": pc.less_equal,
    ">": pc.greater,
    ">=": pc.greater_equal,
}


def _compare(operator: str, left: Value, left_type: str, right: Value, right_type: str, n: int) -> np.ndarray:
    kind = _unify([left_type, right_type])
    equality = operator in ("==", "!=")
    if kind == NULL:  # null against null: equal, and empty, so never ordered
        return np.full(n, operator == "==")
    if kind == BOOL and NULL in (left_type, right_type):  # true/false is never empty
        return np.full(n, operator == "!=")
    if kind == BOOL:
        return (left == right) if operator == "==" else (left != right)
    a, b = _convert(left, left_type, kind, n), _convert(right, right_type, kind, n)
    if kind == TEXT:
        result = _bools(_ARROW_COMPARE[operator](a, b))
        if not equality:
            result &= _bools(pc.not_equal(a, "")) & _bools(pc.not_equal(b, ""))
        return result
    with np.errstate(invalid="ignore"):
        both_empty = np.isnan(a) & np.isnan(b)
        result = {
            "==": (a == b) | both_empty,
            "!=": (a != b) & ~both_empty,
            "<": a < b,
            "<=": a <= b,
            ">": a > b,
            ">=": a >= b,
        }[operator]
    return np.asarray(result, dtype=bool)


# ---------------------------------------------------------------- functions

# Parameter kinds: "text" takes anything (numbers and true/false are written as text),
# "number" and "bool" take only their type (or null), "any" is an if/coalesce branch.
# "int", "const" and "pattern" (non-empty text) must not read columns: they are worked
# out once, when compiling, because the Arrow kernels behind left/right/substr/split/replace
# take one value per call.


@dataclass(frozen=True)
class _Function:
    params: tuple[str, ...]
    required: int
    result: str | None  # None: the common type of the "any" arguments
    run: Callable[[_Context, list[Any]], Value]
    variadic: bool = False  # the last parameter repeats

    def arity(self) -> str:
        def args(k: int) -> str:
            return f"{k} argument" + ("" if k == 1 else "s")

        if self.variadic:
            return f"takes at least {args(self.required)}"
        if not self.params:
            return "takes no arguments"
        if self.required == len(self.params):
            return f"takes {args(self.required)}"
        return f"takes {self.required} or {args(len(self.params))}"


def _coalesce(ctx: _Context, args: list[Value]) -> Value:
    result = args[-1]
    for value in reversed(args[:-1]):
        if value is None:
            continue
        if result is None:
            result = value
        elif isinstance(value, np.ndarray) and value.dtype == np.float64:
            result = np.where(np.isnan(value), result, value)
        elif isinstance(value, np.ndarray):  # true/false: never empty
            result = value
        else:
            result = pc.if_else(pc.not_equal(value, ""), value, result)
    return result


def _if(ctx: _Context, args: list[Value]) -> Value:
    condition, then, otherwise = args
    if then is None:  # both branches null
        return None
    if isinstance(then, np.ndarray):
        return np.where(condition, then, otherwise)
    return pc.if_else(pa.array(condition, type=pa.bool_()), then, otherwise)


def _is_empty(ctx: _Context, args: list[Value]) -> Value:
    (value,) = args
    if value is None:
        return np.ones(ctx.n, dtype=bool)
    if isinstance(value, np.ndarray):
        return np.isnan(value) if value.dtype == np.float64 else np.zeros(ctx.n, dtype=bool)
    return _bools(pc.equal(value, ""))


def _right(ctx: _Context, args: list[Value]) -> Value:
    text, count = args
    if count == 0:
        return _repeat("", ctx.n)
    return pc.utf8_slice_codeunits(text, -count)


def _substr(ctx: _Context, args: list[Value]) -> Value:
    text, start = args[0], args[1] - 1
    stop = start + args[2] if len(args) > 2 else None
    return pc.utf8_slice_codeunits(text, start, stop)


def _split(ctx: _Context, args: list[Value]) -> Value:
    text, separator, index = args
    parts = pc.split_pattern(text, pattern=separator)
    counts = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
    offsets = parts.offsets.to_numpy(zero_copy_only=False)
    if index > 0:
        positions, present = offsets[:-1] + (index - 1), counts >= index
    else:
        positions, present = offsets[1:] + index, counts >= -index
    picked = parts.values.take(pa.array(np.where(present, positions, 0)))
    return pc.if_else(pa.array(present), picked, _NOTHING)


def _round(ctx: _Context, args: list[Value]) -> Value:
    numbers, places = args[0], (args[1] if len(args) > 1 else 0)
    with np.errstate(all="ignore"):
        # Half away from zero, as Excel and Salesforce round; 15 significant digits first,
        # so 1.005 (stored as 1.00499999...) rounds to 1.01 as written.
        scaled = _significant(numbers * 10.0**places)
        whole = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
        return _clean(whole / 10.0**places if places >= 0 else whole * 10.0**-places)


def _unary_text(kernel: Callable[..., Any]) -> Callable[[_Context, list[Value]], Value]:
    return lambda ctx, args: kernel(args[0])


FUNCTIONS: dict[str, _Function] = {
    "coalesce": _Function(("any",), 1, None, _coalesce, variadic=True),
    "concat": _Function(("text",), 1, TEXT, lambda ctx, args: pc.binary_join_element_wise(*args, _NOTHING), True),
    "default": _Function(("any", "any"), 2, None, _coalesce),
    "if": _Function(("bool", "any", "any"), 3, None, _if),
    "is_empty": _Function(("any",), 1, BOOL, _is_empty),
    "left": _Function(("text", "int"), 2, TEXT, lambda ctx, args: pc.utf8_slice_codeunits(args[0], 0, args[1])),
    "len": _Function(("text",), 1, NUMBER, lambda ctx, args: pc.utf8_length(args[0]).to_numpy().astype(np.float64)),
    "lower": _Function(("text",), 1, TEXT, _unary_text(pc.utf8_lower)),
    "number": _Function(("text",), 1, NUMBER, lambda ctx, args: _parse_numbers(args[0])),
    "replace": _Function(
        ("text", "pattern", "const"), 3, TEXT, lambda ctx, args: pc.replace_substring(args[0], args[1], args[2])
    ),
    "right": _Function(("text", "int"), 2, TEXT, _right),
    "round": _Function(("number", "int"), 1, NUMBER, _round),
    "split": _Function(("text", "pattern", "int"), 3, TEXT, _split),
    "strip": _Function(("text",), 1, TEXT, _unary_text(pc.utf8_trim_whitespace)),
    "substr": _Function(("text", "int", "int"), 2, TEXT, _substr),
    "title": _Function(("text",), 1, TEXT, _unary_text(pc.utf8_title)),
    "today": _Function((), 0, TEXT, lambda ctx, args: _repeat(ctx.today, ctx.n)),
    "upper": _Function(("text",), 1, TEXT, _unary_text(pc.utf8_upper)),
}

# The limits of the constant arguments, checked when compiling: (lowest, highest, what).
_INT_LIMITS: dict[tuple[str, int], tuple[int | None, int | None, str]] = {
    ("left", 1): (0, None, "the number of characters"),
    ("right", 1): (0, None, "the number of characters"),
    ("substr", 1): (1, None, "the start (the first character is 1)"),
    ("substr", 2): (0, None, "the length"),
    ("round", 1): (-15, 15, "the number of decimals"),
    ("split", 2): (None, None, "the part (1 is the first, -1 the last)"),
}


class _Call(_Node):
    def __init__(self, name: str, function: _Function, args: list[_Node | Any], type_: str, position: int) -> None:
        self.name, self.function, self.args, self.type, self.position = name, function, args, type_, position
        self.columns = frozenset().union(*(a.columns for a in args if isinstance(a, _Node)))

    def evaluate(self, ctx: _Context) -> Value:
        values = [a.evaluate(ctx) if isinstance(a, _Node) else a for a in self.args]
        return self.function.run(ctx, values)


# ---------------------------------------------------------------- parser

_BOOL_HINT = "; compare it (x == 'A', number(x) > 0) or use is_empty(x)"


def _hint(wanted: str, got: str) -> str:
    """How to turn a value of type `got` into the `wanted` one, for error messages."""
    if wanted == NUMBER and got == TEXT:
        return "; convert it with number(...)"
    if wanted == BOOL and got in (TEXT, NUMBER):
        return _BOOL_HINT
    return ""


# Binding levels of the binary operators; "not" sits between "and" and the comparisons,
# unary minus above "*".
_LEVELS = {"or": 1, "and": 2, **dict.fromkeys(_COMPARISONS, 4), "+": 5, "-": 5, "*": 6, "/": 6}
_NOT_LEVEL = 3
_COMPARE_LEVEL = 4
_UNARY_LEVEL = 7


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0
        self.depth = 0

    # -- tokens

    def _peek(self) -> _Token:
        return self.tokens[self.index]

    def _next(self) -> _Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def _error(self, message: str, position: int, hint: str = "") -> ExpressionError:
        return ExpressionError(f"{message} at {_where(self.text, position)}{hint}", position)

    def _expect(self, value: str, what: str) -> _Token:
        token = self._next()
        if not (token.kind == "op" and token.value == value):
            raise self._error(f"expected {what}", token.position, f", found {token.describe()}")
        return token

    def _enter(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self._error(f"the expression nests more than {MAX_DEPTH} levels deep", token.position)

    def _level(self, token: _Token) -> int | None:
        if token.kind == "op":
            return _LEVELS.get(token.value)
        if token.kind == "name" and token.value.lower() in ("and", "or"):
            return _LEVELS[token.value.lower()]
        return None

    # -- grammar

    def parse(self) -> _Node:
        node = self._expression(0)
        token = self._peek()
        if token.kind != "end":
            raise self._error(f"unexpected {token.describe()}", token.position, "; expected an operator or the end")
        return node

    def _expression(self, min_level: int) -> _Node:
        node = self._prefix()
        level: int | None = None  # of the chain being built
        first, steps = node, []
        while True:
            token = self._peek()
            op_level = self._level(token)
            if op_level is None or op_level < min_level:
                break
            if op_level == _COMPARE_LEVEL and level == _COMPARE_LEVEL:
                raise self._error(
                    f"comparisons cannot be chained: '{token.value}'", token.position, "; join them with 'and'"
                )
            self._next()
            right = self._expression(op_level + 1)
            if level is not None and op_level != level:
                # A looser operator: what was built so far is its left operand.
                first, steps = _Chain(first, steps), []
            level = op_level
            left_type = steps[-1].type if steps else first.type
            operator = token.value.lower()
            steps.append(_Step(operator, token.position, right, left_type, self._binary_type(token, left_type, right)))
        return _Chain(first, steps) if steps else first

    def _prefix(self) -> _Node:
        token = self._next()
        if token.kind == "op" and token.value == "(":
            self._enter(token)
            node = self._expression(0)
            self._expect(")", "')'")
            self.depth -= 1
            return node
        if token.kind == "op" and token.value == "-":
            self._enter(token)
            operand = self._expression(_UNARY_LEVEL)
            self.depth -= 1
            self._check(operand, NUMBER, f"'-' at {_where(self.text, token.position)}", token.position)
            return _Negate(operand, token.position)
        if token.kind == "number":
            return _Literal(float(token.value), NUMBER, token.position)
        if token.kind == "string":
            return _Literal(token.value, TEXT, token.position)
        if token.kind == "column":
            return _Column(token.value, token.position)
        if token.kind == "name":
            word = token.value.lower()
            if word == "not":
                self._enter(token)
                operand = self._expression(_NOT_LEVEL)
                self.depth -= 1
                self._check(operand, BOOL, f"'not' at {_where(self.text, token.position)}", token.position)
                return _Not(operand, token.position)
            if word in ("true", "false"):
                return _Literal(word == "true", BOOL, token.position)
            if word == "null":
                return _Literal(None, NULL, token.position)
            if word in _KEYWORDS:
                raise self._error(f"expected a value, found '{token.value}'", token.position)
            nxt = self._peek()
            if nxt.kind == "op" and nxt.value == "(":
                return self._call(token)
            return _Column(token.value, token.position)
        raise self._error(f"expected a value, found {token.describe()}", token.position)

    def _call(self, name_token: _Token) -> _Node:
        name = name_token.value.lower()
        function = FUNCTIONS.get(name)
        if function is None:
            close = difflib.get_close_matches(name, FUNCTIONS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; the functions are {', '.join(sorted(FUNCTIONS))}"
            raise self._error(f"unknown function '{name_token.value}'", name_token.position, hint)
        self._enter(self._next())  # the "("
        args: list[_Node] = []
        if not (self._peek().kind == "op" and self._peek().value == ")"):
            while True:
                args.append(self._expression(0))
                token = self._next()
                if token.kind == "op" and token.value == ")":
                    break
                if not (token.kind == "op" and token.value == ","):
                    raise self._error("expected ',' or ')'", token.position, f", found {token.describe()}")
        else:
            self._next()
        self.depth -= 1
        most = None if function.variadic else len(function.params)
        if len(args) < function.required or (most is not None and len(args) > most):
            raise ExpressionError(
                f"'{name}' at {_where(self.text, name_token.position)} {function.arity()}, not {len(args)}",
                name_token.position,
            )
        return self._typed_call(name, function, args, name_token.position)

    # -- types

    def _check(self, node: _Node, wanted: str, what: str, position: int) -> None:
        """Raise unless `node` can stand where `wanted` is needed (null always can)."""
        if node.type in (wanted, NULL):
            return
        hint = _hint(wanted, node.type)
        raise ExpressionError(f"{what} needs {_TYPE_WORDS[wanted]}, not {_TYPE_WORDS[node.type]}{hint}", position)

    def _binary_type(self, token: _Token, left: str, right_node: _Node) -> str:
        """The type of `left <operator> right`, or the error that explains why there is none."""
        operator, right = token.value.lower(), right_node.type
        what = f"'{token.value}' at {_where(self.text, token.position)}"

        def error(message: str, hint: str = "") -> ExpressionError:
            return ExpressionError(f"{what} {message}{hint}", token.position)

        if operator in ("and", "or"):
            for side, kind in (("left", left), ("right", right)):
                if kind not in (BOOL, NULL):
                    raise error(
                        f"needs true/false on both sides, but its {side} side is {_TYPE_WORDS[kind]}", _BOOL_HINT
                    )
            return BOOL
        if operator in _COMPARISONS:
            kinds = {left, right} - {NULL}
            if len(kinds) > 1:
                hint = "; convert the text with number(...)" if kinds == {TEXT, NUMBER} else ""
                raise error(f"compares {_TYPE_WORDS[left]} with {_TYPE_WORDS[right]}", hint)
            if kinds == {BOOL} and operator not in ("==", "!="):
                raise error("cannot order true/false values")
            return BOOL
        if operator == "+" and TEXT in (left, right):
            if {left, right} <= {TEXT, NULL}:
                return TEXT
            other = right if left == TEXT else left
            raise error(f"mixes text and {_TYPE_WORDS[other]}", "; use number(...) to add, or concat(...) to join")
        for side, kind in (("left", left), ("right", right)):
            if kind not in (NUMBER, NULL):
                raise error(f"needs numbers, but its {side} side is {_TYPE_WORDS[kind]}", _hint(NUMBER, kind))
        return NULL if left == right == NULL and operator == "+" else NUMBER

    def _typed_call(self, name: str, function: _Function, args: list[_Node], position: int) -> _Node:
        kinds = [function.params[min(i, len(function.params) - 1)] for i in range(len(args))]
        unified = _unify([a.type for a, k in zip(args, kinds, strict=True) if k == "any"])
        if name == "number" and args[0].type in (NUMBER, NULL):
            return _as(args[0], NUMBER)  # already a number: nothing to parse
        if name == "is_empty":
            unified = args[0].type  # looks at its argument as it is
        resolved: list[_Node | Any] = []
        for i, (arg, kind) in enumerate(zip(args, kinds, strict=True)):
            what = f"argument {i + 1} of '{name}' at {_where(self.text, arg.position)}"
            if kind == "text":
                resolved.append(_as(arg, TEXT))
            elif kind in ("number", "bool"):
                wanted = NUMBER if kind == "number" else BOOL
                self._check(arg, wanted, what, arg.position)
                resolved.append(_as(arg, wanted))
            elif kind == "any":
                resolved.append(_as(arg, unified))
            else:
                resolved.append(self._constant(name, i, arg, kind, what))
        result = function.result or unified
        return _Call(name, function, resolved, result, position)

    def _constant(self, name: str, index: int, arg: _Node, kind: str, what: str) -> Any:
        """A fixed argument (a length, a separator), worked out once now."""
        wanted = "a fixed whole number" if kind == "int" else "fixed text"
        if arg.columns:
            raise ExpressionError(
                f"{what} must be {wanted}; it cannot depend on a column ({', '.join(sorted(arg.columns))})",
                arg.position,
            )
        ctx = _Context(None, 1)
        if kind in ("const", "pattern"):
            if arg.type not in (TEXT, NUMBER, NULL):
                raise ExpressionError(f"{what} must be {wanted}, not {_TYPE_WORDS[arg.type]}", arg.position)
            text = _convert(arg.evaluate(ctx), arg.type, TEXT, 1)[0].as_py()
            if kind == "pattern" and not text:  # "" would match between every two characters
                raise ExpressionError(f"{what} must not be empty", arg.position)
            return text
        if arg.type != NUMBER:
            raise ExpressionError(f"{what} must be {wanted}, not {_TYPE_WORDS[arg.type]}", arg.position)
        number = float(arg.evaluate(ctx)[0])
        if not np.isfinite(number) or number != int(number):
            raise ExpressionError(f"{what} must be {wanted}", arg.position)
        value = int(number)
        low, high, meaning = _INT_LIMITS[(name, index)]
        if (low is not None and value < low) or (high is not None and value > high) or (name == "split" and not value):
            if name == "split":
                allowed = "1 or more, or -1 or less"
            elif high is None:
                allowed = f"{low} or more"
            else:
                allowed = f"from {low} to {high}"
            raise ExpressionError(f"{what} is {meaning}: it must be {allowed}, not {value}", arg.position)
        return value


# ---------------------------------------------------------------- the public face


class Expression:
    """A compiled expression: which columns it reads, and its value for each row of a frame."""

    def __init__(self, text: str, root: _Node) -> None:
        self.text = text
        self._root = root

    @property
    def columns(self) -> set[str]:
        """The source columns the expression reads."""
        return set(self._root.columns)

    @property
    def type(self) -> str:
        """What the expression computes before it becomes text: "text", "number", "boolean" or "null"."""
        return self._root.type

    def evaluate(self, frame: pd.DataFrame) -> pd.Series:
        """One text value per row of `frame` (same index), "" for empty.

        Raises `ExpressionError` when a column the expression reads is not in `frame`.
        """
        missing = sorted(c for c in self._root.columns if c not in frame.columns)
        if missing:
            available = [str(c) for c in frame.columns]
            close = difflib.get_close_matches(missing[0], available, n=1)
            names = ", ".join(repr(m) for m in missing)
            plural = "s" if len(missing) > 1 else ""
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ExpressionError(
                f"the expression reads column{plural} {names}, which the data does not have{hint}; "
                f"the columns are {available}"
            )
        ctx = _Context(frame, len(frame))
        value = _convert(self._root.evaluate(ctx), self._root.type, TEXT, ctx.n)
        return pd.Series(_arrow(value), dtype="str", index=frame.index)

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"


def compile_expression(text: str) -> Expression:
    """Parse and type-check `text`; raises `ExpressionError` with the position of the first problem."""
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be text, not {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"the expression is {len(text)} characters long; the limit is {MAX_LENGTH}")
    if not text.strip():
        raise ExpressionError("the expression is empty")
    return Expression(text, _Parser(text).parse())
