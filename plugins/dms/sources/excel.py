"""One sheet of an .xlsx workbook, streamed in chunks of `chunk_rows` rows with every value as text.

The workbook is read with openpyxl in read-only mode, which parses the sheet's XML as it
goes: memory is about a chunk, whatever the size of the sheet (openpyxl keeps the shared
strings table, one copy of each distinct text, in memory too).

Row numbers (`__row`, and `MalformedRow.row`) are the sheet's own row numbers, as Excel shows
them: the header is row `header_row` and the rows after it keep their numbers, with gaps
where empty rows were skipped. Rows above the header are ignored. A row with a value in a
column the header does not name, or holding a formula error (#N/A, #DIV/0!...), is a
`MalformedRow`, never dropped. Formulas count as their last computed value (what Excel
saved with the file; a workbook written by a program that never calculated it has none).

Cells become text the way `dms.sources.base.to_text` writes typed columns, so a number or a
date reads the same from a workbook as from a Parquet file: 42 for 42 and 42.0, 0.1, true
and false, dates as YYYY-MM-DD and date-times as YYYY-MM-DDTHH:MM:SS. Excel stores a date
as a date-time; one at midnight in a cell whose number format shows no time is a date.
"""

from __future__ import annotations

import datetime as dt
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from dms.errors import SourceError
from dms.sources.base import ROW_COLUMN, ChunkBuilder, MalformedRow, SourceChunk, float_text
from dms.spec import ExcelSource

# Rows are collected as Python strings, which take several times their Arrow size, so they
# are turned into a batch every this many rows (or chunk_rows, if smaller).
BATCH_ROWS = 10_000
# More malformed rows than this (or than chunk_rows, if larger) waiting for one chunk means
# the header row or the sheet is not the one meant: fail instead of rejecting them all.
MAX_MALFORMED_PER_CHUNK = 10_000

_MIDNIGHT = dt.time(0, 0)


def iter_excel_chunks(path: Path, source: ExcelSource, chunk_rows: int) -> Iterator[SourceChunk]:
    """Stream one sheet of `path` as `SourceChunk`s of exactly `chunk_rows` rows (the last one fewer).

    Every column is a string; empty cells are "". A sheet with a header and no data yields
    nothing. A problem with the workbook itself (missing, not .xlsx, no such sheet, a bad
    header) raises `SourceError` naming the file, the sheet and the cell.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
    path = Path(path)
    workbook = _open(path)
    try:
        sheet = _sheet(path, workbook, source.sheet)
        yield from _SheetReader(path, sheet, source.header_row, chunk_rows).chunks()
    finally:
        # Read-only workbooks keep the file open until closed.
        workbook.close()


def _open(path: Path) -> Any:
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    if not path.is_file():
        raise SourceError(f"{path}: file not found")
    try:
        # data_only: a formula's saved value, not its text; read_only: stream the rows.
        return load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise SourceError(f"{path}: not an .xlsx workbook ({exc or type(exc).__name__})") from None


def _sheet(path: Path, workbook: Any, wanted: str | int | None) -> Any:
    names: list[str] = workbook.sheetnames
    listed = ", ".join(repr(n) for n in names)
    if wanted is None:
        title = names[0]
    elif isinstance(wanted, int):
        if not 1 <= wanted <= len(names):
            raise SourceError(f"{path}: no sheet {wanted}: the workbook has {len(names)} ({listed})")
        title = names[wanted - 1]
    elif wanted in names:
        title = wanted
    else:
        raise SourceError(f"{path}: no sheet named {wanted!r}; the workbook's sheets are {listed}")
    sheet = workbook[title]
    if not hasattr(sheet, "iter_rows"):
        raise SourceError(f"{path}: sheet {title!r} is a chart, not a worksheet")
    # Some programs write a wrong size into the sheet, and read-only mode would stop at it:
    # forget it and read every row there is.
    sheet.reset_dimensions()
    return sheet


def cell_text(cell: Any) -> str:
    """A cell's value as text, in the forms of `to_text` (see the module docstring)."""
    value = cell.value
    kind = type(value)
    if kind is str:  # most cells: first, and without a lookup
        return value
    if value is None:
        return ""
    if kind is dt.datetime:
        # Excel has no date type: a date is a date-time at midnight shown in a date format.
        if value.time() == _MIDNIGHT and _shows_date_only(cell):
            return value.date().isoformat()
        # isoformat writes a fraction only when there is one, as to_text does.
        return value.isoformat()
    convert = _CONVERTERS.get(kind)
    if convert is None:
        return str(value)
    return convert(value)


def _duration_text(value: dt.timedelta) -> str:
    # A duration ([h]:mm:ss format) as Excel shows it: hours may exceed 24.
    seconds = round(value.total_seconds())
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    return f"{sign}{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# By exact type, which is what openpyxl gives (so a bool is never taken for an int).
_CONVERTERS: dict[type, Callable[[Any], str]] = {
    bool: lambda v: "true" if v else "false",
    int: str,
    float: float_text,
    dt.date: dt.date.isoformat,
    dt.time: dt.time.isoformat,
    dt.timedelta: _duration_text,
}


def _shows_date_only(cell: Any) -> bool:
    from openpyxl.styles.numbers import is_datetime

    return is_datetime(cell.number_format) == "date"


def _row_text(texts: list[str]) -> str:
    """A row as a person finds it again in the sheet: its values up to the last one, between bars."""
    end = len(texts)
    while end and not texts[end - 1].strip():
        end -= 1
    return " | ".join(texts[:end])


def _coordinate(column: int, row: int) -> str:
    from openpyxl.utils import get_column_letter

    return f"{get_column_letter(column)}{row}"


class _SheetReader:
    def __init__(self, path: Path, sheet: Any, header_row: int, chunk_rows: int) -> None:
        self.path = path
        self.sheet = sheet
        self.title: str = sheet.title
        self.header_row = header_row
        self.chunk_rows = chunk_rows
        self.batch_rows = min(chunk_rows, BATCH_ROWS)
        self.max_malformed = max(chunk_rows, MAX_MALFORMED_PER_CHUNK)
        self.where = f"{path}: sheet {self.title!r}"

    def _rows(self) -> Iterator[tuple[int, tuple[Any, ...]]]:
        """(Excel row number, cells) for every row, empty ones included; read errors as SourceError."""
        rows = self.sheet.iter_rows()
        number = 0
        while True:
            try:
                cells = next(rows)
            except StopIteration:
                return
            except Exception as exc:  # a damaged file: zip, XML or value errors from openpyxl
                after = f"after row {number}" if number else "at its start"
                raise SourceError(f"{self.where}: cannot read the sheet {after}: {exc}") from exc
            # openpyxl yields one entry per row from row 1, filling in rows the file omits.
            number += 1
            yield number, cells

    def chunks(self) -> Iterator[SourceChunk]:
        rows = self._rows()
        names: list[str] | None = None
        for number, cells in rows:
            if number == self.header_row:
                names = self._header(cells)
                break
        if names is None:
            raise SourceError(f"{self.where}: no header row {self.header_row} (the sheet has fewer rows)")
        width = len(names)
        schema = pa.schema([pa.field(ROW_COLUMN, pa.int64()), *(pa.field(n, pa.string()) for n in names)])
        builder = ChunkBuilder(schema, self.chunk_rows)
        numbers: list[int] = []
        values: list[list[str]] = []  # rows of exactly `width` texts
        padding = [""] * width

        def flush() -> Iterator[SourceChunk]:
            # zip(*rows) turns rows into columns in C, not cell by cell in Python.
            columns = zip(*values, strict=True)
            arrays = [pa.array(numbers, pa.int64()), *(pa.array(c, pa.string()) for c in columns)]
            numbers.clear()
            values.clear()
            yield from builder.add(pa.RecordBatch.from_arrays(arrays, schema=schema))

        for number, cells in rows:
            texts = [cell_text(cell) for cell in cells]
            if not any(t.strip() for t in texts):
                continue  # an empty row (or one of blank cells) is not a row at all
            problem = self._problem(number, cells, texts, width)
            if problem is not None:
                builder.add_malformed(MalformedRow(number, _row_text(texts), problem))
                self._check_flood(builder)
                continue
            numbers.append(number)
            # Rows as openpyxl gives them are as long as their last cell: pad or cut to the header.
            values.append(texts[:width] if len(texts) >= width else texts + padding[len(texts) :])
            if len(numbers) >= self.batch_rows:
                yield from flush()
        if numbers:
            yield from flush()
        yield from builder.finish()

    def _header(self, cells: tuple[Any, ...]) -> list[str]:
        names = [cell_text(cell).strip() for cell in cells]
        # Formatted but empty cells after the last name are not columns.
        while names and not names[-1]:
            names.pop()
        if not names:
            raise SourceError(f"{self.where}, row {self.header_row}: the header row is empty")
        seen: dict[str, int] = {}
        for position, name in enumerate(names, start=1):
            cell = f"{self.where}, cell {_coordinate(position, self.header_row)}"
            if getattr(cells[position - 1], "data_type", None) == "e":
                raise SourceError(f"{cell}: the header holds the error {name}, not a column name")
            if not name:
                raise SourceError(f"{cell}: the header cell is empty (every column up to the last needs a name)")
            if name == ROW_COLUMN:
                raise SourceError(f"{cell}: column name {ROW_COLUMN!r} is reserved")
            if name in seen:
                first = _coordinate(seen[name], self.header_row)
                raise SourceError(f"{cell}: column name {name!r} appears twice (also in {first})")
            seen[name] = position
        return names

    def _problem(self, number: int, cells: tuple[Any, ...], texts: list[str], width: int) -> str | None:
        for position, text in enumerate(texts[width:], start=width + 1):
            if text.strip():
                return f"cell {_coordinate(position, number)} has a value beyond the header's {width} columns"
        for position, cell in enumerate(cells[:width], start=1):
            if getattr(cell, "data_type", None) == "e":
                return f"cell {_coordinate(position, number)} holds the error {texts[position - 1]}"
        return None

    def _check_flood(self, builder: ChunkBuilder) -> None:
        if builder.waiting_malformed <= self.max_malformed:
            return
        first = builder.first_waiting_malformed
        assert first is not None
        raise SourceError(
            f"{self.where}: {builder.waiting_malformed} malformed rows within one chunk (the first at row "
            f"{first.row}: {first.reason}); check the spec's `sheet` and `header_row` ({self.header_row})"
        )
