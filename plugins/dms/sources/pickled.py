"""Pickled pandas DataFrames, handed out in chunks of `chunk_rows` rows with every value as text.

Unpickling runs whatever code the file holds, so a pickle is read only when its spec says
`trusted: true`. The spec model refuses anything else, and the reader checks again rather
than rely on it (a spec object can be built around its validation). Row numbers (`__row`)
are 1-based positions in the frame; its index is not read (reset it into a column first if
it holds data). Typed columns become text with `to_text`, as for Parquet.

A pickle cannot be streamed: the whole frame is loaded before the first chunk, so memory is
about the size of the data however small the chunks. That is the other reason it takes an
explicit opt-in, and why Parquet (`df.to_parquet(...)`) is the recommended format.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from dms.errors import SourceError
from dms.sources.base import SourceChunk, rechunk
from dms.sources.parquet import select_columns
from dms.spec import PickleSource


def iter_pickle_chunks(path: Path, source: PickleSource, chunk_rows: int) -> Iterator[SourceChunk]:
    """Load the DataFrame in `path` and hand it out as chunks of `chunk_rows` rows.

    Refuses (`SourceError`) a source not marked trusted, a file that does not unpickle, an
    object that is not a DataFrame and a column with no text form, naming the file.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
    path = Path(path)
    if source.trusted is not True:
        raise SourceError(
            f"{path}: not reading a pickle that is not trusted: unpickling runs any code inside it; set "
            "'trusted: true' only for a file you produced yourself, or export it as parquet or csv instead"
        )
    if not path.is_file():
        raise SourceError(f"{path}: file not found")

    import pandas as pd  # only here: no other reader needs pandas

    try:
        frame = pd.read_pickle(path)
    except Exception as exc:  # unpickling can fail in any way: truncated, a missing class...
        raise SourceError(f"{path}: cannot read the pickle: {type(exc).__name__}: {exc}") from None
    if not isinstance(frame, pd.DataFrame):
        kind = type(frame)
        raise SourceError(f"{path}: the pickle holds a {kind.__module__}.{kind.__qualname__}, not a pandas DataFrame")
    if isinstance(frame.columns, pd.MultiIndex):
        raise SourceError(f"{path}: the DataFrame has multi-level column names; flatten them to one level first")
    # Column names may be numbers (0, 1, ...): the spec names them as text.
    frame.columns = [str(name) for name in frame.columns]
    select_columns(path, pa.schema([pa.field(n, pa.null()) for n in frame.columns]), None)
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        # e.g. an object column mixing numbers and text: pyarrow names the column.
        raise SourceError(f"{path}: cannot convert the DataFrame to columns: {exc}") from None
    del frame  # the table holds the data now (sharing numeric columns' memory)
    select_columns(path, table.schema, None)
    try:
        yield from rechunk(table.to_batches(max_chunksize=chunk_rows), chunk_rows, schema=table.schema)
    except pa.ArrowException as exc:  # e.g. bytes values that are not UTF-8 text
        raise SourceError(f"{path}: cannot turn the values into text: {exc}") from None
