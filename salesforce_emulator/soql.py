"""A SOQL subset compiled to parameterised SQLite SQL.

The emulator stores one SQLite table per sObject (see the storage contract in the
project docs), so a SOQL query is answered by compiling it to one SQL statement.
Only a well-defined subset of SOQL is understood; anything outside it raises
SoqlError("MALFORMED_QUERY", ...) naming the offending token, because a loud error
is better than an emulator that silently returns a different answer than Salesforce.

Semantics worth knowing (they follow Salesforce, not SQL):

* SOQL has two-valued logic: a comparison with a NULL field value is simply false,
  so ``Industry != 'Banking'`` and ``Industry NOT IN (...)`` *include* records whose
  Industry is null, and ``NOT (...)`` is plain negation.
* Text comparisons, LIKE and ORDER BY on text are case-insensitive (ASCII folding, as
  SQLite's NOCASE and LIKE do; non-ASCII letters compare case-sensitively).
* Picklists sort by their defined value order, nulls sort first unless NULLS LAST.
* A boolean is never null: ``= null`` means false and ``!= null`` means true.
* Date literals like TODAY are day ranges in UTC; on datetime fields they compare
  against UTC day boundaries.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .ids import to_18 as normalize_id
from .schema import NUMBER_TYPES, TEXT_TYPES, FieldDef, ObjectDef, OrgSchema

__all__ = [
    "ERROR_CODES",
    "CompiledQuery",
    "SelectColumn",
    "SoqlError",
    "compile_query",
    "csv_header",
    "csv_row",
    "normalize_id",
    "record_json",
]

ERROR_CODES = frozenset({"MALFORMED_QUERY", "INVALID_FIELD", "INVALID_TYPE", "NUMBER_OUTSIDE_VALID_RANGE"})
MAX_OFFSET = 2000


class SoqlError(Exception):
    """A query Salesforce would reject; error_code is the Salesforce errorCode to report."""

    def __init__(self, error_code: str, message: str) -> None:
        if error_code not in ERROR_CODES:
            raise ValueError(f"unknown SOQL error code {error_code!r}")
        super().__init__(message)
        self.error_code = error_code
        self.message = message

    def __str__(self) -> str:
        return f"{self.error_code}: {self.message}"


# ---------------------------------------------------------------- tokenizer

_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER_RE = re.compile(r"[+-]?\d+(?:\.\d+)?")
_DATE_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_TIME_RE = re.compile(r"T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,3}))?(Z|[+-]\d{2}:?\d{2})?")
_OPERATORS = ("!=", "<>", "<=", ">=", "=", "<", ">")
_PUNCTUATION = "(),.:"
# Characters after \ in a SOQL string literal, and what they stand for (\N works like \n).
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "'": "'", "\\": "\\"}


@dataclass(frozen=True)
class _Token:
    """One lexical token; pos is the 0-based offset into the query, for error messages."""

    kind: str  # IDENT, STRING, NUMBER, DATE, DATETIME, OP, PUNCT, EOF
    text: str
    pos: int
    value: Any = None


def _where(pos: int) -> str:
    return f"at column {pos + 1}"


def _malformed(tok: _Token, detail: str | None = None) -> SoqlError:
    shown = "end of query" if tok.kind == "EOF" else f"'{tok.text}'"
    message = f"unexpected token: {shown} {_where(tok.pos)}"
    return SoqlError("MALFORMED_QUERY", f"{message}: {detail}" if detail else message)


def _lex_string(text: str, start: int) -> tuple[_Token, int]:
    """Read a quoted literal; returns its decoded value and its SQLite LIKE pattern.

    The two differ only for \\% and \\_ (a literal % or _ in LIKE), so both are built in one
    pass; the LIKE pattern uses backslash as its ESCAPE character.
    """
    quote = text[start]
    value: list[str] = []
    pattern: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == quote:
            tok = _Token("STRING", text[start : i + 1], start, ("".join(value), "".join(pattern)))
            return tok, i + 1
        if ch == "\\":
            if i + 1 >= len(text):
                break
            esc = text[i + 1]
            if esc in "%_":
                value.append(esc)
                pattern.append("\\" + esc)
            elif (decoded := _ESCAPES.get(esc) or _ESCAPES.get(esc.lower())) is not None:
                value.append(decoded)
                pattern.append("\\\\" if decoded == "\\" else decoded)
            else:
                raise SoqlError(
                    "MALFORMED_QUERY",
                    f"Invalid string literal '{text[start : i + 2]}' {_where(i)}: illegal escape sequence '\\{esc}'",
                )
            i += 2
            continue
        value.append(ch)
        pattern.append(ch)
        i += 1
    raise SoqlError("MALFORMED_QUERY", f"unterminated string literal {text[start : start + 20]!r} {_where(start)}")


def _lex_date(text: str, start: int) -> tuple[_Token, int] | None:
    """Read a date (YYYY-MM-DD) or datetime literal; None when the text is not one."""
    date_match = _DATE_RE.match(text, start)
    if not date_match:
        return None
    end = date_match.end()
    if end < len(text) and text[end] == "T":
        time_match = _TIME_RE.match(text, end)
        if not time_match or not time_match.group(5):
            bad_end = end
            while bad_end < len(text) and not text[bad_end].isspace() and text[bad_end] not in "(),":
                bad_end += 1
            bad = text[start:bad_end]
            raise SoqlError(
                "MALFORMED_QUERY",
                f"invalid datetime literal '{bad}' {_where(start)}: use YYYY-MM-DDThh:mm:ss(.sss)?(Z|+hh:mm|-hh:mm)",
            )
        end = time_match.end()
        raw = text[start:end]
        year, month, day = (int(g) for g in date_match.groups())
        hour, minute, second = (int(g) for g in time_match.groups()[:3])
        millis = int((time_match.group(4) or "0").ljust(3, "0"))
        zone = time_match.group(5)
        try:
            if zone == "Z":
                tz = dt.UTC
            else:
                sign = -1 if zone[0] == "-" else 1
                digits = zone[1:].replace(":", "")
                tz = dt.timezone(sign * dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
            moment = dt.datetime(year, month, day, hour, minute, second, millis * 1000, tzinfo=tz)
            utc = moment.astimezone(dt.UTC)
        except (ValueError, OverflowError) as exc:
            raise SoqlError("MALFORMED_QUERY", f"invalid datetime literal '{raw}' {_where(start)}: {exc}") from exc
        value = utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}+0000"
        tok = _Token("DATETIME", raw, start, value)
    else:
        raw = text[start:end]
        try:
            value_date = dt.date(*(int(g) for g in date_match.groups()))
        except ValueError as exc:
            raise SoqlError("MALFORMED_QUERY", f"invalid date literal '{raw}' {_where(start)}: {exc}") from exc
        tok = _Token("DATE", raw, start, value_date.isoformat())
    if end < len(text) and (text[end].isalnum() or text[end] in "_.:"):
        raise SoqlError("MALFORMED_QUERY", f"invalid date literal '{text[start : end + 1]}' {_where(start)}")
    return tok, end


def _tokenize(text: str) -> list[_Token]:
    """Split a query into tokens; keywords stay IDENT tokens and the parser decides by context."""
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch in "'\"":
            tok, i = _lex_string(text, i)
            tokens.append(tok)
            continue
        if ch.isdigit():
            lexed = _lex_date(text, i)
            if lexed:
                tokens.append(lexed[0])
                i = lexed[1]
                continue
        number = _NUMBER_RE.match(text, i)
        if number and (ch.isdigit() or ch in "+-"):
            tokens.append(_Token("NUMBER", number.group(), i))
            i = number.end()
            continue
        ident = _IDENT_RE.match(text, i)
        if ident:
            tokens.append(_Token("IDENT", ident.group(), i))
            i = ident.end()
            continue
        op = next((o for o in _OPERATORS if text.startswith(o, i)), None)
        if op:
            tokens.append(_Token("OP", op, i))
            i += len(op)
            continue
        if ch in _PUNCTUATION:
            tokens.append(_Token("PUNCT", ch, i))
            i += 1
            continue
        raise SoqlError("MALFORMED_QUERY", f"unexpected character '{ch}' {_where(i)}")
    tokens.append(_Token("EOF", "", len(text)))
    return tokens


# ---------------------------------------------------------------- syntax tree


@dataclass
class _FieldRef:
    parts: list[str]
    pos: int


@dataclass
class _Literal:
    kind: str  # string, number, date, datetime, bool, null, relative
    value: Any
    tok: _Token


@dataclass
class _Comparison:
    field: _FieldRef
    op: str  # = != < <= > >= LIKE IN NOT IN
    values: list[_Literal]  # one value, or the IN list
    tok: _Token  # the operator token


@dataclass
class _BoolOp:
    op: str  # AND, OR
    items: list[_Condition]


@dataclass
class _Not:
    item: _Condition


_Condition = _Comparison | _BoolOp | _Not


@dataclass
class _OrderItem:
    field: _FieldRef
    descending: bool
    nulls_first: bool


@dataclass
class _Query:
    is_count: bool
    select: list[_FieldRef]
    sobject: _Token
    where: _Condition | None = None
    order: list[_OrderItem] = field(default_factory=list)
    limit: int | None = None
    offset: int | None = None


# Words that can never be a field or object name (Salesforce's reserved SOQL keywords).
_RESERVED = {
    "AND", "ASC", "DESC", "EXCLUDES", "FIRST", "FROM", "GROUP", "HAVING", "IN", "INCLUDES", "LAST",
    "LIKE", "LIMIT", "NOT", "NULL", "NULLS", "OR", "SELECT", "WHERE", "WITH", "TRUE", "FALSE",
}  # fmt: skip
# Clauses Salesforce has but this emulator does not, for a clearer error than "unexpected token".
_UNSUPPORTED_CLAUSES = {
    "GROUP": "GROUP BY is not supported",
    "HAVING": "HAVING is not supported",
    "WITH": "WITH clauses are not supported",
    "FOR": "FOR VIEW/REFERENCE/UPDATE is not supported",
    "USING": "USING SCOPE is not supported",
    "UPDATE": "UPDATE TRACKING/VIEWSTAT is not supported",
}
_RELATIVE_DAY = {"TODAY": 0, "YESTERDAY": -1, "TOMORROW": 1}
_RELATIVE_N_DAYS = {"LAST_N_DAYS", "NEXT_N_DAYS"}


class _Parser:
    """Recursive-descent parser for the supported subset; every rejection names its token."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.i = 0

    # -- token helpers

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        tok = self.tokens[self.i]
        if tok.kind != "EOF":
            self.i += 1
        return tok

    @staticmethod
    def is_word(tok: _Token, *words: str) -> bool:
        return tok.kind == "IDENT" and tok.text.upper() in words

    @staticmethod
    def is_punct(tok: _Token, ch: str) -> bool:
        return tok.kind == "PUNCT" and tok.text == ch

    def expect_word(self, word: str) -> _Token:
        tok = self.advance()
        if not self.is_word(tok, word):
            raise _malformed(tok, f"expected {word}")
        return tok

    def expect_punct(self, ch: str) -> _Token:
        tok = self.advance()
        if not self.is_punct(tok, ch):
            raise _malformed(tok, f"expected '{ch}'")
        return tok

    def name(self, what: str) -> _Token:
        """An identifier usable as an object, relationship or field name."""
        tok = self.advance()
        if tok.kind != "IDENT" or tok.text.upper() in _RESERVED:
            raise _malformed(tok, f"expected {what}")
        return tok

    # -- grammar

    def parse(self) -> _Query:
        self.expect_word("SELECT")
        is_count, select = self.select_list()
        if self.peek().kind == "EOF":
            raise _malformed(self.peek(), "expected FROM")
        self.expect_word("FROM")
        sobject = self.name("an sObject name")
        if self.is_punct(self.peek(), ","):
            raise _malformed(self.peek(), "only one object can follow FROM")
        query = _Query(is_count=is_count, select=select, sobject=sobject)
        if self.is_word(self.peek(), "WHERE"):
            self.advance()
            query.where = self.condition()
        if self.is_word(self.peek(), "ORDER") and self.is_word(self.peek(1), "BY"):
            self.advance()
            self.advance()
            query.order = self.order_list()
        if self.is_word(self.peek(), "LIMIT"):
            self.advance()
            query.limit = self.count_value("LIMIT")
        if self.is_word(self.peek(), "OFFSET"):
            self.advance()
            query.offset = self.count_value("OFFSET")
        tok = self.peek()
        if tok.kind != "EOF":
            detail = _UNSUPPORTED_CLAUSES.get(tok.text.upper()) if tok.kind == "IDENT" else None
            raise _malformed(tok, detail)
        return query

    def select_list(self) -> tuple[bool, list[_FieldRef]]:
        if self.is_word(self.peek(), "COUNT") and self.is_punct(self.peek(1), "("):
            count_tok = self.advance()
            self.advance()
            if not self.is_punct(self.peek(), ")"):
                raise _malformed(self.peek(), "only COUNT() without a field is supported")
            self.advance()
            if self.is_punct(self.peek(), ","):
                raise _malformed(count_tok, "COUNT() must be the only item in the SELECT list")
            return True, []
        items = [self.select_item()]
        while self.is_punct(self.peek(), ","):
            self.advance()
            items.append(self.select_item())
        return False, items

    def select_item(self) -> _FieldRef:
        tok = self.peek()
        if self.is_punct(tok, "("):
            raise _malformed(tok, "subqueries are not supported")
        if self.is_word(tok, "TYPEOF"):
            raise _malformed(tok, "TYPEOF is not supported")
        return self.field_path()

    def field_path(self) -> _FieldRef:
        tok = self.peek()
        if tok.kind == "IDENT" and self.is_punct(self.peek(1), "("):
            if tok.text.upper() == "COUNT":
                raise _malformed(tok, "COUNT() must be the only item in the SELECT list and takes no field")
            raise _malformed(tok, f"function {tok.text}() is not supported")
        first = self.name("a field name")
        parts = [first.text]
        while self.is_punct(self.peek(), "."):
            self.advance()
            parts.append(self.name("a field name").text)
        return _FieldRef(parts, first.pos)

    def condition(self) -> _Condition:
        """AND/OR chain; like Salesforce, mixing AND and OR needs parentheses."""
        first = self.unary()
        tok = self.peek()
        if not self.is_word(tok, "AND", "OR"):
            return first
        op = tok.text.upper()
        items = [first]
        while self.is_word(self.peek(), op):
            self.advance()
            items.append(self.unary())
        other = self.peek()
        if self.is_word(other, "AND", "OR"):
            raise _malformed(other, "use parentheses when mixing AND and OR")
        return _BoolOp(op, items)

    def unary(self) -> _Condition:
        tok = self.peek()
        if self.is_word(tok, "NOT"):
            self.advance()
            return _Not(self.unary())
        if self.is_punct(tok, "("):
            self.advance()
            inner = self.condition()
            self.expect_punct(")")
            return inner
        return self.comparison()

    def comparison(self) -> _Comparison:
        fref = self.field_path()
        tok = self.advance()
        if tok.kind == "OP":
            return _Comparison(fref, "!=" if tok.text == "<>" else tok.text, [self.value()], tok)
        if self.is_word(tok, "LIKE"):
            return _Comparison(fref, "LIKE", [self.value()], tok)
        if self.is_word(tok, "IN"):
            return _Comparison(fref, "IN", self.value_list(), tok)
        if self.is_word(tok, "NOT") and self.is_word(self.peek(), "IN"):
            self.advance()
            return _Comparison(fref, "NOT IN", self.value_list(), tok)
        if self.is_word(tok, "INCLUDES", "EXCLUDES"):
            raise _malformed(tok, "INCLUDES/EXCLUDES (multi-select picklists) are not supported")
        raise _malformed(tok, "expected a comparison operator")

    def value_list(self) -> list[_Literal]:
        self.expect_punct("(")
        if self.is_word(self.peek(), "SELECT"):
            raise _malformed(self.peek(), "semi-join and anti-join subqueries are not supported")
        values = [self.value()]
        while self.is_punct(self.peek(), ","):
            self.advance()
            values.append(self.value())
        self.expect_punct(")")
        return values

    def value(self) -> _Literal:
        tok = self.advance()
        if tok.kind == "STRING":
            return _Literal("string", tok.value, tok)
        if tok.kind == "NUMBER":
            number: int | float = float(tok.text) if "." in tok.text else int(tok.text)
            return _Literal("number", number, tok)
        if tok.kind == "DATE":
            return _Literal("date", tok.value, tok)
        if tok.kind == "DATETIME":
            return _Literal("datetime", tok.value, tok)
        if self.is_punct(tok, ":"):
            raise _malformed(tok, "bind variables are not supported")
        if tok.kind != "IDENT":
            raise _malformed(tok, "expected a value")
        word = tok.text.upper()
        if word in ("TRUE", "FALSE"):
            return _Literal("bool", word == "TRUE", tok)
        if word == "NULL":
            return _Literal("null", None, tok)
        if word in _RELATIVE_DAY:
            return _Literal("relative", (_RELATIVE_DAY[word], _RELATIVE_DAY[word] + 1), tok)
        if word in _RELATIVE_N_DAYS:
            self.expect_punct(":")
            n_tok = self.advance()
            if n_tok.kind != "NUMBER" or not n_tok.text.isdigit():
                raise _malformed(n_tok, f"{word} needs a whole number of days")
            n = int(n_tok.text)
            # LAST_N_DAYS:n covers today and the n days before; NEXT_N_DAYS:n the n days after today.
            span = (-n, 1) if word == "LAST_N_DAYS" else (1, n + 1)
            return _Literal("relative", span, tok)
        if word.startswith(("THIS_", "LAST_", "NEXT_", "N_")):
            raise _malformed(tok, f"date literal {tok.text} is not supported")
        if self.is_punct(self.peek(), "("):
            raise _malformed(tok, f"function {tok.text}() is not supported")
        raise _malformed(tok, "expected a value; field-to-field comparisons are not supported")

    def order_list(self) -> list[_OrderItem]:
        items = [self.order_item()]
        while self.is_punct(self.peek(), ","):
            self.advance()
            items.append(self.order_item())
        return items

    def order_item(self) -> _OrderItem:
        fref = self.field_path()
        descending = False
        if self.is_word(self.peek(), "ASC", "DESC"):
            descending = self.advance().text.upper() == "DESC"
        nulls_first = True  # Salesforce's documented default, for both directions
        if self.is_word(self.peek(), "NULLS"):
            self.advance()
            tok = self.advance()
            if not self.is_word(tok, "FIRST", "LAST"):
                raise _malformed(tok, "expected FIRST or LAST")
            nulls_first = tok.text.upper() == "FIRST"
        return _OrderItem(fref, descending, nulls_first)

    def count_value(self, clause: str) -> int:
        tok = self.advance()
        if tok.kind != "NUMBER" or not tok.text.isdigit():
            raise _malformed(tok, f"{clause} needs a non-negative whole number")
        return int(tok.text)


# ---------------------------------------------------------------- compiled query


@dataclass(frozen=True)
class SelectColumn:
    """One SELECT item: its canonical path, the field, and the sObjects along the path.

    For ``Account.Name`` selected from Contact: path=("Account", "Name"),
    objects=("Contact", "Account"), field=Account's Name FieldDef.
    """

    path: tuple[str, ...]
    field: FieldDef
    objects: tuple[str, ...]

    @property
    def name(self) -> str:
        """The dotted name used by Bulk CSV headers, e.g. "Account.Name"."""
        return ".".join(self.path)


@dataclass
class _JsonNode:
    """One record level in the REST JSON: its own fields and nested parent records."""

    sobject: str
    id_index: int
    items: list[tuple[str, int, FieldDef] | tuple[str, _JsonNode]] = field(default_factory=list)
    children: dict[str, _JsonNode] = field(default_factory=dict)


@dataclass
class CompiledQuery:
    """A compiled query: run ``sql`` with ``params``; each row is the SELECT columns in order,
    then the base record's Id, then one Id per parent relationship in the SELECT (so parent
    records can be rendered as null and every record gets its attributes url)."""

    sobject: str
    sql: str
    params: list
    is_count: bool
    columns: list[SelectColumn]
    id_index: int = 0
    _layout: _JsonNode | None = field(default=None, repr=False)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_SOQL_TYPE_NAMES = {
    "id": "id", "reference": "id", "boolean": "boolean", "int": "integer", "double": "double",
    "currency": "currency", "percent": "percent", "date": "date", "datetime": "dateTime",
}  # fmt: skip
_NOCASE_TYPES = TEXT_TYPES - {"id", "reference"}
_ID_TYPES = {"id", "reference"}


@dataclass
class _Resolved:
    """A field path resolved against the schema, with the SQL expression that reads it."""

    column: SelectColumn
    expr: str
    rel_key: tuple[str, ...]  # canonical relationship names leading to the field

    @property
    def fdef(self) -> FieldDef:
        return self.column.field


class _Compiler:
    """Turns a parsed query into SQL, resolving names and checking types along the way."""

    def __init__(self, schema: OrgSchema, base: ObjectDef, today: dt.date) -> None:
        self.schema = schema
        self.base = base
        self.today = today
        self.aliases: dict[tuple[str, ...], str] = {(): "t0"}
        self.joins: list[str] = []

    # -- names

    def resolve(self, fref: _FieldRef) -> _Resolved:
        obj = self.base
        alias = "t0"
        rel_key: tuple[str, ...] = ()
        objects = [obj.name]
        for part in fref.parts[:-1]:
            ref = obj.relationship(part)
            if ref is None or ref.relationship_name is None:
                raise SoqlError(
                    "INVALID_FIELD",
                    f"Didn't understand relationship '{part}' in field path. If you are attempting to use a custom "
                    "relationship, be sure to append the '__r' after the custom relationship name. Please reference "
                    "your WSDL or the describe call for the appropriate names.",
                )
            if len(ref.reference_to) != 1:
                raise SoqlError(
                    "MALFORMED_QUERY", f"polymorphic relationship '{part}' is not supported {_where(fref.pos)}"
                )
            target = self.schema.get(ref.reference_to[0])
            if target is None:
                raise SoqlError("INVALID_TYPE", f"sObject type '{ref.reference_to[0]}' is not supported.")
            rel_key = (*rel_key, ref.relationship_name)
            alias = self.join(rel_key, alias, ref, target)
            objects.append(target.name)
            obj = target
        fdef = obj.field(fref.parts[-1])
        if fdef is None:
            raise SoqlError(
                "INVALID_FIELD",
                f"No such column '{fref.parts[-1]}' on entity '{obj.name}'. If you are attempting to use a custom "
                "field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the "
                "describe call for the appropriate names.",
            )
        column = SelectColumn((*rel_key, fdef.name), fdef, tuple(objects))
        return _Resolved(column, f"{_quote(alias)}.{_quote(fdef.name)}", rel_key)

    def join(self, rel_key: tuple[str, ...], from_alias: str, ref: FieldDef, target: ObjectDef) -> str:
        """LEFT JOIN the parent once per relationship path, so a missing parent reads as NULL."""
        alias = self.aliases.get(rel_key)
        if alias is None:
            alias = f"t{len(self.aliases)}"
            self.aliases[rel_key] = alias
            self.joins.append(
                f"LEFT JOIN {_quote(target.name)} AS {_quote(alias)} "
                f"ON {_quote(alias)}.{_quote('Id')} = {_quote(from_alias)}.{_quote(ref.name)}"
            )
        return alias

    # -- WHERE

    def condition(self, cond: _Condition, params: list) -> str:
        if isinstance(cond, _BoolOp):
            return "(" + f" {cond.op} ".join(self.condition(item, params) for item in cond.items) + ")"
        if isinstance(cond, _Not):
            return f"(NOT {self.condition(cond.item, params)})"
        return self.comparison(cond, params)

    def comparison(self, cmp: _Comparison, params: list) -> str:
        res = self.resolve(cmp.field)
        fdef = res.fdef
        if fdef.type == "textarea":
            raise SoqlError(
                "INVALID_FIELD",
                f"field '{fdef.name}' can not be filtered in a query call {_where(cmp.field.pos)}",
            )
        if cmp.op == "LIKE":
            return self.like(res, cmp, params)
        if cmp.op in ("IN", "NOT IN"):
            positive = self.in_list(res, cmp, params)
            return f"(NOT {positive})" if cmp.op == "NOT IN" else positive
        literal = cmp.values[0]
        if literal.kind == "null":
            return self.null_test(res, cmp.op, literal)
        if fdef.type == "boolean" and cmp.op not in ("=", "!="):
            raise SoqlError(
                "INVALID_FIELD",
                f"invalid operator '{cmp.tok.text}' on boolean field '{fdef.name}' {_where(cmp.tok.pos)}",
            )
        value = self.coerce(res, literal)
        if isinstance(value, _DayRange):
            return self.range_test(res.expr, cmp.op, value, params)
        if cmp.op == "!=":
            params.append(value)
            return f"({res.expr} IS NULL OR {res.expr} <> ?{self.collate(fdef)})"
        params.append(value)
        return f"({res.expr} IS NOT NULL AND {res.expr} {cmp.op} ?{self.collate(fdef)})"

    @staticmethod
    def collate(fdef: FieldDef) -> str:
        return " COLLATE NOCASE" if fdef.type in _NOCASE_TYPES else ""

    def null_test(self, res: _Resolved, op: str, literal: _Literal) -> str:
        if op not in ("=", "!="):
            raise _malformed(literal.tok, f"null can only be compared with = or != (not '{op}')")
        if res.fdef.type == "boolean":
            # Salesforce: a boolean is never null; "= null" means false and "!= null" means true.
            return f"({res.expr} = {0 if op == '=' else 1})"
        return f"({res.expr} IS {'' if op == '=' else 'NOT '}NULL)"

    def like(self, res: _Resolved, cmp: _Comparison, params: list) -> str:
        fdef = res.fdef
        if fdef.type not in _NOCASE_TYPES:
            raise SoqlError(
                "INVALID_FIELD",
                f"invalid operator LIKE on {_SOQL_TYPE_NAMES.get(fdef.type, fdef.type)} field '{fdef.name}' "
                f"{_where(cmp.tok.pos)}",
            )
        literal = cmp.values[0]
        if literal.kind != "string":
            raise _malformed(literal.tok, "LIKE needs a quoted string pattern")
        params.append(literal.value[1])
        # LOWER on both sides keeps LIKE case-insensitive even if PRAGMA case_sensitive_like is on.
        return f"({res.expr} IS NOT NULL AND LOWER({res.expr}) LIKE LOWER(?) ESCAPE '\\')"

    def in_list(self, res: _Resolved, cmp: _Comparison, params: list) -> str:
        fdef = res.fdef
        tests: list[str] = []
        plain: list[Any] = []
        ranges: list[_DayRange] = []
        for literal in cmp.values:
            if literal.kind == "null":
                tests.append(self.null_test(res, "=", literal))
                continue
            value = self.coerce(res, literal)
            if isinstance(value, _DayRange):
                ranges.append(value)
            else:
                plain.append(value)
        if plain:
            marks = ", ".join("?" for _ in plain)
            params.extend(plain)
            tests.append(f"({res.expr} IS NOT NULL AND {res.expr}{self.collate(fdef)} IN ({marks}))")
        for day_range in ranges:
            tests.append(self.range_test(res.expr, "=", day_range, params))
        return "(" + " OR ".join(tests) + ")"

    def range_test(self, expr: str, op: str, day_range: _DayRange, params: list) -> str:
        """A relative date literal is a [start, end) range; operators compare against its ends."""
        start, end = day_range.start, day_range.end
        if op == "=":
            params.extend([start, end])
            return f"({expr} IS NOT NULL AND {expr} >= ? AND {expr} < ?)"
        if op == "!=":
            params.extend([start, end])
            return f"({expr} IS NULL OR {expr} < ? OR {expr} >= ?)"
        bound, sql_op = {"<": (start, "<"), "<=": (end, "<"), ">": (end, ">="), ">=": (start, ">=")}[op]
        params.append(bound)
        return f"({expr} IS NOT NULL AND {expr} {sql_op} ?)"

    def coerce(self, res: _Resolved, literal: _Literal) -> Any:
        """The SQL parameter for `literal` compared with the field, or SoqlError on a type mismatch."""
        fdef = res.fdef
        ftype = fdef.type
        kind = literal.kind
        type_name = _SOQL_TYPE_NAMES.get(ftype, "string")

        def mismatch() -> SoqlError:
            quoted = "should be enclosed in quotes" if ftype in TEXT_TYPES else "should not be enclosed in quotes"
            return SoqlError(
                "INVALID_FIELD",
                f"value of filter criterion for field '{fdef.name}' must be of type {type_name} and {quoted}: "
                f"got {literal.tok.text} {_where(literal.tok.pos)}",
            )

        if ftype in _ID_TYPES:
            if kind != "string":
                raise mismatch()
            canonical = normalize_id(literal.value[0])
            if canonical is None:
                raise SoqlError("INVALID_FIELD", f"invalid ID field: {literal.value[0]} {_where(literal.tok.pos)}")
            return canonical
        if ftype in TEXT_TYPES:
            if kind != "string":
                raise mismatch()
            return literal.value[0]
        if ftype == "boolean":
            if kind != "bool":
                raise mismatch()
            return 1 if literal.value else 0
        if ftype in NUMBER_TYPES:
            if kind != "number":
                raise mismatch()
            return literal.value
        if ftype == "date":
            if kind == "date":
                return literal.value
            if kind == "relative":
                return self.day_range(literal, as_datetime=False)
            raise mismatch()
        if ftype == "datetime":
            if kind == "datetime":
                return literal.value
            if kind == "relative":
                return self.day_range(literal, as_datetime=True)
            raise mismatch()
        raise SoqlError("INVALID_FIELD", f"field '{fdef.name}' of type {ftype} can not be filtered")

    def day_range(self, literal: _Literal, as_datetime: bool) -> _DayRange:
        first, last = literal.value
        try:
            start = self.today + dt.timedelta(days=first)
            end = self.today + dt.timedelta(days=last)
        except OverflowError as exc:
            raise SoqlError(
                "MALFORMED_QUERY", f"date literal '{literal.tok.text}' is out of range {_where(literal.tok.pos)}"
            ) from exc
        if as_datetime:
            return _DayRange(f"{start.isoformat()}T00:00:00.000+0000", f"{end.isoformat()}T00:00:00.000+0000")
        return _DayRange(start.isoformat(), end.isoformat())

    # -- ORDER BY

    def order_terms(self, items: list[_OrderItem], params: list) -> list[str]:
        terms: list[str] = []
        for item in items:
            res = self.resolve(item.field)
            fdef = res.fdef
            if fdef.type == "textarea":
                raise SoqlError(
                    "INVALID_FIELD",
                    f"field '{fdef.name}' can not be sorted in a query call {_where(item.field.pos)}",
                )
            direction = "DESC" if item.descending else "ASC"
            nulls = "NULLS FIRST" if item.nulls_first else "NULLS LAST"
            if fdef.type == "picklist" and fdef.picklist_values:
                # Salesforce sorts picklists by their defined value order; unknown values go after.
                whens = " ".join(
                    f"WHEN {res.expr} = ? COLLATE NOCASE THEN {n}" for n in range(len(fdef.picklist_values))
                )
                params.extend(fdef.picklist_values)
                position = f"CASE WHEN {res.expr} IS NULL THEN NULL {whens} ELSE {len(fdef.picklist_values)} END"
                terms.append(f"{position} {direction} {nulls}")
            terms.append(f"{res.expr}{self.collate(fdef)} {direction} {nulls}")
        return terms


@dataclass(frozen=True)
class _DayRange:
    """A relative date literal as a half-open [start, end) range of stored values."""

    start: str
    end: str


def _build_layout(columns: list[SelectColumn], base: str, first_id_index: int) -> tuple[_JsonNode, list[tuple]]:
    """Nest SELECT columns by relationship, in first-appearance order, as the REST API does.

    Returns the root node and the relationship paths that need a hidden Id column, in the
    order those columns are appended to the SQL select list.
    """
    root = _JsonNode(base, first_id_index)
    hidden: list[tuple] = []
    for index, col in enumerate(columns):
        node = root
        for depth, rel in enumerate(col.path[:-1]):
            child = node.children.get(rel)
            if child is None:
                child = _JsonNode(col.objects[depth + 1], first_id_index + 1 + len(hidden))
                hidden.append(col.path[: depth + 1])
                node.children[rel] = child
                node.items.append((rel, child))
            node = child
        node.items.append((col.field.name, index, col.field))
    return root, hidden


def compile_query(
    soql: str, schema: OrgSchema, include_deleted: bool = False, today: dt.date | None = None
) -> CompiledQuery:
    """Compile `soql` for the storage contract; raises SoqlError for anything outside the subset.

    `today` anchors TODAY/LAST_N_DAYS etc. (default: the current UTC date), and
    include_deleted=True is queryAll (recycle-bin rows included).
    """
    query = _Parser(soql).parse()
    base = schema.get(query.sobject.text)
    if base is None:
        raise SoqlError("INVALID_TYPE", f"sObject type '{query.sobject.text}' is not supported.")
    if today is None:
        today = dt.datetime.now(dt.UTC).date()
    compiler = _Compiler(schema, base, today)

    columns: list[SelectColumn] = []
    select_exprs: list[str] = []
    seen: set[str] = set()
    for fref in query.select:
        res = compiler.resolve(fref)
        key = res.column.name.lower()
        if key in seen:
            raise SoqlError("MALFORMED_QUERY", f"duplicate field selected: {res.column.name} {_where(fref.pos)}")
        seen.add(key)
        columns.append(res.column)
        select_exprs.append(res.expr)

    where_params: list = []
    filters = [] if include_deleted else [f'"t0".{_quote("IsDeleted")} = 0']
    if query.where is not None:
        filters.append(compiler.condition(query.where, where_params))

    order_params: list = []
    if query.order and query.is_count:
        raise SoqlError("MALFORMED_QUERY", "ORDER BY is not supported with COUNT()")
    order_terms = compiler.order_terms(query.order, order_params)
    order_terms.append('"t0".rowid')  # insertion order: the default, and the tie-breaker for stable paging

    if query.offset is not None and query.offset > MAX_OFFSET:
        raise SoqlError("NUMBER_OUTSIDE_VALID_RANGE", f"Maximum SOQL offset allowed is {MAX_OFFSET}")
    page_sql = ""
    page_params: list = []
    if query.limit is not None or query.offset is not None:
        page_sql = " LIMIT ? OFFSET ?"
        page_params = [query.limit if query.limit is not None else -1, query.offset or 0]

    from_sql = " ".join([f'FROM {_quote(base.name)} AS "t0"', *compiler.joins])
    where_sql = f" WHERE {' AND '.join(filters)}" if filters else ""

    if query.is_count:
        if page_sql:
            sql = f"SELECT COUNT(*) FROM (SELECT 1 {from_sql}{where_sql}{page_sql})"
        else:
            sql = f"SELECT COUNT(*) {from_sql}{where_sql}"
        return CompiledQuery(base.name, sql, where_params + page_params, True, [], id_index=-1)

    layout, hidden = _build_layout(columns, base.name, len(columns))
    id_exprs = [f'"t0".{_quote("Id")}'] + [f"{_quote(compiler.aliases[path])}.{_quote('Id')}" for path in hidden]
    sql = (
        f"SELECT {', '.join(select_exprs + id_exprs)} {from_sql}{where_sql} ORDER BY {', '.join(order_terms)}{page_sql}"
    )
    return CompiledQuery(
        base.name, sql, where_params + order_params + page_params, False, columns, len(columns), layout
    )


# ---------------------------------------------------------------- rendering rows


def _json_value(fdef: FieldDef, value: Any) -> Any:
    if value is None:
        return None
    if fdef.type == "boolean":
        return bool(value)
    if fdef.type == "int":
        return int(value)
    if fdef.type in NUMBER_TYPES:
        return float(value)
    return str(value)


def record_json(cq: CompiledQuery, row: tuple, api_version: str) -> dict:
    """One row as the REST API's query record: attributes first, then fields in SELECT order,
    parent records nested (null when the lookup is empty)."""
    if cq.is_count or cq._layout is None:
        raise ValueError("a COUNT() query has no records to render")
    version = api_version.removeprefix("v")

    def render(node: _JsonNode) -> dict:
        record_id = row[node.id_index]
        out: dict[str, Any] = {
            "attributes": {
                "type": node.sobject,
                "url": f"/services/data/v{version}/sobjects/{node.sobject}/{record_id}",
            }
        }
        for item in node.items:
            if isinstance(item[1], _JsonNode):
                name, child = item
                out[name] = None if row[child.id_index] is None else render(child)
            else:
                name, index, fdef = item
                out[name] = _json_value(fdef, row[index])
        return out

    return render(cq._layout)


def csv_header(cq: CompiledQuery) -> list[str]:
    """The Bulk 2.0 query CSV header: one dotted name per SELECT item."""
    return [col.name for col in cq.columns]


def _csv_number(value: Any) -> str:
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        return format(Decimal(repr(value)), "f")  # no exponent notation
    return str(value)


def _csv_value(fdef: FieldDef, value: Any) -> str:
    if value is None:
        return ""
    if fdef.type == "boolean":
        return "true" if value else "false"
    if fdef.type == "int":
        return str(int(value))
    if fdef.type in NUMBER_TYPES:
        return _csv_number(value)
    if fdef.type == "datetime":
        text = str(value)
        return text[:-5] + "Z" if text.endswith("+0000") else text
    return str(value)


def csv_row(cq: CompiledQuery, row: tuple) -> list[str]:
    """One row as Bulk 2.0 query CSV values: true/false, plain numbers, "" for null."""
    return [_csv_value(col.field, row[index]) for index, col in enumerate(cq.columns)]
