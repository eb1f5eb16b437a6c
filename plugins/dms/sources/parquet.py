"""Parquet files, streamed in chunks of `chunk_rows` rows with every value as text.

Row numbers (`__row`) are 1-based positions in the file. Parquet has no malformed rows: a
file either reads or it does not. Typed columns become text with `to_text` (integers as
written, whole floats without ".0", true/false, dates YYYY-MM-DD, timestamps ISO 8601 with
their offset when they have a zone, nulls as ""). Memory is about one row group (the unit
Parquet compresses and reads together) plus a chunk, whatever the size of the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dms.errors import SourceError
from dms.sources.base import ROW_COLUMN, SourceChunk, rechunk
from dms.spec import ParquetSource


def iter_parquet_chunks(path: Path, source: ParquetSource, chunk_rows: int) -> Iterator[SourceChunk]:
    """Stream `path` (all its columns, or `source.columns` in that order) as chunks of `chunk_rows` rows.

    A missing file, a file that is not Parquet, an unknown column or a column with no text
    form (lists, structs, maps) raises `SourceError` naming the file and the column.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: file not found")
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{path}: not a Parquet file ({exc})") from None
    with parquet:  # closes the file when the reading ends, or is abandoned
        schema = parquet.schema_arrow
        names = select_columns(path, schema, source.columns)
        selected = pa.schema([schema.field(name) for name in names])
        batches = _batches(path, parquet, names, chunk_rows)
        read = 0
        try:
            for chunk in rechunk(batches, chunk_rows, schema=selected):
                read += chunk.rows
                yield chunk
        except pa.ArrowException as exc:  # e.g. a binary column that is not UTF-8 text
            raise SourceError(f"{path}: after row {read}: cannot turn the values into text: {exc}") from None


def select_columns(path: Path, schema: pa.Schema, wanted: list[str] | None) -> list[str]:
    """The columns to read, checked: known, each once, not reserved, and with a text form."""
    names = schema.names
    listed = ", ".join(repr(n) for n in names)
    if wanted is not None:
        if not wanted:
            raise SourceError(f"{path}: `columns` is empty; leave it out to read every column ({listed})")
        unknown = [name for name in wanted if name not in names]
        if unknown:
            missing = ", ".join(repr(n) for n in unknown)
            raise SourceError(f"{path}: no column {missing} in the file; its columns are {listed}")
    selected = list(wanted if wanted is not None else names)
    twice = sorted({name for name in selected if selected.count(name) > 1})
    if twice:
        raise SourceError(f"{path}: column {', '.join(repr(n) for n in twice)} appears twice")
    for name in selected:
        if name == ROW_COLUMN:
            raise SourceError(f"{path}: column name {ROW_COLUMN!r} is reserved; leave it out with `columns`")
        kind = schema.field(name).type
        if pa.types.is_nested(kind):
            raise SourceError(f"{path}: column {name!r} is {kind}, which has no text form; leave it out with `columns`")
    return selected


def _batches(path: Path, parquet: pq.ParquetFile, names: list[str], chunk_rows: int) -> Iterator[pa.RecordBatch]:
    read = 0
    batches = parquet.iter_batches(batch_size=chunk_rows, columns=names)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as exc:  # a damaged page or row group
            raise SourceError(f"{path}: cannot read after row {read}: {exc}") from None
        read += batch.num_rows
        yield batch
