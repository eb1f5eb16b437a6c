"""The reconcile's reject, error and success CSVs: written chunk by chunk, in Data Loader's format."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_row_results import _tables

HEADERS = {
    "rejects": ["row", "key", "field", "reason", "code"],
    "errors": ["row", "key", "salesforce_id", "field", "error_code", "message"],
    "success": ["row", "key", "salesforce_id", "created"],
}
KINDS = {"rejects": ["rejects", "load_rejects"], "errors": ["failures", "relink_failures"], "success": ["successes"]}


class _ChunkedStage:
    """Staged tables by chunk and kind; a missing one raises like Redis's stage does."""

    def __init__(self, chunks: dict[int, dict[str, Any]]) -> None:
        self.chunks = chunks
        self.reads = 0

    def get_table(self, key: Any, kind: str) -> Any:
        from dms.staging import StageMissingError

        table = self.chunks.get(key.chunk, {}).get(kind)
        if table is None:
            raise StageMissingError(f"chunk {key.chunk}: no {kind}")
        self.reads += 1
        return table


def _keys(chunks: list[int]) -> list[Any]:
    from dms.staging import ChunkKey

    return [ChunkKey("dag", "run", "contacts", c) for c in chunks]


def _chunks(count: int, unstaged: tuple[str, ...] = ()) -> dict[int, dict[str, Any]]:
    """Staged results of `count` chunks; each chunk's rows are numbered after the chunk before's."""
    import pyarrow as pa

    chunks = {}
    for chunk in range(count):
        tables = {}
        for kind, table in _tables(seed=chunk, rows=200).items():
            if kind in unstaged or kind == "before":
                continue
            rows = [int(r) + chunk * 1000 for r in table.column("row").to_pylist()]
            row_type = table.schema.field("row").type
            numbers = pa.array(rows if pa.types.is_integer(row_type) else [str(r) for r in rows], row_type)
            tables[kind] = table.set_column(0, "row", numbers)
        chunks[chunk] = tables
    return chunks


def _reference(chunks: dict[int, dict[str, Any]], report: str, code: str | None = None) -> bytes:
    """What the reports hold: Excel-dialect CSV, formula cells escaped, rows in order within a chunk."""
    from dms.operators.reconcile import safe_cell

    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(HEADERS[report])
    for chunk in sorted(chunks):
        rows: list[list[Any]] = []
        for kind in KINDS[report]:
            if kind in chunks[chunk]:
                rows += [list(r.values()) for r in chunks[chunk][kind].to_pylist()]
        rows.sort(key=lambda r: int(r[0]))
        writer.writerows([safe_cell(v) for v in row] for row in rows if code is None or row[4] == code)
    return buffer.getvalue().encode("utf-8")


@pytest.mark.parametrize("unstaged", [(), ("load_rejects", "relink_failures", "successes")], ids=["all", "some"])
def test_reports_hold_every_chunks_rows_in_data_loader_format(tmp_path: Path, unstaged: tuple[str, ...]) -> None:
    from dms.operators.reconcile import write_reports

    chunks = _chunks(4, unstaged)
    paths = write_reports(_ChunkedStage(chunks), _keys([0, 1, 2, 3]), tmp_path, "contacts")
    assert [p.name for p in paths] == ["contacts_rejects.csv", "contacts_errors.csv", "contacts_success.csv"]
    for path, report in zip(paths, HEADERS, strict=True):
        assert path.read_bytes() == _reference(chunks, report), report
    # Cells a spreadsheet would run are text, and the file reads back with the csv module.
    rejects = list(csv.DictReader(paths[0].open(encoding="utf-8", newline="")))
    assert rejects and {r["code"] for r in rejects} >= {"'=cmd", "MISSING_PARENT"}
    missing = tmp_path / "contacts_missing_parents.csv"
    assert missing.read_bytes() == _reference(chunks, "rejects", code="MISSING_PARENT")
    assert not list(tmp_path.glob("*.partial"))


def test_reports_read_one_chunk_at_a_time(tmp_path: Path) -> None:
    from dms.operators.reconcile import write_reports

    stage = _ChunkedStage(_chunks(3))
    seen: list[int] = []

    def keys() -> Any:
        # The next chunk is asked for only after the one before is written: nothing piles up.
        for key in _keys([0, 1, 2]):
            seen.append(stage.reads)
            yield key

    write_reports(stage, keys(), tmp_path, "contacts")
    assert seen == [0, 5, 10]


def test_a_chunk_without_its_transform_rejects_fails_and_keeps_the_earlier_reports(tmp_path: Path) -> None:
    from dms.operators.reconcile import write_reports
    from dms.staging import StageMissingError

    chunks = _chunks(2)
    write_reports(_ChunkedStage(chunks), _keys([0, 1]), tmp_path, "contacts")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    del chunks[1]["rejects"]
    with pytest.raises(StageMissingError, match="chunk 1: no rejects"):
        write_reports(_ChunkedStage(chunks), _keys([0, 1]), tmp_path, "contacts")
    # No half-written report replaced the earlier one, and no temporary file is left behind.
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_no_missing_parents_means_no_missing_parent_report(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    from dms.operators.reconcile import write_reports

    chunks = _chunks(2)
    (tmp_path / "contacts_missing_parents.csv").write_text("from an earlier try\n")
    for tables in chunks.values():
        for kind in ("rejects", "load_rejects"):
            codes = tables[kind].column("code")
            fixed = pc.if_else(pc.equal(codes, "MISSING_PARENT"), pa.scalar("REQUIRED", codes.type), codes)
            tables[kind] = tables[kind].set_column(4, "code", fixed)
    write_reports(_ChunkedStage(chunks), _keys([0, 1]), tmp_path, "contacts")
    assert not (tmp_path / "contacts_missing_parents.csv").exists()
    assert (tmp_path / "contacts_rejects.csv").read_bytes() == _reference(chunks, "rejects")


def test_safe_cells_escape_what_safe_cell_escapes() -> None:
    import pyarrow as pa

    from dms.operators.reconcile import safe_cell, safe_cells

    values = ["=1+2", "+x", "-3", "@SUM", "\tx", "\rx", "a=b", "", "'q", " =x", "中"]
    assert safe_cells(pa.array(values, pa.large_string())).to_pylist() == [safe_cell(v) for v in values]


def test_report_lines_are_quoted_as_the_csv_module_quotes_them() -> None:
    import pyarrow as pa

    from dms.row_results import csv_bytes

    cells = ["plain", "a,b", 'say "hi"', "two\nlines", "cr\ronly", "crlf\r\n", "", " lead", "中文,逗号", "'=x"]
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows([[c, c[::-1]] for c in cells])
    columns = {"a": pa.array(cells, pa.large_string()), "b": pa.array([c[::-1] for c in cells], pa.large_string())}
    assert bytes(csv_bytes(columns, "\r\n")) == buffer.getvalue().encode("utf-8")
