"""Field value conversion: what Salesforce accepts for each field type, and its error codes."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
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


def _check_digits(f: FieldDef, number: float, raw: Any) -> None:
    if f.precision and abs(number) >= 10 ** (f.precision - f.scale):
        raise FieldValueError(
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
    if t == "int":

        def conv_int(raw: Any) -> Any:
            if isinstance(raw, bool):
                raise _type_error(f, raw)
            try:
                number = float(raw) if not isinstance(raw, int) else raw
            except (TypeError, ValueError):
                raise _type_error(f, raw) from None
            if number != number or number in (float("inf"), float("-inf")) or int(number) != number:
                raise _type_error(f, raw)
            _check_digits(f, number, raw)
            return int(number)

        return conv_int
    if t in {"double", "currency", "percent"}:

        def conv_float(raw: Any) -> Any:
            if isinstance(raw, bool):
                raise _type_error(f, raw)
            try:
                number = float(raw)
            except (TypeError, ValueError):
                raise _type_error(f, raw) from None
            if number != number or number in (float("inf"), float("-inf")):
                raise _type_error(f, raw)
            _check_digits(f, number, raw)
            return round(number, f.scale) if f.scale else number

        return conv_float
    if t == "date":

        def conv_date(raw: Any) -> Any:
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
