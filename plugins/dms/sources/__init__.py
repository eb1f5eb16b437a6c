"""Source readers: one module per source kind, each streaming pyarrow RecordBatches of `chunk_rows` rows."""

from __future__ import annotations

from dms.sources.csv import CsvChunk, MalformedRow, iter_csv_chunks

__all__ = ["CsvChunk", "MalformedRow", "iter_csv_chunks"]
