"""What every source reader hands the extract: numbered chunks of text columns.

A reader streams its source as Arrow record batches of any size; `rechunk` cuts them into
chunks of exactly `chunk_rows` rows (the last one fewer), adds the `__row` column and keeps
rows the reader could not read (`MalformedRow`) with the chunk they fall in. `to_text`
turns typed columns (Parquet, Excel, SQL) into the text the transform casts from, so a
number or a date means the same whichever source it came from.
"""

from __future__ import annotations

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


def rechunk(
    batches: Iterable[pa.RecordBatch],
    chunk_rows: int,
    *,
    first_row: int = 1,
    malformed: Iterable[MalformedRow] = (),
) -> Iterator[SourceChunk]:
    """Cut `batches` into `SourceChunk`s of exactly `chunk_rows` rows, numbered from `first_row`.

    Rows are numbered consecutively (use this for sources where every row is readable, or
    number rows yourself as the CSV reader does). `malformed` rows, in row order, are handed
    out with the chunk they fall in, the last chunk taking any that follow its last row; a
    source with nothing but malformed rows still yields one chunk, with an empty batch.
    Batches must all have the same schema; they are turned into text with `to_text`.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
    bad = list(malformed)
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    next_row = first_row
    schema: pa.Schema | None = None

    def emit(count: int, final: bool) -> SourceChunk:
        nonlocal pending, pending_rows, next_row
        parts: list[pa.RecordBatch] = []
        need = count
        while need:
            head = pending[0]
            if head.num_rows <= need:
                parts.append(pending.pop(0))
                need -= head.num_rows
            else:
                parts.append(head.slice(0, need))
                pending[0] = head.slice(need)
                need = 0
        pending_rows -= count
        raw = parts[0] if len(parts) == 1 else pa.concat_batches(parts)
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
        if schema is None:
            schema = pa.schema([pa.field(ROW_COLUMN, pa.int64()), *batch.schema])
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= chunk_rows:
            yield emit(chunk_rows, final=False)
    if schema is None:
        return
    if pending_rows:
        yield emit(pending_rows, final=True)
    elif bad:
        yield SourceChunk(empty_batch(schema), bad)


def to_text(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Every column as strings, "" for null, in the forms the transform's casts read.

    Whole floats lose their ".0" (Excel stores every number as a float), booleans are
    true/false, dates YYYY-MM-DD and timestamps ISO 8601 (with their offset when they have
    a time zone). Strings pass through.
    """
    arrays = [_column_text(column) for column in batch.columns]
    names = batch.schema.names
    if all(a is c for a, c in zip(arrays, batch.columns, strict=True)):
        return batch
    fields = [
        f if a is c else pa.field(f.name, a.type)
        for f, a, c in zip(batch.schema, arrays, batch.columns, strict=True)
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields, metadata=batch.schema.metadata)).rename_columns(
        names
    )


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
    elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        text = column.cast(pa.string())  # must be UTF-8; anything else is not text
    else:
        text = column.cast(pa.string())  # integers, decimals, times
    return pc.fill_null(text, "")


def _float_text(column: pa.Array) -> pa.Array:
    values = column.to_numpy(zero_copy_only=False)
    whole = np.isfinite(values) & (np.floor(values) == values) & (np.abs(values) < 2**53)
    out = np.empty(len(values), dtype=object)
    out[whole] = values[whole].astype(np.int64).astype(str)
    # repr is the shortest text that reads back as the same float: 0.1, not 0.1000000000000000055.
    out[~whole] = [repr(float(v)) for v in values[~whole]]
    text = pa.array(out, type=pa.string())
    return pc.if_else(column.is_valid(), text, pa.scalar(None, pa.string()))


def _timestamp_text(column: pa.Array) -> pa.Array:
    unit_format = "%Y-%m-%dT%H:%M:%S"
    if column.type.tz:
        return pc.strftime(column, unit_format + "%z")
    return pc.strftime(column, unit_format)
