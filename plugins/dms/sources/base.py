"""What every source reader hands the extract: numbered chunks of text columns.

A reader streams its source as Arrow record batches of any size; `rechunk` cuts them into
chunks of exactly `chunk_rows` rows (the last one fewer), adds the `__row` column and keeps
rows the reader could not read (`MalformedRow`) with the chunk they fall in. Readers whose
row numbers have gaps (blank lines, empty spreadsheet rows), or that find malformed rows as
they go, number their rows themselves and hand them to a `ChunkBuilder` instead. `to_text`
turns typed columns (Parquet, Excel, SQL) into the text the transform casts from, so a
number or a date means the same whichever source it came from.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROW_COLUMN = "__row"
# The reject code and columns of dms.transform, spelled out here so that the readers do not
# import the transform (the dependency goes the other way).
MALFORMED_CODE = "MALFORMED"
_TEXT_PREVIEW = 200


class MalformedRow(NamedTuple):
    """A source row that could not be read into the columns; it is reported, never dropped."""

    row: int
    text: str
    reason: str


def preview(text: str) -> str:
    text = text if len(text) <= _TEXT_PREVIEW else text[:_TEXT_PREVIEW] + "…"
    return repr(text)


@dataclass(frozen=True)
class SourceChunk:
    """One chunk of a source: the rows read, and the malformed rows that fall among them.

    `batch` has a leading int64 `__row` column and one string column per source column. The
    row number is what a person finds the row by: the line or spreadsheet row of a file
    (see each reader), the 1-based position for Parquet, pickle and query results.
    `malformed` holds the rows that could not be read and whose number falls in this chunk,
    so `rows` counts every source row the chunk accounts for.
    """

    batch: pa.RecordBatch
    malformed: list[MalformedRow] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return self.batch.num_rows + len(self.malformed)

    def malformed_records(self) -> list[dict[str, Any]]:
        """The malformed rows as reject records (row, key, field, reason, code), JSON-safe."""
        return [
            {"row": m.row, "key": "", "field": "", "reason": f"{m.reason}: {preview(m.text)}", "code": MALFORMED_CODE}
            for m in self.malformed
        ]


def int64_array(values: np.ndarray) -> pa.Array:
    """A numpy int64 array as an Arrow one, sharing its memory.

    Not `pa.array(values)`: on a numpy array that checks for pandas types, which imports
    pandas (about 0.7 s and 45 MB) into the extract task, which never uses it.
    """
    values = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])


def empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    # pa.nulls(0), not pa.array([]): the latter imports pandas too (see int64_array).
    return pa.RecordBatch.from_arrays([pa.nulls(0, type=f.type) for f in schema], schema=schema)


def take_front(pending: deque[pa.RecordBatch], count: int) -> pa.RecordBatch:
    """Pop `count` rows off the front of `pending` as one batch.

    Slices, so a long pending batch is never copied over and over (no quadratic cost).
    """
    parts: list[pa.RecordBatch] = []
    need = count
    while need:
        head = pending[0]
        if head.num_rows <= need:
            parts.append(pending.popleft())
            need -= head.num_rows
        else:
            parts.append(head.slice(0, need))
            pending[0] = head.slice(need)
            need = 0
    return parts[0] if len(parts) == 1 else pa.concat_batches(parts)


def rechunk(
    batches: Iterable[pa.RecordBatch],
    chunk_rows: int,
    *,
    first_row: int = 1,
    malformed: Iterable[MalformedRow] = (),
    schema: pa.Schema | None = None,
) -> Iterator[SourceChunk]:
    """Cut `batches` into `SourceChunk`s of exactly `chunk_rows` rows, numbered from `first_row`.

    Rows are numbered consecutively (use this for sources where every row is readable, or
    number rows yourself as the CSV reader does). `malformed` rows, in row order, are handed
    out with the chunk they fall in, the last chunk taking any that follow its last row; a
    source with nothing but malformed rows still yields one chunk, with an empty batch.
    Batches must all have the same schema; they are turned into text with `to_text`.
    `schema` (the source's columns, without `__row`) is only needed when there may be no
    batches at all but malformed rows: they are then handed out with an empty batch of it.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
    # Sorted: the hand-out below takes them from the front, in row order.
    bad = sorted(malformed, key=lambda m: m.row)
    pending: deque[pa.RecordBatch] = deque()
    pending_rows = 0
    next_row = first_row
    if schema is not None:
        schema = pa.schema([pa.field(ROW_COLUMN, pa.int64()), *to_text(empty_batch(schema)).schema])
    seen_batch = False

    def emit(count: int, final: bool) -> SourceChunk:
        nonlocal pending_rows, next_row
        raw = take_front(pending, count)
        pending_rows -= count
        # Good rows skip the numbers of malformed rows among them.
        numbers = np.arange(next_row, next_row + count + len(bad), dtype=np.int64)
        if bad:
            numbers = numbers[~np.isin(numbers, [m.row for m in bad])]
        numbers = numbers[:count]
        next_row = int(numbers[-1]) + 1 if count else next_row
        cut = float("inf") if final else next_row
        mine = [m for m in bad if m.row < cut]
        del bad[: len(mine)]
        assert schema is not None
        batch = pa.RecordBatch.from_arrays([int64_array(numbers), *raw.columns], schema=schema)
        return SourceChunk(batch, mine)

    for batch in batches:
        batch = to_text(batch)
        if not seen_batch:
            # The first batch decides the columns (and their text types), as it did before.
            schema = pa.schema([pa.field(ROW_COLUMN, pa.int64()), *batch.schema])
            seen_batch = True
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= chunk_rows:
            yield emit(chunk_rows, final=False)
    if pending_rows:
        yield emit(pending_rows, final=True)
    elif bad:
        if schema is None:
            # Returning quietly would lose these rows, and a reader must never lose a row.
            raise ValueError(f"{len(bad)} malformed rows but no batch and no schema to hand them out with")
        yield SourceChunk(empty_batch(schema), bad)


class ChunkBuilder:
    """Cuts rows a reader has numbered itself into `SourceChunk`s of exactly `chunk_rows` rows.

    For readers whose row numbers have gaps (a blank line, an empty spreadsheet row) and that
    find malformed rows while they stream, which `rechunk` (consecutive numbers, malformed
    rows known up front) cannot take. Feed it in row order: `add_malformed` for a row before
    `add` of a batch with a later row. A chunk then takes the malformed rows numbered below
    its last row (every one of them is known by the time it is cut), the final chunk every
    one left, the same rule as the CSV reader.
    """

    def __init__(self, schema: pa.Schema, chunk_rows: int) -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
        if schema.names[:1] != [ROW_COLUMN]:
            raise ValueError(f"the schema must start with the {ROW_COLUMN!r} column")
        self.schema = schema
        self.chunk_rows = chunk_rows
        self._pending: deque[pa.RecordBatch] = deque()
        self._pending_rows = 0
        self._malformed: deque[MalformedRow] = deque()

    @property
    def waiting_malformed(self) -> int:
        """Malformed rows not handed out yet: a reader fails when this many means a mis-declared source."""
        return len(self._malformed)

    @property
    def first_waiting_malformed(self) -> MalformedRow | None:
        return self._malformed[0] if self._malformed else None

    def add_malformed(self, row: MalformedRow) -> None:
        self._malformed.append(row)

    def add(self, batch: pa.RecordBatch) -> Iterator[SourceChunk]:
        """Take a batch of numbered rows (this builder's schema); yield the chunks it completes."""
        if not batch.schema.equals(self.schema):
            raise ValueError(f"batch schema {batch.schema} is not the builder's {self.schema}")
        if batch.num_rows:
            self._pending.append(batch)
            self._pending_rows += batch.num_rows
        while self._pending_rows >= self.chunk_rows:
            # A full chunk may be followed by malformed rows before the next good one, so it
            # is never final here: `finish` hands those out.
            yield self._cut(self.chunk_rows, final=False)

    def finish(self) -> Iterator[SourceChunk]:
        """The last chunk: the rows left and every malformed row not handed out yet."""
        if self._pending_rows:
            yield self._cut(self._pending_rows, final=True)
        elif self._malformed:
            yield SourceChunk(empty_batch(self.schema), list(self._malformed))
            self._malformed.clear()

    def _cut(self, count: int, final: bool) -> SourceChunk:
        batch = take_front(self._pending, count)
        self._pending_rows -= count
        last = batch.column(0)[-1].as_py()
        mine: list[MalformedRow] = []
        while self._malformed and (final or self._malformed[0].row < last):
            mine.append(self._malformed.popleft())
        return SourceChunk(batch, mine)


def to_text(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Every column as strings, "" for null, in the forms the transform's casts read.

    Whole floats lose their ".0" (Excel stores every number as a float), booleans are
    true/false, dates YYYY-MM-DD and timestamps ISO 8601 (with their offset when they have
    a time zone). Strings pass through.
    """
    # One list: `batch.columns` makes new wrapper objects at every access, and the `is`
    # tests below must compare with the very objects `_column_text` was given.
    columns = batch.columns
    arrays = [_column_text(column) for column in columns]
    if all(a is c for a, c in zip(arrays, columns, strict=True)):
        return batch
    # with_type keeps each field's name and metadata (a transported column's encoding mark).
    fields = [f if a is c else f.with_type(a.type) for f, a, c in zip(batch.schema, arrays, columns, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields, metadata=batch.schema.metadata))


def _column_text(column: pa.Array) -> pa.Array:
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return pc.fill_null(column, "") if column.null_count else column
    if pa.types.is_dictionary(kind):
        return _column_text(column.cast(kind.value_type))
    if pa.types.is_null(kind):
        return pa.array([""] * len(column), pa.string())
    if pa.types.is_boolean(kind):
        text = pc.if_else(column, "true", "false")
    elif pa.types.is_floating(kind):
        text = _float_text(column)
    elif pa.types.is_timestamp(kind):
        text = _timestamp_text(column)
    elif pa.types.is_date(kind):
        text = pc.strftime(column.cast(pa.date32()).cast(pa.timestamp("s")), "%Y-%m-%d")
    elif pa.types.is_time(kind):
        text = _time_text(column)
    elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        text = column.cast(pa.string())  # must be UTF-8; anything else is not text
    else:
        text = column.cast(pa.string())  # integers, decimals, times
    return pc.fill_null(text, "")


def float_text(value: float | np.floating) -> str:
    """One float as `to_text` writes it (readers that convert value by value use this)."""
    if np.isfinite(value) and float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    # The shortest digits that read back as the same value of its own type (0.1, not
    # 0.1000000000000000055, nor 0.10000000149011612 for a float32), and never in exponent
    # notation: the transform's number cast reads 0.0000001 but rejects 1e-07.
    return np.format_float_positional(value, trim="-")


def _float_text(column: pa.Array) -> pa.Array:
    values = column.to_numpy(zero_copy_only=False)
    # The test in float64: 2**53 overflows a float16. The digits below come from `values`,
    # so each float is written in the shortest form of its own type.
    wide = values.astype(np.float64, copy=False)
    whole = np.isfinite(wide) & (np.floor(wide) == wide) & (np.abs(wide) < 2**53)
    out = np.empty(len(values), dtype=object)
    out[whole] = wide[whole].astype(np.int64).astype(str)
    out[~whole] = [float_text(v) for v in values[~whole]]
    # A list, not the object array: pa.array on a numpy array imports pandas (see int64_array).
    text = pa.array(out.tolist(), type=pa.string())
    return pc.if_else(column.is_valid(), text, pa.scalar(None, pa.string()))


def _time_text(column: pa.Array) -> pa.Array:
    """HH:MM:SS, with the unit's fraction only when there is one (as Python's isoformat)."""
    if column.type.unit == "s":
        return column.cast(pa.string())
    seconds = column.cast(pa.time32("s"), safe=False)
    whole = pc.equal(seconds.cast(column.type), column)
    return pc.if_else(whole, seconds.cast(pa.string()), column.cast(pa.string()))


def _timestamp_text(column: pa.Array) -> pa.Array:
    """ISO 8601: YYYY-MM-DDTHH:MM:SS, a fraction only when there is one, and +HH:MM when zoned.

    Arrow's %S prints every sub-second digit of the unit ("00.000000000" for nanoseconds),
    so whole seconds are formatted from the value cut to seconds. The offset gets its colon
    (Arrow's %z writes +0800), so the text is extended-format ISO throughout.
    """
    unit_format = "%Y-%m-%dT%H:%M:%S"
    kind = column.type
    if kind.unit != "s":
        seconds = column.cast(pa.timestamp("s", tz=kind.tz), safe=False)
        whole = pc.equal(seconds.cast(kind), column)
        text = pc.if_else(whole, pc.strftime(seconds, unit_format), pc.strftime(column, unit_format))
    else:
        text = pc.strftime(column, unit_format)
    if kind.tz:
        offset = pc.replace_substring_regex(pc.strftime(column, "%z"), r"^([+-]\d\d)(\d\d)$", r"\1:\2")
        text = pc.binary_join_element_wise(text, offset, "")
    return text
