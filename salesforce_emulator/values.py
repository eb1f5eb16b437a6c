"""Field value conversion: what Salesforce accepts for each field type, and its error codes."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from itertools import repeat
from typing import Any

from .ids import to_18
from .schema import FieldDef

# Salesforce's own email check is permissive; this rejects what it rejects in practice:
# no @, spaces, an empty local part or a domain without a dot.
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DATE_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(Z|[+-]\d{2}:?\d{2})?$")
_DATETIME_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:?\d{2})?$"
)


class FieldValueError(Exception):
    """One field value Salesforce would refuse, with its status code."""

    def __init__(self, status_code: str, message: str, fields: list[str]) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.fields = fields


def now_stamp() -> str:
    """The current time in Salesforce's datetime format."""
    return format_datetime(datetime.now(UTC))


def format_datetime(value: datetime) -> str:
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def _offset(text: str | None) -> timezone:
    if not text or text == "Z":
        return UTC
    sign = 1 if text[0] == "+" else -1
    digits = text[1:].replace(":", "")
    return timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))


def parse_datetime(text: str) -> str | None:
    """A datetime string in any format Salesforce accepts, as the stored UTC text; None if invalid."""
    m = _DATETIME_RE.match(text)
    if not m:
        return None
    year, month, day, hour, minute, sec, frac, tz = m.groups()
    try:
        value = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(sec or 0),
            int((frac or "0").ljust(6, "0")[:6]),
            tzinfo=_offset(tz),
        )
    except ValueError:
        return None
    return format_datetime(value)


def parse_date(text: str) -> str | None:
    """A date string as Salesforce accepts it (yyyy-MM-dd with an optional zone), or None."""
    m = _DATE_RE.match(text)
    if not m:
        return None
    try:
        return date(int(m.group(1)), int(m.group(2)), int(m.group(3))).isoformat()
    except ValueError:
        return None


def _type_error(f: FieldDef, raw: Any) -> FieldValueError:
    return FieldValueError("INVALID_TYPE_ON_FIELD_IN_RECORD", f"{f.label}: value not of required type: {raw}", [f.name])


def _range_error(f: FieldDef, raw: Any) -> FieldValueError:
    return FieldValueError(
        "NUMBER_OUTSIDE_VALID_RANGE", f"{f.label}: value outside of valid range on numeric field: {raw}", [f.name]
    )


def converter(f: FieldDef) -> Callable[[Any], Any]:
    """A function that turns one non-null input value into its stored value, or raises FieldValueError.

    Built once per field and batch, because a bulk job calls it millions of times.
    """
    t = f.type
    if t in {"string", "textarea", "phone", "url", "picklist", "email"}:
        max_len = f.length
        restricted = set(f.picklist_values) if t == "picklist" and f.restricted_picklist else None

        def conv_text(raw: Any) -> Any:
            text = raw if isinstance(raw, str) else _scalar_text(raw)
            if len(text) > max_len:
                shown = text if len(text) <= 255 else text[:255] + "..."
                raise FieldValueError(
                    "STRING_TOO_LONG", f"{f.label}: data value too large: {shown} (max length={max_len})", [f.name]
                )
            if restricted is not None and text not in restricted:
                raise FieldValueError(
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    f"{f.label}: bad value for restricted picklist field: {text}",
                    [f.name],
                )
            if t == "email" and not _EMAIL_RE.match(text):
                raise FieldValueError("INVALID_EMAIL_ADDRESS", f"{f.label}: invalid email address: {text}", [f.name])
            return text

        return conv_text
    if t == "boolean":

        def conv_bool(raw: Any) -> Any:
            if isinstance(raw, bool):
                return int(raw)
            text = str(raw).strip().lower()
            if text in {"true", "1"}:
                return 1
            if text in {"false", "0"}:
                return 0
            raise _type_error(f, raw)

        return conv_bool
    # The largest magnitude a number field holds, worked out once rather than per value.
    limit = 10 ** (f.precision - f.scale) if f.precision else None
    if t == "int":

        def conv_int(raw: Any) -> Any:
            if isinstance(raw, bool):
                raise _type_error(f, raw)
            try:
                number = float(raw) if not isinstance(raw, int) else raw
            except (TypeError, ValueError):
                raise _type_error(f, raw) from None
            # isfinite is False for nan and both infinities (an int is always finite).
            if isinstance(number, float) and not math.isfinite(number) or int(number) != number:
                raise _type_error(f, raw)
            if limit is not None and abs(number) >= limit:
                raise _range_error(f, raw)
            return int(number)

        return conv_int
    if t in {"double", "currency", "percent"}:
        scale = f.scale

        def conv_float(raw: Any) -> Any:
            if isinstance(raw, bool):
                raise _type_error(f, raw)
            try:
                number = float(raw)
            except (TypeError, ValueError):
                raise _type_error(f, raw) from None
            if not math.isfinite(number):
                raise _type_error(f, raw)
            if limit is not None and abs(number) >= limit:
                raise _range_error(f, raw)
            return round(number, scale) if scale else number

        return conv_float
    if t == "date":

        def conv_date(raw: Any) -> Any:
            if isinstance(raw, str) and len(raw) == 10 and raw[4] == "-" and raw[7] == "-" and raw.isascii():
                # The plain yyyy-MM-dd form: date.fromisoformat checks it in C, and its
                # isoformat() is the text itself.
                try:
                    date.fromisoformat(raw)
                    return raw
                except ValueError:
                    pass
            value = parse_date(str(raw).strip()) if isinstance(raw, str) else None
            if value is None:
                raise _type_error(f, raw)
            return value

        return conv_date
    if t == "datetime":

        def conv_datetime(raw: Any) -> Any:
            value = parse_datetime(str(raw).strip()) if isinstance(raw, str) else None
            if value is None:
                raise _type_error(f, raw)
            return value

        return conv_datetime
    if t in {"reference", "id"}:

        def conv_id(raw: Any) -> Any:
            value = to_18(raw) if isinstance(raw, str) else None
            if value is None:
                raise FieldValueError("MALFORMED_ID", f"{f.label}: id value of incorrect type: {raw}", [f.name])
            return value

        return conv_id
    raise AssertionError(f"no converter for field type {t}")


def column_converter(f: FieldDef) -> Callable[[list[str]], list[Any] | None]:
    """Convert a whole column of stripped, non-empty CSV strings at once, or return None.

    None means "some value needs a closer look": the caller then runs `converter(f)` value by
    value, which raises the precise FieldValueError. This is a shortcut over the common case,
    never a second set of rules: every check here is the one `converter` makes, done over the
    column with C-level builtins.
    """
    t = f.type
    if t in {"string", "textarea", "phone", "url", "picklist"}:
        max_len = f.length
        restricted = frozenset(f.picklist_values) if t == "picklist" and f.restricted_picklist else None

        def text_column(values: list[str]) -> list[Any] | None:
            if max(map(len, values), default=0) > max_len:
                return None
            if restricted is not None and not restricted.issuperset(values):
                return None
            return values

        return text_column
    if t in {"int", "double", "currency", "percent"}:
        limit = 10 ** (f.precision - f.scale) if f.precision else None
        scale = f.scale

        def number_column(values: list[str]) -> list[Any] | None:
            try:
                numbers = list(map(float, values))
            except ValueError:
                return None
            if not all(map(math.isfinite, numbers)):
                return None
            if limit is not None and max(map(abs, numbers), default=0) >= limit:
                return None
            if t == "int":
                return list(map(int, numbers)) if all(map(float.is_integer, numbers)) else None
            return list(map(round, numbers, repeat(scale))) if scale else numbers

        return number_column
    if t == "date":

        def date_column(values: list[str]) -> list[Any] | None:
            # The plain yyyy-MM-dd form only; date.fromisoformat then checks the calendar in C.
            if not "".join(values).isascii() or not all(len(v) == 10 and v[4] == v[7] == "-" for v in values):
                return None
            try:
                all(map(date.fromisoformat, values))
            except ValueError:
                return None
            return values

        return date_column
    if t == "boolean":

        def bool_column(values: list[str]) -> list[Any] | None:
            lowered = list(map(str.lower, values))
            if not set(lowered) <= _BOOL_TEXT.keys():
                return None
            return [_BOOL_TEXT[v] for v in lowered]

        return bool_column
    convert = converter(f)

    def any_column(values: list[str]) -> list[Any] | None:
        try:
            return list(map(convert, values))
        except FieldValueError:
            return None

    return any_column


_BOOL_TEXT = {"true": 1, "1": 1, "false": 0, "0": 0}


def _scalar_text(raw: Any) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    return str(raw)


def json_value(f: FieldDef, stored: Any) -> Any:
    """A stored value as the REST API returns it in JSON."""
    if stored is None:
        return False if f.type == "boolean" else None
    if f.type == "boolean":
        return bool(stored)
    if f.type == "int":
        return int(stored)
    if f.type in {"double", "currency", "percent"}:
        return float(stored)
    return stored


def csv_value(f: FieldDef, stored: Any) -> str:
    """A stored value as Bulk API 2.0 CSV carries it."""
    if stored is None:
        return "false" if f.type == "boolean" else ""
    if f.type == "boolean":
        return "true" if stored else "false"
    if f.type in {"double", "currency", "percent"} and float(stored).is_integer():
        return str(int(stored))
    return str(stored)
