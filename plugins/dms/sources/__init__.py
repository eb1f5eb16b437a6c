"""Source readers: one module per source kind, each streaming `SourceChunk`s of `chunk_rows` rows.

Each reader is imported only when a spec uses its kind, so an extract loads only what it
reads with (no openpyxl or database driver for a CSV).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dms.sources.base import MalformedRow, SourceChunk
from dms.spec import (
    CsvSource,
    ExcelSource,
    FixedWidthSource,
    ParquetSource,
    PickleSource,
    SalesforceSource,
    SqlSource,
)

__all__ = ["MalformedRow", "SourceChunk", "SourceContext", "iter_chunks"]


@dataclass(frozen=True)
class SourceContext:
    """What a reader may need besides its spec: the resolved file, the run's interval, connections."""

    path: Path | None = None
    interval_start: dt.datetime | None = None
    interval_end: dt.datetime | None = None
    salesforce_conn_id: str = "salesforce_default"


def iter_chunks(source: Any, chunk_rows: int, context: SourceContext) -> Iterator[SourceChunk]:
    """Stream any source of a spec as chunks; a problem with the source raises `SourceError`."""
    if isinstance(source, CsvSource):
        from dms.sources.csv import iter_csv_chunks

        return iter_csv_chunks(_path(context), source, chunk_rows)
    if isinstance(source, FixedWidthSource):
        from dms.sources.fixed_width import iter_fixed_width_chunks

        return iter_fixed_width_chunks(_path(context), source, chunk_rows)
    if isinstance(source, ExcelSource):
        from dms.sources.excel import iter_excel_chunks

        return iter_excel_chunks(_path(context), source, chunk_rows)
    if isinstance(source, ParquetSource):
        from dms.sources.parquet import iter_parquet_chunks

        return iter_parquet_chunks(_path(context), source, chunk_rows)
    if isinstance(source, PickleSource):
        from dms.sources.pickled import iter_pickle_chunks

        return iter_pickle_chunks(_path(context), source, chunk_rows)
    if isinstance(source, SqlSource):
        from dms.sources.sql import iter_sql_chunks

        return iter_sql_chunks(source, chunk_rows, context.interval_start, context.interval_end)
    if isinstance(source, SalesforceSource):
        from dms.sources.salesforce import iter_salesforce_chunks

        return iter_salesforce_chunks(
            source,
            chunk_rows,
            source.conn_id or context.salesforce_conn_id,
            context.interval_start,
            context.interval_end,
        )
    raise TypeError(f"no reader for source {type(source).__name__}")


def _path(context: SourceContext) -> Path:
    if context.path is None:
        raise TypeError("a file source needs its resolved path")
    return context.path
