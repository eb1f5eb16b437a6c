"""Delimited text exports, streamed in chunks of `chunk_rows` rows with every value as a string.

Row numbers (`__row`, and `MalformedRow.row`) are 1-based positions in the file, the way a
spreadsheet numbers them for an ordinary export: the header is row 1 and the first data row
is row 2. Each line skipped by `skip_rows` counts as one row before the header. A record
whose quoted value spans several lines counts as one row, and blank lines between data
rows are not rows at all (pyarrow drops them and does not count them), so for files with
either of those the row number can be smaller than the line number an editor shows.
This is the numbering pyarrow itself uses for rows it cannot parse, which is what lets
good rows and malformed rows share one sequence with no gaps and no overlaps.
"""

from __future__ import annotations

import codecs
import csv
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from dms.errors import SourceError
from dms.sources.base import (
    ROW_COLUMN,
    ChunkBuilder,
    MalformedRow,
    SourceChunk,
    empty_batch,
    int64_array,
    take_front,
)
from dms.sources.text import ENCODING_HINT, SOURCE_KEY, mark, original, transport_encoding
from dms.spec import CsvSource

# pyarrow parses a block at a time. A record (even one with newlines in a quoted value) must
# fit in one block, so this is also the longest row we can read: 1 MiB holds a row with
# Salesforce's longest text field (131,072 characters, at most 512 KiB of UTF-8) to spare.
# Memory is about chunk_rows rows plus pyarrow's read-ahead, whatever the size of the file:
# its streaming reader reads (and transcodes) up to 32 blocks ahead of the parser, which
# with 4 MiB blocks was about 130 MB of a task's memory for the GB18030 sample
# (bench/bench_pipeline.py); 1 MiB blocks read as fast.
DEFAULT_BLOCK_SIZE = 1 << 20
# More malformed rows than this (or than chunk_rows, if larger) waiting for one chunk means
# a wrong delimiter or quotechar, not a few bad rows: fail instead of rejecting them all.
MAX_MALFORMED_PER_CHUNK = 10_000


# The longest value the row-by-row reader (below) takes, in characters: a 10 MB note field is
# read (and rejected by the transform for Salesforce's length limit, naming both), while a
# runaway value still stops with an error instead of taking a task's memory.
MAX_FIELD_CHARS = 64 << 20
# The row-by-row reader builds its batches this many rows at a time.
_SLOW_BATCH_ROWS = 10_000


# The CSV reader's chunks are the common kind (kept under this name for its callers).
CsvChunk = SourceChunk


def iter_csv_chunks(
    path: Path, source: CsvSource, chunk_rows: int, *, block_size: int = DEFAULT_BLOCK_SIZE
) -> Iterator[CsvChunk]:
    """Stream `path` as `CsvChunk`s whose batches have exactly `chunk_rows` rows (the last one fewer).

    Every column is a string: no type inference, the spec decides the types. Empty values
    stay "" (never null). Rows with the wrong number of fields travel in `CsvChunk.malformed`
    with their row number and text, so they can be rejected with a reason. A file whose
    header has no data rows yields nothing. A file with only malformed rows yields chunks
    with empty batches. A row longer than a block, a quoted value that never closes or
    bytes the declared encoding cannot decode make the rest of the file be read row by row
    (Python's csv module), so that only those rows become malformed rows. Any problem with
    the file itself raises `SourceError` naming the file and, where known, the row.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
    path = Path(path)
    if source.header:
        names, lines_before_data = _read_header(path, source)
    else:
        # Named by the spec; the data starts right after the skipped lines.
        if not path.is_file():
            raise SourceError(f"{path}: file not found")
        names, lines_before_data = list(source.columns or []), source.skip_rows
    reader = _ChunkReader(path, source, names, lines_before_data, chunk_rows, block_size)
    yield from reader


def _python_encoding(encoding: str) -> str:
    # utf-8-sig reads files with and without a BOM alike, so a BOM never ends up in the
    # first column name.
    return "utf-8-sig" if codecs.lookup(encoding).name in {"utf-8", "utf-8-sig"} else encoding


def _arrow_encoding(encoding: str) -> str:
    # pyarrow reads UTF-8 natively and transcodes anything else through Python's codecs,
    # which is slower. A BOM only ever sits in the lines we skip (preamble or header).
    return "utf8" if codecs.lookup(encoding).name in {"utf-8", "utf-8-sig"} else encoding


def _read_header(path: Path, source: CsvSource) -> tuple[list[str], int]:
    """The header's column names and the number of physical lines up to and including it.

    The header is read with Python's csv module so that the names are known before pyarrow
    starts: every column can then be declared a string, and a bad header gets an error that
    names the column instead of a pyarrow message.
    """
    try:
        # surrogateescape: the text layer decodes ahead of the header, and bytes the encoding
        # cannot decode in a data row are that row's problem (see _ChunkReader), not the file's.
        handle = open(path, encoding=_python_encoding(source.encoding), errors="surrogateescape", newline="")  # noqa: SIM115
    except FileNotFoundError:
        raise SourceError(f"{path}: file not found") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot open: {exc.strerror or exc}") from None
    with handle:
        try:
            for skipped in range(source.skip_rows):
                if not handle.readline():
                    raise SourceError(f"{path}: the file has only {skipped} lines, but skip_rows is {source.skip_rows}")
            reader = csv.reader(handle, delimiter=source.delimiter, quotechar=source.quotechar)
            header: list[str] | None = None
            for row in reader:
                if row:  # csv gives [] for a blank line; the header is the first non-blank one
                    header = row
                    break
        except UnicodeDecodeError:
            raise SourceError(_decode_error_message(path, source.encoding)) from None
        except csv.Error as exc:
            raise SourceError(
                f"{path}: row {source.skip_rows + reader.line_num}: cannot parse the header: {exc}"
            ) from None
    if header is None:
        raise SourceError(f"{path}: no header row (the file is empty after skip_rows={source.skip_rows})")
    if _has_surrogate("".join(header)):
        raise SourceError(_decode_error_message(path, source.encoding))
    lines_before_data = source.skip_rows + reader.line_num
    header_row = lines_before_data
    # Exports often pad names ("Name ,Phone"); the spec names columns without the padding.
    names = [name.strip() for name in header]
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if not name:
            raise SourceError(f"{path}: row {header_row}: header column {position} has no name")
        if name == ROW_COLUMN:
            raise SourceError(
                f"{path}: row {header_row}: header column {position} uses the reserved name {ROW_COLUMN!r}"
            )
        if name in seen:
            raise SourceError(
                f"{path}: row {header_row}: column name {name!r} appears twice (columns {seen[name]} and {position})"
            )
        seen[name] = position
    return names, lines_before_data


def _decode_error_message(path: Path, encoding: str) -> str:
    """Find the first line that is not valid `encoding` and say so; only called on failure."""
    where = _first_undecodable(path, encoding)
    return f"{path}: {where} is not valid {encoding}; {ENCODING_HINT}"


def _first_undecodable(path: Path, encoding: str) -> str:
    name = codecs.lookup(encoding).name
    ascii_compatible = "\n,a".encode(name, errors="replace") == b"\n,a"
    try:
        with open(path, "rb") as handle:
            if ascii_compatible:
                # A newline byte never occurs inside a multi-byte character of these
                # encodings (UTF-8, GB18030, GBK, cp125x...), so decoding line by line is exact.
                for lineno, raw in enumerate(handle, start=1):
                    try:
                        raw.decode(name)
                    except UnicodeDecodeError as exc:
                        return f"line {lineno} (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
            else:
                decoder = codecs.getincrementaldecoder(name)()
                offset = 0
                while block := handle.read(1 << 20):
                    try:
                        decoder.decode(block)
                    except UnicodeDecodeError as exc:
                        return f"the byte at offset {offset + exc.start}"
                    offset += len(block)
                decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return "the end of the file"
    except OSError:
        pass
    return "the file"


class _ChunkReader:
    """pyarrow's streaming reader, re-batched to `chunk_rows` and numbered."""

    def __init__(
        self,
        path: Path,
        source: CsvSource,
        names: list[str],
        lines_before_data: int,
        chunk_rows: int,
        block_size: int,
    ) -> None:
        self.path = path
        self.source = source
        self.names = names
        self.chunk_rows = chunk_rows
        self.block_size = block_size
        # Read as latin-1 and decoded by the transforms where that is exact (dms.sources.text):
        # the columns then carry the encoding they still need.
        self.transport = transport_encoding(source.encoding, source.delimiter + source.quotechar)
        columns = [pa.field(n, pa.string()) for n in names]
        if self.transport:
            columns = [mark(f, source.encoding) for f in columns]
        self.schema = pa.schema([pa.field(ROW_COLUMN, pa.int64()), *columns], metadata={SOURCE_KEY: str(path)})
        # pyarrow numbers rows from 1 and counts each skipped line as a row, so the first
        # data row's number is the number of lines before it plus one.
        self.next_row = lines_before_data + 1
        self.lines_before_data = lines_before_data
        self.malformed: deque[MalformedRow] = deque()  # parsed, not yet handed out
        self.unnumbered_bad: deque[int] = deque()  # malformed row numbers >= next_row
        self.pending: deque[pa.RecordBatch] = deque()  # parsed, not yet numbered
        self.pending_rows = 0
        self.last_row = lines_before_data  # last good row handed out in a chunk
        self.max_malformed = max(chunk_rows, MAX_MALFORMED_PER_CHUNK)
        self.failure: SourceError | None = None

    def _on_invalid_row(self, row: Any) -> str:
        # pyarrow ignores exceptions raised here, so a failure is recorded for _translate
        # and the handler answers "error" to stop the reader.
        plural = "s" if row.actual_columns != 1 else ""
        reason = f"row has {row.actual_columns} field{plural}, expected {row.expected_columns} in {self.path.name}"
        if row.number is None or row.number < 0:
            # With use_threads=False pyarrow passes the row number; without it the good
            # rows after this one could not be numbered.
            self.failure = SourceError(f"{self.path}: a {reason} and its row number is unknown")
            return "error"
        if len(self.malformed) >= self.max_malformed:
            # Malformed rows wait in memory until the chunk they belong to is full; this
            # many means the file is not what the spec declares, and keeps memory bounded.
            self.failure = SourceError(
                f"{self.path}: row {row.number}: {len(self.malformed) + 1} rows with the wrong number of fields "
                f"within one chunk (the first at row {self.malformed[0].row}: {self.malformed[0].reason}); "
                f"check the spec's `delimiter` ({self.source.delimiter!r}) and `quotechar` ({self.source.quotechar!r})"
            )
            return "error"
        text = original(row.text, self.source.encoding if self.transport else None)
        self.malformed.append(MalformedRow(int(row.number), text, reason))
        self.unnumbered_bad.append(int(row.number))
        # 'skip' keeps the stream going; the row is handed on with its chunk, not lost.
        return "skip"

    def _open(self) -> pa_csv.CSVStreamingReader:
        source = self.source
        return pa_csv.open_csv(
            str(self.path),
            read_options=pa_csv.ReadOptions(
                use_threads=False,  # the only mode in which pyarrow numbers invalid rows
                block_size=self.block_size,
                skip_rows=self.lines_before_data,
                column_names=self.names,
                encoding=self.transport or _arrow_encoding(source.encoding),
            ),
            parse_options=pa_csv.ParseOptions(
                delimiter=source.delimiter,
                quote_char=source.quotechar,
                double_quote=True,
                newlines_in_values=True,
                ignore_empty_lines=True,
                invalid_row_handler=self._on_invalid_row,
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types={name: pa.string() for name in self.names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )

    def _translate(self, exc: BaseException) -> SourceError:
        if self.failure is not None:
            return self.failure
        if isinstance(exc, SourceError):
            return exc
        if isinstance(exc, UnicodeDecodeError) or "invalid UTF8" in str(exc):
            return SourceError(_decode_error_message(self.path, self.source.encoding))
        # The last row parsed so far, good or malformed: the problem lies after it.
        last_good = int(self._next_numbers(self.pending_rows)[-1]) if self.pending_rows else self.next_row - 1
        parsed = max([last_good, *(m.row for m in self.malformed)])
        after = f"after row {parsed}" if parsed > self.lines_before_data else "in the first rows"
        message = str(exc)
        if "straddl" in message:
            return SourceError(
                f"{self.path}: {after}: a quoted value is never closed, or a row is longer than "
                f"{self.block_size} bytes; check the spec's `quotechar` ({self.source.quotechar!r})"
            )
        if isinstance(exc, OSError) and not isinstance(exc, pa.ArrowException):
            return SourceError(f"{self.path}: cannot read: {exc.strerror or exc}")
        return SourceError(f"{self.path}: {after}: cannot parse: {message}")

    def _next_numbers(self, count: int) -> np.ndarray:
        """Row numbers for the next `count` good rows: consecutive, skipping malformed rows."""
        bad = np.fromiter(self.unnumbered_bad, dtype=np.int64, count=len(self.unnumbered_bad))
        candidates = np.arange(self.next_row, self.next_row + count + len(bad), dtype=np.int64)
        if len(bad):
            candidates = candidates[~np.isin(candidates, bad)]
        return candidates[:count]

    def _number(self, count: int) -> np.ndarray:
        """Give the next `count` good rows their numbers."""
        numbers = self._next_numbers(count)
        self.next_row = int(numbers[-1]) + 1
        while self.unnumbered_bad and self.unnumbered_bad[0] < self.next_row:
            self.unnumbered_bad.popleft()
        return numbers

    def _take(self, count: int) -> pa.RecordBatch:
        """Pop `count` rows off the front of the pending batches and number them.

        Slices, so no quadratic copying. Rows are numbered here, a chunk at a time, rather
        than batch by batch as they arrive: the numbers are the same (every malformed row
        before the chunk's last row has been reported by then), and the loop over batches
        makes no call into pyarrow besides reading. That matters for sources that are not
        UTF-8: pyarrow's reader thread holds the GIL while it transcodes, and every call that
        releases and retakes the GIL here waits for it (one more call per 1 MiB block cost
        about 0.5 s per million rows).
        """
        raw = take_front(self.pending, count)
        self.pending_rows -= count
        return pa.RecordBatch.from_arrays([int64_array(self._number(count)), *raw.columns], schema=self.schema)

    def _chunk(self, batch: pa.RecordBatch, final: bool) -> CsvChunk:
        if batch.num_rows:
            self.last_row = int(batch.column(0)[-1].as_py())
        cut = float("inf") if final else self.last_row
        malformed: list[MalformedRow] = []
        while self.malformed and self.malformed[0].row < cut:
            malformed.append(self.malformed.popleft())
        return CsvChunk(batch=batch, malformed=malformed)

    def __iter__(self) -> Iterator[CsvChunk]:
        try:
            # pyarrow reads the first block as it opens: its errors come from here too.
            reader = self._open()
        except Exception as exc:
            if self.failure is None and _row_by_row_can_read(exc):
                self.log_switch(exc)
                yield from self._rest_row_by_row()
                return
            raise self._translate(exc) from None
        while True:
            try:
                raw = reader.read_next_batch()
            except StopIteration:
                break
            except Exception as exc:
                if self.failure is None and _row_by_row_can_read(exc):
                    # A row longer than a block (a 10 MB note), a quote never closed or bytes
                    # the encoding cannot decode: pyarrow gives up on the whole file there. The
                    # rest is read row by row, so that only the rows at fault are rejected.
                    self.log_switch(exc)
                    yield from self._rest_row_by_row()
                    return
                raise self._translate(exc) from None
            if raw.num_rows == 0:
                continue
            self.pending.append(raw)
            self.pending_rows += raw.num_rows
            while self.pending_rows >= self.chunk_rows:
                batch = self._take(self.chunk_rows)
                # A full chunk that ends the file is still followed by a check for trailing
                # malformed rows below, so it is never "final" here.
                yield self._chunk(batch, final=False)
        if self._last_row_may_be_cut():
            # pyarrow takes a quoted value that runs to the end of the file as if it were
            # closed there: the cut-off row (and any rows it swallowed) is read again.
            yield from self._rest_row_by_row()
            return
        if self.pending_rows:
            yield self._chunk(self._take(self.pending_rows), final=True)
        elif self.malformed:
            # Malformed rows after the last good row, or a file of nothing but malformed
            # rows: hand them out with an empty batch rather than lose them.
            yield self._chunk(empty_batch(self.schema), final=True)

    def log_switch(self, exc: BaseException) -> None:
        import logging

        logging.getLogger(__name__).warning(
            "%s: reading on row by row after row %s (%s)", self.path, self.last_row, str(exc)[:200]
        )

    def _last_row_may_be_cut(self) -> bool:
        """Whether the file may end inside a quoted value, which only a row-by-row read can tell.

        True when the last malformed row holds a line break and an odd number of quote
        characters, or the file does not end with a line break (cut off, or merely written
        without one: then only the last chunk is read again).
        """
        quote = self.source.quotechar
        if self.malformed:
            last = self.malformed[-1]
            tail_good = self._next_numbers(self.pending_rows)[-1] if self.pending_rows else 0
            if last.row > tail_good and ("\n" in last.text or "\r" in last.text) and last.text.count(quote) % 2:
                return True
        try:
            with open(self.path, "rb") as handle:
                size = handle.seek(0, 2)
                if size == 0:
                    return False
                handle.seek(-1, 2)
                if handle.read(1) in (b"\n", b"\r"):
                    return False
                # A value open at the end began within the last block: a longer one would have
                # straddled blocks, which pyarrow refuses (and the rest is read row by row then).
                # So a tail without a quote character ends no quoted value.
                handle.seek(max(0, size - self.block_size))
                tail = handle.read()
        except OSError:
            return False
        if not _ascii_compatible(self.transport or self.source.encoding):
            return True
        return quote.encode("ascii", errors="replace") in tail

    def _rest_row_by_row(self) -> Iterator[CsvChunk]:
        """The rows after the last one handed out, read with Python's csv module, one at a time.

        Rows pyarrow parsed but did not hand out yet are read again and numbered the same
        way (blank lines are not rows, a quoted line break does not end one). Per row: a
        quoted value that never closes rejects its first line and the lines after it are
        read as rows again; the wrong number of fields or bytes the declared encoding cannot
        decode reject that row. Memory stays at one chunk plus one row.
        """
        self.pending.clear()
        self.pending_rows = 0
        self.malformed.clear()
        self.unnumbered_bad.clear()
        resume_after = self.last_row
        builder = ChunkBuilder(self.schema, self.chunk_rows)
        rows: list[int] = []
        values: list[list[str]] = [[] for _ in self.names]

        def flush() -> Iterator[CsvChunk]:
            if not rows:
                return
            arrays = [int64_array(np.array(rows, dtype=np.int64))]
            arrays += [pa.array(column, type=pa.string()) for column in values]
            batch = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
            rows.clear()
            for column in values:
                column.clear()
            yield from builder.add(batch)

        try:
            yield from self._rows_to_chunks(resume_after, builder, rows, values, flush)
        except UnicodeDecodeError:
            # Only from encodings whose bad bytes surrogateescape cannot keep (UTF-16 and the like).
            raise SourceError(_decode_error_message(self.path, self.source.encoding)) from None
        yield from flush()
        yield from builder.finish()

    def _rows_to_chunks(
        self,
        resume_after: int,
        builder: ChunkBuilder,
        rows: list[int],
        values: list[list[str]],
        flush: Callable[[], Iterator[CsvChunk]],
    ) -> Iterator[CsvChunk]:
        for number, fields, problem, text in self._python_rows(resume_after):
            if problem is not None:
                # The good rows before it first, so that only the malformed rows of the chunk
                # being filled wait in the builder (the flood check below counts them).
                yield from flush()
                builder.add_malformed(MalformedRow(number, text, problem))
                if builder.waiting_malformed > self.max_malformed:
                    first = builder.first_waiting_malformed
                    assert first is not None
                    raise SourceError(
                        f"{self.path}: row {number}: {builder.waiting_malformed} rows that cannot be read within "
                        f"one chunk (the first at row {first.row}: {first.reason}); check the spec's `encoding` "
                        f"({self.source.encoding!r}), `delimiter` ({self.source.delimiter!r}) and `quotechar` "
                        f"({self.source.quotechar!r})"
                    )
                continue
            rows.append(number)
            for column, value in zip(values, fields, strict=True):
                column.append(value)
            if len(rows) >= _SLOW_BATCH_ROWS:
                yield from flush()

    def _python_rows(self, resume_after: int) -> Iterator[tuple[int, list[str], str | None, str]]:
        """(row number, fields, problem or None, the row's text) for the data rows after `resume_after`."""
        source = self.source
        name = self.path.name
        expected = len(self.names)
        quote = source.quotechar
        # The transport encoding maps every byte to a character; the others keep bytes they
        # cannot decode as surrogates, so that such a row is reported instead of the file failing.
        encoding = self.transport or _python_encoding(source.encoding)
        errors = "strict" if self.transport else "surrogateescape"
        csv.field_size_limit(MAX_FIELD_CHARS)
        number = self.lines_before_data
        with open(self.path, encoding=encoding, errors=errors, newline="") as handle:
            for _ in range(self.lines_before_data):
                handle.readline()
            lines: Iterator[str] = iter(handle)
            if number < resume_after:
                # Only counted: these rows were handed out already. csv's reader takes lines one
                # at a time, so the next reader starts right after the last row skipped.
                for fields in csv.reader(lines, delimiter=source.delimiter, quotechar=quote, doublequote=True):
                    number += bool(fields)
                    if number == resume_after:
                        break
            while True:
                consumed: list[str] = []
                ended = [False]

                def feed(src: Iterator[str] = lines, consumed: list[str] = consumed, ended: list[bool] = ended):
                    for line in src:
                        consumed.append(line)
                        yield line
                    ended[0] = True

                reader = csv.reader(feed(), delimiter=source.delimiter, quotechar=quote, doublequote=True)
                again: list[str] | None = None
                while True:
                    try:
                        fields = next(reader)
                    except StopIteration:
                        break
                    except csv.Error as exc:
                        raise SourceError(
                            f"{self.path}: row {number + 1}: {exc}; a value longer than {MAX_FIELD_CHARS} "
                            f"characters is not read (check the spec's `quotechar` ({quote!r}))"
                        ) from None
                    text = "".join(consumed)
                    consumed.clear()
                    if not fields:
                        continue  # a blank line is not a row
                    number += 1
                    if ended[0] and _open_quote_at_end(text, source):
                        first, *rest = text.splitlines(keepends=True)
                        yield number, [], f"a quoted value opens on this row and is never closed in {name}", first
                        again = rest
                        break
                    problem = None
                    if not self.transport:
                        problem = _undecodable(text, source.encoding, name)
                    if problem is None and len(fields) != expected:
                        plural = "s" if len(fields) != 1 else ""
                        problem = f"row has {len(fields)} field{plural}, expected {expected} in {name}"
                    if problem is not None:
                        text = original(text, source.encoding if self.transport else None)
                        yield number, [], problem, _printable(text.rstrip("\r\n"))
                    else:
                        yield number, fields, None, ""
                if again is None:
                    return
                # The lines a never-closed quote swallowed are rows of their own.
                lines = iter(again)


def _row_by_row_can_read(exc: BaseException) -> bool:
    """pyarrow errors that the row-by-row reader turns into rejected rows instead of a failed file."""
    message = str(exc)
    return "straddl" in message or isinstance(exc, UnicodeDecodeError) or "invalid UTF8" in message


def _ascii_compatible(encoding: str) -> bool:
    try:
        return '\n,"a'.encode(encoding) == b'\n,"a'
    except (LookupError, UnicodeError):
        return False


def _open_quote_at_end(text: str, source: CsvSource) -> bool:
    """Whether the last row of the file ends inside a quoted value (the file was cut off there)."""
    try:
        list(csv.reader([text], delimiter=source.delimiter, quotechar=source.quotechar, strict=True))
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


def _undecodable(text: str, encoding: str, name: str) -> str | None:
    """The problem of a row read with surrogateescape: its first byte the encoding cannot decode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        byte = ord(text[exc.start]) - 0xDC00
        line = text[: exc.start].count("\n") + 1
        where = f"line {line} of the row, " if line > 1 else ""
        column = exc.start - (text.rfind("\n", 0, exc.start) + 1) + 1
        return f"byte 0x{byte:02x} ({where}column {column}) is not valid {encoding}, the spec's `encoding` for {name}"
    return None


def _printable(text: str) -> str:
    """A row for a reject reason: undecodable bytes (kept as surrogates) shown as U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace") if _has_surrogate(text) else text


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
