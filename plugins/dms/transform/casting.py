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
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

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
_BOOLEAN_TEXT = pa.array(["", "true", "false"], type=pa.large_string())  # pandas' own string type
# Values already in the output format: most of an export's numbers are plain, and for them the
# general cast (grouping, "+", a bare point, leading zeros) would only spend passes over the
# column to change nothing. Only the other values take the general path (`_cast_rest`).
_PLAIN_NUMBER_RE = r"-?[0-9]+(?:\.[0-9]+)?"
_PLAIN_INTEGER_RE = r"0|-?[1-9][0-9]*"
_PLAIN_INT32_RE = r"0|-?[1-9][0-9]{0,8}"  # nine digits always fit a Salesforce int
# Date formats built only from %Y, %m and %d (once each) and literal characters: values in
# their fixed-width form (2024/05/31) are checked on whole columns (`_plain_dates`).
_PLAIN_DATE_YEARS = (1700, 4000)  # Salesforce's range; other years take the general path
_DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int32)
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


def has_value(values: pd.Series) -> np.ndarray:
    """Which values are not "" (a null counts as a value, as `values != ""` has it), as a numpy mask.

    Read off the Arrow offsets: a pandas comparison costs several times more in wrapping than
    the comparison itself, and the transform asks this a few times per field.
    """
    column = arrow_text(values)
    present = np.diff(_offsets(column)) > 0
    if column.null_count:
        present |= column.is_null().to_numpy(zero_copy_only=False)
    return present


def byte_lengths(values: pd.Series) -> np.ndarray:
    """The UTF-8 length in bytes of each value, read off the Arrow offsets."""
    return np.diff(_offsets(arrow_text(values)))


def arrow_text(values: pd.Series) -> pa.Array:
    """A string column as one large_string Arrow array; pandas' Arrow-backed strings are not copied."""
    column = pa.array(values, type=pa.large_string())
    if isinstance(column, pa.ChunkedArray):  # what pandas hands over for an empty column
        column = column.combine_chunks()
    return column


def _offsets(column: pa.Array) -> np.ndarray:
    if len(column) == 0:
        return np.zeros(1, dtype=np.int64)
    return np.frombuffer(column.buffers()[1], dtype=np.int64)[column.offset : column.offset + len(column) + 1]


def _utf8_buffers(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The offsets (n + 1) and the bytes of a string column, without copying either."""
    column = arrow_text(values)
    data_buffer = column.buffers()[2]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.empty(0, np.uint8)
    return _offsets(column), data


def _subset_reason(values: pd.Series, text: str) -> Reason:
    return lambda idx: (quoted(values.iloc[idx]) + text).to_numpy(dtype=object)


def _cast_rest(values: pd.Series, rest: np.ndarray, cast: Callable[..., Cast], *args: Any, **kwargs: Any) -> Cast:
    """`cast` applied to the `rest` rows only; every other row keeps its value.

    For casts that work value by value: the other rows must already be in the output format
    (or empty). The problems keep their full-column masks and reasons.
    """
    if not rest.any():
        return Cast(values)
    positions = np.flatnonzero(rest)
    done = cast(values.iloc[positions].reset_index(drop=True), np.ones(len(positions), dtype=bool), *args, **kwargs)
    return Cast(_put(values, rest, done.values), _spread_problems(done.problems, positions, len(values)))


def _put(values: pd.Series, mask: np.ndarray, replacements: pd.Series) -> pd.Series:
    """`values` with the `mask` rows replaced, in order, by `replacements`."""
    merged = pc.replace_with_mask(
        pa.array(values, type=pa.large_string()),
        pa.array(mask, type=pa.bool_()),
        pa.array(replacements, type=pa.large_string()),
    )
    return pd.Series(merged, dtype="str", index=values.index)


def _spread_problems(
    problems: list[tuple[np.ndarray, RejectCode, Reason]], positions: np.ndarray, n: int
) -> list[tuple[np.ndarray, RejectCode, Reason]]:
    """Problems found on the rows at `positions`, as masks and reasons over all `n` rows."""
    inverse = np.full(n, -1, dtype=np.int64)
    inverse[positions] = np.arange(len(positions))
    spread: list[tuple[np.ndarray, RejectCode, Reason]] = []
    for mask, code, reason in problems:
        full = np.zeros(n, dtype=bool)
        full[positions] = mask
        if callable(reason):
            reason = partial(_reason_at, reason, inverse)
        spread.append((full, code, reason))
    return spread


def _reason_at(reason: Callable[[np.ndarray], Any], inverse: np.ndarray, idx: np.ndarray) -> Any:
    return reason(inverse[idx])


def _cast_number(values: pd.Series, present: np.ndarray) -> Cast:
    plain = values.str.fullmatch(_PLAIN_NUMBER_RE).to_numpy(dtype=bool)
    return _cast_rest(values, present & ~plain, _cast_number_text)


def _cast_number_text(values: pd.Series, present: np.ndarray) -> Cast:
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
    plain = values.str.fullmatch(_PLAIN_INT32_RE if int32 else _PLAIN_INTEGER_RE).to_numpy(dtype=bool)
    return _cast_rest(values, present & ~plain, _cast_integer_text, int32=int32)


def _cast_integer_text(values: pd.Series, present: np.ndarray, *, int32: bool) -> Cast:
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
    out = pd.Series(_BOOLEAN_TEXT.take(pa.array(choice, type=pa.int8())), dtype="str")
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


@dataclass(frozen=True)
class _DateLayout:
    """The bytes of a date format's fixed-width values (2024/05/31): literals, and where each number's digits sit."""

    template: np.ndarray  # uint8, the literal bytes; digits are wildcards
    digit: np.ndarray  # bool, True where a digit goes
    spans: dict[str, slice]  # "Y", "m", "d" -> their digits

    @property
    def width(self) -> int:
        return len(self.template)


def _date_layout(fmt: str) -> _DateLayout | None:
    """The layout of `fmt`'s fixed-width values, or None unless `fmt` is only %Y, %m, %d (once each) and literals."""
    template = bytearray()
    digit: list[bool] = []
    spans: dict[str, slice] = {}
    position = 0
    while position < len(fmt):
        char = fmt[position]
        if char == "%":
            directive = fmt[position + 1 : position + 2]
            if directive not in ("Y", "m", "d") or directive in spans:
                return None
            size = 4 if directive == "Y" else 2
            spans[directive] = slice(len(template), len(template) + size)
            template += b"0" * size
            digit += [True] * size
            position += 2
            continue
        # strptime lets whitespace in a format match any run of it, and letters in any case:
        # such formats, and literal digits, take the general path.
        if char.isspace() or char.isdigit() or (char.isascii() and char.isalpha()):
            return None
        encoded = char.encode("utf-8")
        template += encoded
        digit += [False] * len(encoded)
        position += 1
    if len(spans) != 3:
        return None
    return _DateLayout(np.frombuffer(bytes(template), dtype=np.uint8), np.array(digit), spans)


def _plain_dates(
    values: pd.Series, present: np.ndarray, layout: _DateLayout
) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """Which values are fixed-width dates in Salesforce's years, which of those exist, and their YYYY-MM-DD text.

    Works on the bytes of the Arrow column: the digits are read in place, with no
    string per row, which makes this several times faster than a regex with groups.
    """
    n = len(values)
    offsets, data = _utf8_buffers(values)
    rows = np.flatnonzero(present & (np.diff(offsets) == layout.width))
    if len(rows) == n:
        # Every value has the width (the usual case): the data buffer already is the grid.
        grid = data[offsets[0] : offsets[-1]].reshape(n, layout.width)
    else:
        grid = data[offsets[rows, None] + np.arange(layout.width)]
    digits = grid - np.uint8(ord("0"))  # wraps around below "0": anything but a digit is > 9
    # Column by column: a few passes over contiguous rows beat one 2-D reduction.
    fits = np.ones(len(rows), dtype=bool)
    for position in range(layout.width):
        if layout.digit[position]:
            fits &= digits[:, position] <= 9
        else:
            fits &= grid[:, position] == layout.template[position]
    if not fits.all():
        rows, grid, digits = rows[fits], grid[fits], digits[fits]

    def number(name: str) -> np.ndarray:
        value = np.zeros(len(rows), dtype=np.int32)
        for position in range(layout.spans[name].start, layout.spans[name].stop):
            value = value * 10 + digits[:, position]
        return value

    year, month, day = number("Y"), number("m"), number("d")
    in_range = (year >= _PLAIN_DATE_YEARS[0]) & (year <= _PLAIN_DATE_YEARS[1])
    if not in_range.all():
        rows, grid, year, month, day = rows[in_range], grid[in_range], year[in_range], month[in_range], day[in_range]
    # The day must exist in its month (strptime refuses 2023/02/29 and 2024/04/31).
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_ok = (month >= 1) & (month <= 12)
    last_day = _DAYS_IN_MONTH[np.where(month_ok, month, 1) - 1] + (leap & (month == 2))
    exists = month_ok & (day >= 1) & (day <= last_day)
    plain = np.zeros(n, dtype=bool)
    plain[rows] = True
    valid = np.zeros(n, dtype=bool)
    valid[rows[exists]] = True
    # YYYY-MM-DD from the digits as written, for the rows whose date exists; "" elsewhere.
    dash = np.full((int(exists.sum()), 1), ord("-"), dtype=np.uint8)
    good = grid[exists]
    text = np.hstack([good[:, layout.spans["Y"]], dash, good[:, layout.spans["m"]], dash, good[:, layout.spans["d"]]])
    text_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.where(valid, 10, 0), out=text_offsets[1:])
    texts = pa.LargeStringArray.from_buffers(n, pa.py_buffer(text_offsets), pa.py_buffer(text.tobytes()))
    return plain, valid, texts


def _cast_date(target: FieldTarget, values: pd.Series, present: np.ndarray) -> Cast:
    fmt = target.spec.format or "%Y-%m-%d"
    layout = _date_layout(fmt)
    if layout is None:
        return _cast_date_text(target, values, present)
    # Fixed-width values in Salesforce's years are checked on whole columns: the month and
    # the day must exist, as strptime requires. Everything else takes the general path.
    plain, valid, texts = _plain_dates(values, present, layout)
    out = pd.Series(texts, dtype="str")
    problems: list[tuple[np.ndarray, RejectCode, Reason]] = [
        (plain & ~valid, RejectCode.TYPE, _subset_reason(values, f" is not a date in the format {fmt}"))
    ]
    rest = present & ~plain
    if rest.any():
        positions = np.flatnonzero(rest)
        done = _cast_date_text(target, values.iloc[positions].reset_index(drop=True), np.ones(len(positions), bool))
        out = _put(out, rest, done.values)
        problems += _spread_problems(done.problems, positions, len(values))
    return Cast(out, problems)


def _cast_date_text(target: FieldTarget, values: pd.Series, present: np.ndarray) -> Cast:
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
