"""Casting source text to what a Bulk API 2.0 CSV wants, one whole column at a time.

Each cast takes the column (strings, "" meaning no value) and returns the formatted column
plus the problems it found. Empty values are never cast: they stay "", which Bulk API 2.0
reads as "no value" (null on create, unchanged on update).

Output formats: numbers as plain decimals without grouping (`1234.5`), whole numbers
without a fraction (`12`), booleans `true`/`false`, dates `YYYY-MM-DD`, datetimes
`YYYY-MM-DDTHH:MM:SS.sssZ` in UTC.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from dms.errors import FatalError
from dms.transform.describe import FieldTarget
from dms.transform.rejects import Reason, RejectCode, quoted

# Grouping with commas is accepted only in strict groups of three with a point for the
# decimals (`1,234.50`, `-12,345`): that is how Excel and most ERPs export US/UK numbers.
# A European `1.234,50` or `12,5` does not match and is rejected rather than misread.
# (A European "1,234" meaning 1.234 would be read as 1234; such exports also contain values
# like "12,5" that are rejected, which points at the problem.)
_NUMBER_RE = r"[+-]?(?:[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]*)?|[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
# Whole numbers may carry a zero fraction (`12.0`, `12.00`): exports that went through a
# float column write them that way. Any other fraction is rejected, never rounded.
_INTEGER_RE = r"[+-]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.0*)?"
_INT32_MAX = 2**31 - 1
# Salesforce refuses dates outside this range.
_MIN_DATE = np.datetime64("1700-01-01", "us")
_MAX_DATE = np.datetime64("4001-01-01", "us")  # exclusive
_RANGE_TEXT = "1700-01-01 to 4000-12-31"
# An ISO 8601 time with an offset or Z; the rest are naive and take the field's timezone.
_ISO_OFFSET_RE = r"[T ][0-9]{1,2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)? *(?:Z|z|[+-][0-9]{2}(?::?[0-9]{2})?)\Z"
_BOOLEAN_TEXT = pa.array(["", "true", "false"])
EMAIL_RE = r"[^@ \t\n\r\x0b\x0c]+@[^@ \t\n\r\x0b\x0c]+\.[^@ \t\n\r\x0b\x0c.]+"


@dataclass
class Cast:
    """A cast column and the problems found on the way, in the order they were found."""

    values: pd.Series
    problems: list[tuple[np.ndarray, RejectCode, Reason]] = field(default_factory=list)


def cast_column(target: FieldTarget, values: pd.Series, present: np.ndarray) -> Cast:
    """Cast one column by the spec's `type`; `present` marks the non-empty values."""
    kind = target.spec.type
    if kind == "string":
        return Cast(values)
    if kind == "integer":
        return _cast_integer(values, present, int32=target.sf_type == "int")
    if kind == "number":
        return _cast_number(values, present)
    if kind == "boolean":
        return _cast_boolean(target, values, present)
    if kind == "date":
        return _cast_date(target, values, present)
    return _cast_datetime(target, values, present)


def _subset_reason(values: pd.Series, text: str) -> Reason:
    return lambda idx: (quoted(values.iloc[idx]) + text).to_numpy(dtype=object)


def _cast_number(values: pd.Series, present: np.ndarray) -> Cast:
    ok = values.str.fullmatch(_NUMBER_RE).to_numpy(dtype=bool)
    bad = present & ~ok
    # Only string methods that pyarrow runs natively (no backreferences or lookarounds,
    # which send pandas to a per-value Python loop).
    clean = values.str.replace(",", "", regex=False).str.removeprefix("+").str.removesuffix(".")
    clean = clean.str.replace(r"^\.", "0.", regex=True).str.replace(r"^-\.", "-0.", regex=True)
    clean = clean.where(~bad, "")
    reason = _subset_reason(values, " is not a number (write 1234.5 or 1,234.5)")
    return Cast(clean, [(bad, RejectCode.TYPE, reason)])


def _cast_integer(values: pd.Series, present: np.ndarray, *, int32: bool) -> Cast:
    ok = values.str.fullmatch(_INTEGER_RE).to_numpy(dtype=bool)
    bad = present & ~ok
    digits = values.str.replace(",", "", regex=False).str.removeprefix("+").str.replace(r"\.0*\Z", "", regex=True)
    negative = digits.str.startswith("-").to_numpy(dtype=bool)
    # Leading zeros go ("007" -> "7", "-0" -> "0"), so the value is canonical for the range check.
    magnitude_text = digits.str.removeprefix("-").str.lstrip("0")
    magnitude_text = magnitude_text.where(magnitude_text != "", "0")
    negative = negative & (magnitude_text != "0").to_numpy(dtype=bool)
    clean = magnitude_text.where(~negative, "-" + magnitude_text).where(present & ~bad, "")
    problems: list[tuple[np.ndarray, RejectCode, Reason]] = [
        (bad, RejectCode.TYPE, _subset_reason(values, " is not a whole number"))
    ]
    if int32:
        # Salesforce's int fields are 32-bit. Without leading zeros, more digits means a
        # bigger number, and at equal length the text compares like the number.
        length = magnitude_text.str.len().to_numpy()
        candidate = present & ~bad
        limit = str(_INT32_MAX)  # and one more below zero: -2147483648 fits
        ten_digits = candidate & (length == len(limit))
        out_of_range = candidate & (length > len(limit))
        over = np.where(
            negative,
            (magnitude_text > str(_INT32_MAX + 1)).to_numpy(dtype=bool),
            (magnitude_text > limit).to_numpy(dtype=bool),
        )
        out_of_range |= ten_digits & over
        clean = clean.where(~out_of_range, "")
        problems.append(
            (
                out_of_range,
                RejectCode.TYPE,
                _subset_reason(
                    values, f" is outside the range of a Salesforce int (-{_INT32_MAX + 1} to {_INT32_MAX})"
                ),
            )
        )
    return Cast(clean, problems)


def _cast_boolean(target: FieldTarget, values: pd.Series, present: np.ndarray) -> Cast:
    spec = target.spec
    lowered = values.str.lower()
    is_true = lowered.isin([v.lower() for v in spec.true_values]).to_numpy(dtype=bool)
    is_false = lowered.isin([v.lower() for v in spec.false_values]).to_numpy(dtype=bool)
    bad = present & ~(is_true | is_false)
    # 0 = no value, 1 = true, 2 = false; a take from three strings is far cheaper than
    # building the column value by value.
    choice = np.where(is_true, 1, np.where(is_false, 2, 0))
    out = _BOOLEAN_TEXT.take(pa.array(choice)).to_pandas()
    hint = f" is not a boolean (true: {', '.join(spec.true_values)}; false: {', '.join(spec.false_values)})"
    return Cast(out, [(bad, RejectCode.TYPE, _subset_reason(values, hint))])


def _to_datetime(target: FieldTarget, values: pd.Series, fmt: str, *, utc: bool) -> pd.Series:
    try:
        return pd.to_datetime(values, format=fmt, errors="coerce", utc=utc)
    except (ValueError, TypeError) as exc:
        if "directive" in str(exc):
            raise FatalError(f"field {target.name}: format {fmt!r} cannot be used: {exc}") from None
        # Formats pandas cannot vectorise: parse value by value, which is slow but exact.
        return _strptime_each(values, fmt, utc=utc)


def _strptime_each(values: pd.Series, fmt: str, *, utc: bool) -> pd.Series:
    parsed: list[dt.datetime | None] = []
    for text in values.tolist():
        try:
            value = dt.datetime.strptime(text, fmt)
        except (ValueError, TypeError):
            parsed.append(None)
            continue
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None) if utc else value.replace(tzinfo=None)
        parsed.append(value)
    result = pd.to_datetime(pd.Series(parsed, index=values.index, dtype=object), errors="coerce")
    return result.dt.tz_localize("UTC") if utc else result


def _naive_us(parsed: pd.Series) -> np.ndarray:
    """A parsed column as naive datetime64[us] (UTC if it had a zone)."""
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return parsed.to_numpy(dtype="datetime64[us]")


def _range_problem(values: pd.Series, moments: np.ndarray, present: np.ndarray, what: str):
    valid = present & ~np.isnat(moments)
    outside = valid & ((moments < _MIN_DATE) | (moments >= _MAX_DATE))
    reason = _subset_reason(values, f" is outside the {what} range Salesforce accepts ({_RANGE_TEXT})")
    return outside, (outside, RejectCode.TYPE, reason)


def _cast_date(target: FieldTarget, values: pd.Series, present: np.ndarray) -> Cast:
    fmt = target.spec.format or "%Y-%m-%d"
    if "%z" in fmt or "%Z" in fmt:
        # Keep the calendar day as written: converting through the offset could move a
        # date by a day. Value by value, since pandas would convert to one zone.
        moments = _strptime_each(values, fmt, utc=False).to_numpy(dtype="datetime64[us]")
    else:
        moments = _naive_us(_to_datetime(target, values, fmt, utc=False))
    unparsed = present & np.isnat(moments)
    outside, range_problem = _range_problem(values, moments, present, "date")
    good = present & ~unparsed & ~outside
    # pyarrow's date-to-string cast writes YYYY-MM-DD and is far faster than strftime.
    days = pa.array(np.where(good, moments, np.datetime64("NaT")).astype("datetime64[D]")).cast(pa.date32())
    text = pc.fill_null(days.cast(pa.string()), "").to_pandas()
    problems: list[tuple[np.ndarray, RejectCode, Reason]] = [
        (unparsed, RejectCode.TYPE, _subset_reason(values, f" is not a date in the format {fmt}")),
        range_problem,
    ]
    return Cast(text, problems)


def _cast_datetime(target: FieldTarget, values: pd.Series, present: np.ndarray) -> Cast:
    fmt = target.spec.format or "ISO8601"
    zone = target.spec.timezone or "UTC"
    if fmt == "ISO8601":
        aware = present & values.str.contains(_ISO_OFFSET_RE, regex=True).to_numpy(dtype=bool)
    elif "%z" in fmt or "%Z" in fmt:
        aware = present.copy()
    else:
        aware = np.zeros(len(values), dtype=bool)
    naive = present & ~aware
    moments = np.full(len(values), np.datetime64("NaT"), dtype="datetime64[us]")
    not_local = np.zeros(len(values), dtype=bool)
    if aware.any():
        # A value that states its offset is an instant already; the field's zone does not apply.
        moments[aware] = _naive_us(_to_datetime(target, values[aware], fmt, utc=True))
    if naive.any():
        local = _to_datetime(target, values[naive], fmt, utc=False)
        if isinstance(local.dtype, pd.DatetimeTZDtype):  # a custom format that carried a zone
            utc = local.dt.tz_convert("UTC")
        else:
            # In the autumn overlap a local time happens twice; take the first (daylight
            # saving) one, as Python's zoneinfo does with fold=0. In the spring gap it
            # never happens at all: that is bad data, rejected below.
            utc = local.dt.tz_localize(zone, ambiguous=np.ones(len(local), dtype=bool), nonexistent="NaT")
            parsed = ~local.isna().to_numpy()
            not_local[np.flatnonzero(naive)[parsed & utc.isna().to_numpy()]] = True
        moments[naive] = _naive_us(utc)
    unparsed = present & np.isnat(moments) & ~not_local
    outside, range_problem = _range_problem(values, moments, present, "datetime")
    good = present & ~np.isnat(moments) & ~outside
    # pyarrow casts a millisecond timestamp to "YYYY-MM-DD HH:MM:SS.sss"; Salesforce wants
    # the ISO "T" and a "Z" for UTC.
    stamps = pa.array(np.where(good, moments, np.datetime64("NaT")).astype("datetime64[ms]"))
    text = pc.utf8_replace_slice(stamps.cast(pa.string()), start=10, stop=11, replacement="T")
    text = pc.fill_null(pc.binary_join_element_wise(text, "Z", ""), "").to_pandas()
    expected = "ISO 8601 (2024-05-31T13:45:00, optionally with Z or +08:00)" if fmt == "ISO8601" else fmt
    problems: list[tuple[np.ndarray, RejectCode, Reason]] = [
        (unparsed, RejectCode.TYPE, _subset_reason(values, f" is not a datetime in the format {expected}")),
        (not_local, RejectCode.TYPE, _subset_reason(values, f" does not exist in {zone} (the clocks skip it)")),
        range_problem,
    ]
    return Cast(text, problems)


def email_problem(values: pd.Series, present: np.ndarray) -> tuple[np.ndarray, RejectCode, Reason]:
    ok = values.str.fullmatch(EMAIL_RE).to_numpy(dtype=bool)
    bad = present & ~ok
    return bad, RejectCode.FORMAT, _subset_reason(values, " is not an email address")
