"""The fixed-width, Excel, Parquet and pickle readers: text values, chunk sizes, row numbers and errors."""

from __future__ import annotations

import datetime as dt
import os
import pickle
from pathlib import Path
from typing import Any

import openpyxl
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dms.errors import SourceError
from dms.sources import SourceContext, iter_chunks
from dms.sources.base import ROW_COLUMN, SourceChunk, to_text
from dms.sources.excel import iter_excel_chunks
from dms.sources.fixed_width import iter_fixed_width_chunks
from dms.sources.parquet import iter_parquet_chunks
from dms.sources.pickled import iter_pickle_chunks
from dms.spec import ExcelSource, FixedWidthSource, ParquetSource, PickleSource


def _rows(chunks: list[SourceChunk]) -> list[dict[str, Any]]:
    return [row for chunk in chunks for row in chunk.batch.to_pylist()]


def _numbers(chunks: list[SourceChunk]) -> list[list[int]]:
    return [chunk.batch.column(ROW_COLUMN).to_pylist() for chunk in chunks]


def _malformed(chunks: list[SourceChunk]) -> list[list[int]]:
    return [[m.row for m in chunk.malformed] for chunk in chunks]


def _check_placement(chunks: list[SourceChunk]) -> None:
    """Each malformed row travels with the first chunk whose last good row comes after it."""
    previous_last = 0
    for index, chunk in enumerate(chunks):
        numbers = chunk.batch.column(ROW_COLUMN).to_pylist()
        last = numbers[-1] if numbers else float("inf")
        final = index == len(chunks) - 1
        for m in chunk.malformed:
            assert m.row > previous_last and (final or m.row < last), (m.row, previous_last, last)
        previous_last = last if numbers else previous_last


# ================================================================ fixed width


def _fw_line(encoding: str, *values: tuple[str, int]) -> bytes:
    """A fixed-width line: each value padded with spaces to its width in bytes of `encoding`."""
    out = b""
    for text, width in values:
        raw = text.encode(encoding)
        assert len(raw) <= width, (text, width)
        out += raw + b" " * (width - len(raw))
    return out


def _fw(columns: list[Any], **options: Any) -> FixedWidthSource:
    """A spec: columns as (name, width) pairs, dicts, or the spec's own column models."""
    cols = [{"name": c[0], "width": c[1]} if isinstance(c, tuple) else c for c in columns]
    return FixedWidthSource(kind="fixed_width", path="data.txt", columns=cols, **options)


def _read_fw(path: Path, source: FixedWidthSource, chunk_rows: int = 1000, **kwargs: Any) -> list[SourceChunk]:
    return list(iter_fixed_width_chunks(path, source, chunk_rows, **kwargs))


ACCOUNTS = [("id", 5), ("name", 12), ("city", 6), ("amount", 8)]


def test_fixed_width_gb18030_in_bytes_reads_chinese_columns_numbered_by_line(tmp_path: Path) -> None:
    enc = "gb18030"
    lines = [
        "客户导出 2024-12-31".encode(enc),  # banner, skipped
        _fw_line(enc, ("C0001", 5), ("北京华为", 12), ("北京", 6), ("  123.50", 8)),
        b"",  # a blank line is no row, but still a line
        # 𠮷 is outside GBK: four bytes in GB18030. CRLF is a line end too.
        _fw_line(enc, ("C0002", 5), ("上海𠮷野家", 12), ("上海", 6), ("    7.00", 8)) + b"\r",
        b"   \t ",  # blank as well
        _fw_line(enc, ("C0003", 5), ("ACME Ltd", 12), ("广州", 6), ("      -1", 8)),  # no final newline
    ]
    path = tmp_path / "data.txt"
    path.write_bytes(b"\n".join(lines))
    chunks = _read_fw(path, _fw(ACCOUNTS, encoding=enc, skip_rows=1))
    assert chunks[0].batch.schema == pa.schema(
        [
            (ROW_COLUMN, pa.int64()),
            ("id", pa.string()),
            ("name", pa.string()),
            ("city", pa.string()),
            ("amount", pa.string()),
        ]
    )
    # Unstripped: the transform strips (or not, as the field says).
    assert _rows(chunks) == [
        {ROW_COLUMN: 2, "id": "C0001", "name": "北京华为    ", "city": "北京  ", "amount": "  123.50"},
        {ROW_COLUMN: 4, "id": "C0002", "name": "上海𠮷野家", "city": "上海  ", "amount": "    7.00"},
        {ROW_COLUMN: 6, "id": "C0003", "name": "ACME Ltd    ", "city": "广州  ", "amount": "      -1"},
    ]
    assert _malformed(chunks) == [[]]


def test_fixed_width_in_characters_counts_code_points(tmp_path: Path) -> None:
    text = "客户导出\nC0001北京华为  北京    123.50\n\nC0002上海𠮷野家 上海      7.00\n"
    path = tmp_path / "data.txt"
    path.write_text(text, encoding="utf-8")
    source = _fw([("id", 5), ("name", 6), ("city", 2), ("amount", 10)], unit="characters", skip_rows=1)
    expected = [
        {ROW_COLUMN: 2, "id": "C0001", "name": "北京华为  ", "city": "北京", "amount": "    123.50"},
        {ROW_COLUMN: 4, "id": "C0002", "name": "上海𠮷野家 ", "city": "上海", "amount": "      7.00"},
    ]
    assert _rows(_read_fw(path, source)) == expected
    # The same text in GB18030, counted in characters, reads the same (𠮷 is 4 bytes there, 4 in UTF-8).
    path.write_text(text, encoding="gb18030")
    assert _rows(_read_fw(path, _fw(source.columns, unit="characters", skip_rows=1, encoding="gb18030"))) == expected


def test_fixed_width_explicit_starts_allow_gaps_any_order_and_ignore_content_after_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_bytes(b"abc|de|FILLER\n")
    source = _fw([{"name": "second", "start": 5, "width": 2}, {"name": "first", "start": 1, "width": 3}])
    assert _rows(_read_fw(path, source)) == [{ROW_COLUMN: 1, "second": "de", "first": "abc"}]
    # Without `start`, a column follows the one before it in the list.
    source = _fw([{"name": "a", "start": 5, "width": 2}, ("b", 1)])
    assert _rows(_read_fw(path, source)) == [{ROW_COLUMN: 1, "a": "de", "b": "|"}]


def test_fixed_width_short_lines_are_malformed_and_a_line_ending_in_the_last_column_shortens_it(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_bytes(b"001abcd\n002abcdxy\n003ab\n004abcdefghijEXTRA\n")
    chunks = _read_fw(path, _fw([("id", 3), ("name", 4), ("note", 5)]))
    assert _rows(chunks) == [
        {ROW_COLUMN: 1, "id": "001", "name": "abcd", "note": ""},  # ends where the last column starts
        {ROW_COLUMN: 2, "id": "002", "name": "abcd", "note": "xy"},  # ends inside it
        {ROW_COLUMN: 4, "id": "004", "name": "abcd", "note": "efghi"},  # longer: the rest is ignored
    ]
    [[bad]] = [c.malformed for c in chunks]
    assert bad.row == 3 and bad.text == "003ab"
    assert bad.reason == "line has 5 bytes, the columns need 12 (column 'note' starts at byte 8)"
    assert chunks[0].rows == 4
    records = chunks[0].malformed_records()
    assert records[0]["row"] == 3 and records[0]["code"] == "MALFORMED" and "'003ab'" in records[0]["reason"]


def test_fixed_width_short_line_in_characters_names_characters(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("北京\n", encoding="utf-8")
    [chunk] = _read_fw(path, _fw([("a", 2), ("b", 2), ("c", 1)], unit="characters"))
    assert chunk.malformed[0].reason == "line has 2 characters, the columns need 5 (column 'c' starts at character 5)"


def test_fixed_width_a_column_boundary_inside_a_multibyte_character_is_malformed_not_garbled(tmp_path: Path) -> None:
    enc = "gb18030"
    path = tmp_path / "data.txt"
    path.write_bytes(
        b"\n".join(
            [
                "AB中文".encode(enc),  # 中 is bytes 3-4: column a (bytes 1-3) ends inside it
                "ABC文X".encode(enc),  # fine: a = ABC, b = 文X
                "A𠮷B".encode(enc),  # 𠮷 is bytes 2-5: a ends inside it too
            ]
        )
        + b"\n"
    )
    chunks = _read_fw(path, _fw([("a", 3), ("b", 3)], encoding=enc))
    assert _rows(chunks) == [{ROW_COLUMN: 2, "a": "ABC", "b": "文X"}]
    assert [(m.row, m.text, m.reason) for m in chunks[0].malformed] == [
        (1, "AB中文", "column 'a' ends inside a character at byte 3"),
        (3, "A𠮷B", "column 'a' ends inside a character at byte 3"),
    ]
    # A column that starts in the middle of a character (no column ends there).
    path.write_bytes("中文\n".encode(enc))
    [chunk] = _read_fw(path, _fw([{"name": "code", "start": 2, "width": 2}], encoding=enc))
    assert chunk.batch.num_rows == 0
    assert chunk.malformed[0].reason == "column 'code' starts inside a character at byte 2"


def test_fixed_width_utf8_and_single_byte_encodings_in_bytes(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    # UTF-8: é is two bytes, 中 three; a BOM is not part of the first column.
    path.write_bytes(b"\xef\xbb\xbf" + "café中|\n".encode() + "caf中é|\n".encode())
    chunks = _read_fw(path, _fw([("a", 5), ("b", 4)]))
    assert _rows(chunks) == [{ROW_COLUMN: 1, "a": "café", "b": "中|"}]
    assert [(m.row, m.reason) for m in chunks[0].malformed] == [(2, "column 'a' ends inside a character at byte 5")]
    # A first block of nothing but the BOM is not the end of the file; utf-8-sig reads the same.
    for encoding in ("utf-8", "utf-8-sig"):
        again = _read_fw(path, _fw([("a", 5), ("b", 4)], encoding=encoding), block_size=3)
        assert _rows(again) == _rows(chunks) and again[0].malformed == chunks[0].malformed
    # cp1252: every character one byte, so no boundary can split one.
    path.write_bytes("café|ü\n".encode("cp1252"))
    assert _rows(_read_fw(path, _fw([("a", 4), ("b", 2)], encoding="cp1252"))) == [
        {ROW_COLUMN: 1, "a": "café", "b": "|ü"}
    ]


def test_fixed_width_boundaries_without_the_fast_table_are_found_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    enc = "gb18030"
    lines = ["AB中文", "ABC文X", "A𠮷B中", "", "xyz𠮷"] * 30
    path = tmp_path / "data.txt"
    path.write_bytes("\n".join(lines).encode(enc))
    source = _fw([("a", 3), ("b", 4)], encoding=enc)
    fast = _read_fw(path, source, 7, block_size=64)
    # An encoding outside the table's list is read with the byte-by-byte decoder.
    monkeypatch.setattr("dms.sources.fixed_width._PER_CHARACTER", set())
    slow = _read_fw(path, source, 7, block_size=64)
    assert _rows(slow) == _rows(fast) and [c.malformed for c in slow] == [c.malformed for c in fast]
    assert len(_rows(fast)) == 60 and sum(len(c.malformed) for c in fast) == 60


def test_fixed_width_bytes_not_valid_in_the_encoding_name_file_line_column_and_the_encoding_hint(
    tmp_path: Path,
) -> None:
    path = tmp_path / "data.txt"
    body = "".join(f"{i:05d}ascii name\n" for i in range(1, 501)) + "00501北京华为\n"
    path.write_bytes(body.encode("gb18030"))
    source = _fw([("id", 5), ("name", 10)])
    with pytest.raises(SourceError) as err:
        # Small blocks: the bad line is met deep in the stream, after chunks were handed out.
        _read_fw(path, source, 100, block_size=256)
    message = str(err.value)
    assert message.startswith(f"{path}: line 501, column 'name' (byte 6 of the line): byte 0xb1 is not valid utf-8")
    assert "`encoding`" in message and "gb18030" in message

    path.write_bytes(b"00001ok\n00002\xff\xfe\n")
    with pytest.raises(
        SourceError, match=r"line 2, column 'name' \(byte 6 of the line\): byte 0xff is not valid gb18030"
    ):
        _read_fw(path, source.model_copy(update={"encoding": "gb18030"}))
    # In characters the column is found by characters: 北京 are two, so the bad byte is in 'b'.
    path.write_bytes("北京".encode() + b"\xff\n")
    with pytest.raises(SourceError, match=r"line 1, column 'b' \(byte 7 of the line\)"):
        _read_fw(path, _fw([("a", 2), ("b", 2)], unit="characters"))


def test_fixed_width_chunks_are_exact_across_blocks_with_blank_and_malformed_lines(tmp_path: Path) -> None:
    lines: list[str] = []
    for number in range(1, 401):
        if number % 7 == 0:
            lines.append("")
        elif number % 11 == 0:
            lines.append(f"{number:04d}")  # too short: the name column starts at byte 6
        else:
            lines.append(f"{number:05d}名称{number % 13:02d}")
    path = tmp_path / "data.txt"
    path.write_bytes("\n".join(lines).encode("gb18030") + b"\n")
    # 97-byte blocks split lines (and characters) everywhere; chunks of 8 straddle them.
    chunks = _read_fw(path, _fw([("id", 5), ("name", 6)], encoding="gb18030"), 8, block_size=97)
    good = [n for n in range(1, 401) if n % 7 and n % 11]
    bad = [n for n in range(1, 401) if n % 7 and not n % 11]
    assert [c.batch.num_rows for c in chunks] == [8] * (len(good) // 8) + ([len(good) % 8] if len(good) % 8 else [])
    rows = _rows(chunks)
    assert [r[ROW_COLUMN] for r in rows] == good
    assert [r["id"] for r in rows] == [f"{n:05d}" for n in good]  # the value is the line's own
    assert [m for c in _malformed(chunks) for m in c] == bad
    _check_placement(chunks)
    assert sum(c.rows for c in chunks) == len(good) + len(bad)


def test_fixed_width_large_file_streams_holding_only_a_chunk_in_memory(tmp_path: Path) -> None:
    rows_in_file = 150_000
    path = tmp_path / "big.txt"
    with path.open("w", encoding="gb18030", newline="\n") as handle:
        handle.write("BANNER\n")
        for i in range(rows_in_file):
            handle.write(f"{i:08d}客户{i % 97:03d}号 城市{i % 13:02d}{i * 3:>10d}.25\n")
    file_size = path.stat().st_size
    assert file_size > 5_000_000
    source = _fw([("id", 8), ("name", 10), ("city", 6), ("amount", 13)], encoding="gb18030", skip_rows=1)

    sizes: list[int] = []
    retained: list[int] = []
    next_row = 2
    for chunk in iter_fixed_width_chunks(path, source, 5_000, block_size=256 << 10):
        sizes.append(chunk.batch.num_rows)
        # The buffers a chunk keeps alive: one that pinned the file, or a growing buffer, would show.
        retained.append(chunk.batch.get_total_buffer_size())
        numbers = chunk.batch.column(ROW_COLUMN).to_pylist()
        assert numbers == list(range(next_row, next_row + len(numbers)))
        assert not chunk.malformed
        next_row += len(numbers)
    assert sizes == [5_000] * 30
    assert max(retained) < file_size / 10
    last = chunk.batch.slice(chunk.batch.num_rows - 1).to_pylist()[0]
    assert last == {
        ROW_COLUMN: 150_001,
        "id": "00149999",
        "name": "客户037号 ",
        "city": "城市05",
        "amount": "    449997.25",
    }


def test_fixed_width_file_errors_name_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = _fw([("a", 2), ("b", 2)])
    with pytest.raises(SourceError, match=r"nope\.txt: file not found"):
        _read_fw(tmp_path / "nope.txt", source)
    path = tmp_path / "data.txt"
    path.write_bytes(b"line1\nline2\n")
    with pytest.raises(SourceError, match="has only 2 lines, but skip_rows is 5"):
        _read_fw(path, source.model_copy(update={"skip_rows": 5}))
    with pytest.raises(SourceError, match=r"encoding 'utf-16' does not write a newline as the byte 0x0A"):
        _read_fw(path, source.model_copy(update={"encoding": "utf-16"}))
    with pytest.raises(SourceError, match="column name 'a' is given twice"):
        _read_fw(path, _fw([("a", 2), ("a", 2)]))
    with pytest.raises(SourceError, match="column name '__row' is reserved"):
        _read_fw(path, _fw([("__row", 2)]))
    with pytest.raises(ValueError, match="chunk_rows"):
        _read_fw(path, source, 0)
    path.write_bytes(b"")
    assert _read_fw(path, source) == []
    path.write_bytes(b"x" * 500)
    monkeypatch.setattr("dms.sources.fixed_width.MAX_LINE_BYTES", 100)
    with pytest.raises(SourceError, match="line 1 is longer than 100 bytes: the file has no line breaks"):
        _read_fw(path, source, block_size=64)


def test_fixed_width_a_flood_of_malformed_lines_is_a_source_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dms.sources.fixed_width.MAX_MALFORMED_PER_CHUNK", 3)
    path = tmp_path / "data.txt"
    path.write_bytes(b"ab\n" * 10)
    with pytest.raises(SourceError) as err:
        _read_fw(path, _fw([("a", 2), ("b", 2), ("c", 2)]), 2)
    message = str(err.value)
    assert "malformed lines within one chunk (the first at line 1: line has 2 bytes" in message
    assert "`columns`, `unit` (bytes) and `encoding` (utf-8)" in message


def test_the_dispatcher_reads_each_file_kind(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_bytes(b"ab\n")
    chunks = list(iter_chunks(_fw([("a", 1), ("b", 1)]), 10, SourceContext(path=path)))
    assert _rows(chunks) == [{ROW_COLUMN: 1, "a": "a", "b": "b"}]


# ================================================================ Excel


def _workbook(path: Path, sheets: dict[str, list[list[Any]]]) -> Path:
    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)
    for title, rows in sheets.items():
        sheet = workbook.create_sheet(title)
        for row in rows:
            sheet.append(row)
    workbook.save(path)
    return path


def _xlsx(**options: Any) -> ExcelSource:
    return ExcelSource(kind="xlsx", path="book.xlsx", **options)


def _read_xlsx(path: Path, chunk_rows: int = 1000, **options: Any) -> list[SourceChunk]:
    return list(iter_excel_chunks(path, _xlsx(**options), chunk_rows))


def test_excel_typed_cells_become_the_text_to_text_writes(tmp_path: Path) -> None:
    cases: list[tuple[str, Any, str]] = [
        ("int", 42, "42"),
        ("float", 0.1, "0.1"),
        ("small float", 1e-7, "0.0000001"),  # never 1e-07: the number cast would reject it
        ("whole float", 2.5e15, "2500000000000000"),  # stored as 2500000000000000.0
        ("huge float", 1e20, "100000000000000000000"),
        ("true", True, "true"),
        ("false", False, "false"),
        ("date", dt.date(2024, 2, 29), "2024-02-29"),  # a midnight date-time in a date format
        ("datetime", dt.datetime(2024, 1, 5, 10, 30), "2024-01-05T10:30:00"),
        ("midnight", dt.datetime(2024, 1, 5), "2024-01-05T00:00:00"),  # a date-time format shows the time
        ("time", dt.time(10, 30), "10:30:00"),
        ("duration", dt.timedelta(hours=26, minutes=30), "26:30:00"),
        ("empty", None, ""),
        ("text", "  北京 华为  ", "  北京 华为  "),  # not stripped: the transform strips
        ("digits", "007", "007"),
    ]
    path = tmp_path / "book.xlsx"
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["case", "value"])
    for name, value, _ in cases:
        sheet.append([name, value])
    sheet.append(["custom date", 45000])
    sheet.cell(row=sheet.max_row, column=2).number_format = "dd/mm/yyyy"
    workbook.save(path)
    rows = _rows(_read_xlsx(path))
    got = {r["case"]: r["value"] for r in rows}
    assert got == {name: text for name, _, text in cases} | {"custom date": "2023-03-15"}
    # The same values in Arrow columns give the same text.
    for name, arrow in [
        ("float", pa.array([0.1])),
        ("small float", pa.array([1e-7])),
        ("whole float", pa.array([2.5e15])),
        ("huge float", pa.array([1e20])),
        ("true", pa.array([True])),
        ("date", pa.array([dt.date(2024, 2, 29)])),
        ("datetime", pa.array([dt.datetime(2024, 1, 5, 10, 30)], pa.timestamp("us"))),
        ("time", pa.array([dt.time(10, 30)])),
    ]:
        assert to_text(pa.record_batch([arrow], names=["v"])).column(0)[0].as_py() == got[name], name


def test_excel_header_row_names_columns_and_rows_keep_their_sheet_numbers(tmp_path: Path) -> None:
    path = _workbook(
        tmp_path / "book.xlsx",
        {
            "联系人": [
                ["Contacts export", None, None],  # row 1: above the header, ignored
                [" 编号 ", "姓名", "邮箱 ", None],  # row 2: names stripped, a trailing empty cell ignored
                ["C1", "王芳", "wang@example.cn"],
                [None, None, None],  # row 4: empty, skipped (not a row)
                ["C2", "刘洋", "liu@example.cn"],
                ["C3", "extra", "x@example.cn", None, "stray"],  # a value beyond the header: malformed
                ["C4", "#N/A", "y@example.cn"],  # a formula error: malformed
                ["C5"],  # shorter than the header: the rest are empty
                ["  ", None, ""],  # blank cells only: skipped
            ]
        },
    )
    chunks = _read_xlsx(path, sheet="联系人", header_row=2)
    assert chunks[0].batch.schema.names == [ROW_COLUMN, "编号", "姓名", "邮箱"]
    assert _rows(chunks) == [
        {ROW_COLUMN: 3, "编号": "C1", "姓名": "王芳", "邮箱": "wang@example.cn"},
        {ROW_COLUMN: 5, "编号": "C2", "姓名": "刘洋", "邮箱": "liu@example.cn"},
        {ROW_COLUMN: 8, "编号": "C5", "姓名": "", "邮箱": ""},
    ]
    assert [(m.row, m.text, m.reason) for m in chunks[0].malformed] == [
        (6, "C3 | extra | x@example.cn |  | stray", "cell E6 has a value beyond the header's 3 columns"),
        (7, "C4 | #N/A | y@example.cn", "cell B7 holds the error #N/A"),
    ]
    assert sum(c.rows for c in chunks) == 5


def test_excel_chunks_are_exact_and_numbered_across_gaps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows: list[list[Any]] = [["n", "v"]]
    for number in range(2, 80):
        if number % 6 == 0:
            rows.append([None, None])  # empty row
        elif number % 9 == 0:
            rows.append([number, "x", "beyond"])  # malformed
        else:
            rows.append([number, f"值{number}"])
    path = _workbook(tmp_path / "book.xlsx", {"S": rows})
    # Batches of 3 rows inside chunks of 4: both boundaries fall everywhere.
    monkeypatch.setattr("dms.sources.excel.BATCH_ROWS", 3)
    chunks = _read_xlsx(path, 4)
    good = [n for n in range(2, 80) if n % 6 and n % 9]
    bad = [n for n in range(2, 80) if n % 6 and not n % 9]
    assert [c.batch.num_rows for c in chunks] == [4] * (len(good) // 4) + ([len(good) % 4] if len(good) % 4 else [])
    assert [r[ROW_COLUMN] for r in _rows(chunks)] == good
    assert [r["n"] for r in _rows(chunks)] == [str(n) for n in good]
    assert [m for c in _malformed(chunks) for m in c] == bad
    _check_placement(chunks)


def test_excel_sheet_by_name_position_or_first_and_unknown_sheets_list_the_names(tmp_path: Path) -> None:
    path = _workbook(tmp_path / "book.xlsx", {"Summary": [["k"], ["s"]], "Contacts": [["k"], ["c"]]})
    assert _rows(_read_xlsx(path)) == [{ROW_COLUMN: 2, "k": "s"}]
    assert _rows(_read_xlsx(path, sheet=2)) == [{ROW_COLUMN: 2, "k": "c"}]
    assert _rows(_read_xlsx(path, sheet="Contacts")) == [{ROW_COLUMN: 2, "k": "c"}]
    with pytest.raises(SourceError) as err:
        _read_xlsx(path, sheet="contacts")
    assert str(err.value) == f"{path}: no sheet named 'contacts'; the workbook's sheets are 'Summary', 'Contacts'"
    with pytest.raises(SourceError, match=r"no sheet 3: the workbook has 2 \('Summary', 'Contacts'\)"):
        _read_xlsx(path, sheet=3)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (["Id", "Email", "Email"], "sheet 'Contacts', cell C1: column name 'Email' appears twice (also in B1)"),
        (["Id", " ", "Email"], "sheet 'Contacts', cell B1: the header cell is empty"),
        (["Id", "__row"], "sheet 'Contacts', cell B1: column name '__row' is reserved"),
        (["Id", "#REF!"], "sheet 'Contacts', cell B1: the header holds the error #REF!"),
        ([None, None], "sheet 'Contacts', row 1: the header row is empty"),
    ],
)
def test_excel_bad_header_names_the_cell(tmp_path: Path, header: list[Any], expected: str) -> None:
    path = _workbook(tmp_path / "book.xlsx", {"Contacts": [header, ["1", "2", "3"]]})
    with pytest.raises(SourceError) as err:
        _read_xlsx(path)
    assert str(err.value).startswith(f"{path}: {expected}")


def test_excel_workbook_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"book\.xlsx: file not found"):
        _read_xlsx(tmp_path / "book.xlsx")
    path = tmp_path / "book.xlsx"
    path.write_text("id,name\n1,a\n")
    with pytest.raises(SourceError, match=r"book\.xlsx: not an \.xlsx workbook"):
        _read_xlsx(path)
    _workbook(path, {"S": [["a"], ["1"]]})
    with pytest.raises(SourceError, match=r"sheet 'S': no header row 5 \(the sheet has fewer rows\)"):
        _read_xlsx(path, header_row=5)
    _workbook(path, {"S": [["a"]]})
    assert _read_xlsx(path) == []  # a header and no data
    with pytest.raises(ValueError, match="chunk_rows"):
        _read_xlsx(path, 0)


def test_excel_reads_a_sheet_whose_recorded_size_is_wrong(tmp_path: Path) -> None:
    # Some writers record a too-small size; read-only openpyxl would stop there and lose rows.
    path = _workbook(tmp_path / "book.xlsx", {"S": [["a"], *[[str(i)] for i in range(10)]]})
    import zipfile

    with zipfile.ZipFile(path) as source:
        parts = {name: source.read(name) for name in source.namelist()}
    sheet = next(name for name in parts if name.startswith("xl/worksheets/sheet"))
    parts[sheet] = parts[sheet].replace(b'<dimension ref="A1:A11"/>', b'<dimension ref="A1:A3"/>')
    assert b'ref="A1:A3"' in parts[sheet]
    with zipfile.ZipFile(path, "w") as target:
        for name, data in parts.items():
            target.writestr(name, data)
    assert len(_rows(_read_xlsx(path))) == 10


# ================================================================ Parquet


def _typed_table() -> pa.Table:
    return pa.table(
        {
            "id": pa.array([1, 2, None], pa.int64()),
            "amount": pa.array([1.0, 0.1, None]),
            "active": pa.array([True, False, None]),
            "born": pa.array([dt.date(1990, 1, 31), None, dt.date(2000, 2, 29)]),
            "seen": pa.array(
                [dt.datetime(2024, 1, 5, 10, 30), dt.datetime(2024, 1, 5, 10, 30, 0, 250000), None], pa.timestamp("us")
            ),
            "zoned": pa.array([dt.datetime(2024, 1, 5, 2, 30), None, None], pa.timestamp("ms", tz="Asia/Shanghai")),
            "name": pa.array(["北京华为", None, ""]),
            "nothing": pa.nulls(3),
        }
    )


def test_parquet_typed_columns_become_text_with_positions_as_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    pq.write_table(_typed_table(), path)
    chunks = list(iter_parquet_chunks(path, ParquetSource(kind="parquet", path="data.parquet"), 100))
    assert all(pa.types.is_string(f.type) for f in chunks[0].batch.schema if f.name != ROW_COLUMN)
    assert _rows(chunks) == [
        {
            ROW_COLUMN: 1,
            "id": "1",
            "amount": "1",
            "active": "true",
            "born": "1990-01-31",
            "seen": "2024-01-05T10:30:00",
            "zoned": "2024-01-05T10:30:00+08:00",
            "name": "北京华为",
            "nothing": "",
        },
        {
            ROW_COLUMN: 2,
            "id": "2",
            "amount": "0.1",
            "active": "false",
            "born": "",
            "seen": "2024-01-05T10:30:00.250000",
            "zoned": "",
            "name": "",
            "nothing": "",
        },
        {
            ROW_COLUMN: 3,
            "id": "",
            "amount": "",
            "active": "",
            "born": "2000-02-29",
            "seen": "",
            "zoned": "",
            "name": "",
            "nothing": "",
        },
    ]


def test_parquet_chunks_are_exact_across_row_groups_and_columns_can_be_chosen(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    table = pa.table({"id": pa.array(range(1, 24)), "name": pa.array([f"名{i}" for i in range(1, 24)])})
    pq.write_table(table, path, row_group_size=7)
    source = ParquetSource(kind="parquet", path="data.parquet", columns=["name", "id"])
    chunks = list(iter_parquet_chunks(path, source, 5))
    assert [c.batch.num_rows for c in chunks] == [5, 5, 5, 5, 3]
    assert chunks[0].batch.schema.names == [ROW_COLUMN, "name", "id"]
    rows = _rows(chunks)
    assert [r[ROW_COLUMN] for r in rows] == list(range(1, 24))
    assert [r["id"] for r in rows] == [str(i) for i in range(1, 24)] and rows[-1]["name"] == "名23"
    # A file with no rows yields nothing.
    pq.write_table(table.slice(0, 0), path)
    assert list(iter_parquet_chunks(path, source, 5)) == []


def test_parquet_errors_name_the_file_and_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"id": [1], "name": ["a"], "tags": [[1, 2]]}), path)

    def read(**options: Any) -> list[SourceChunk]:
        return list(iter_parquet_chunks(path, ParquetSource(kind="parquet", path="data.parquet", **options), 10))

    with pytest.raises(SourceError) as err:
        read(columns=["id", "nope", "Name"])
    assert str(err.value) == f"{path}: no column 'nope', 'Name' in the file; its columns are 'id', 'name', 'tags'"
    with pytest.raises(SourceError, match=r"column 'tags' is list<element: int64>, which has no text form"):
        read()
    assert _rows(read(columns=["id"])) == [{ROW_COLUMN: 1, "id": "1"}]
    with pytest.raises(SourceError, match="column 'id' appears twice"):
        read(columns=["id", "id"])
    with pytest.raises(SourceError, match=r"data\.parquet\.missing: file not found"):
        list(iter_parquet_chunks(tmp_path / "data.parquet.missing", ParquetSource(kind="parquet", path="x"), 10))
    path.write_text("id,name\n1,a\n")
    with pytest.raises(SourceError) as err:
        read()
    assert str(err.value).startswith(f"{path}: not a Parquet file (")
    # Bytes that are not UTF-8 have no text form either; the error says where.
    pq.write_table(pa.table({"raw": pa.array([b"ok", b"\xff\xfe"], pa.binary())}), path)
    with pytest.raises(SourceError, match=r"data\.parquet: after row 0: cannot turn the values into text"):
        read()


# ================================================================ pickle


def _pickle_source(trusted: bool = True) -> PickleSource:
    # model_construct skips the model's own refusal of untrusted pickles: the reader must refuse too.
    return PickleSource.model_construct(kind="pickle", path="data.pkl", trusted=trusted)


class _Explodes:
    """Unpickling this creates a directory: proof of whether the file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


def test_pickle_of_a_dataframe_becomes_text_chunks_numbered_by_position(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "name": ["北京华为", "上海", None, "广州", "深圳"],
            "count": pd.array([1, None, 3, 4, 5], dtype="Int64"),
            "amount": [1.0, 0.1, float("nan"), 2.5, -3.0],
            "active": [True, False, True, False, True],
            "seen": pd.to_datetime(
                ["2024-01-05 10:30", None, "2024-01-06", "2024-01-07 00:00:01", "2024-01-08"], format="ISO8601"
            ),
            "zoned": pd.to_datetime(["2024-01-05 10:30"] * 5).tz_localize("Asia/Shanghai"),
        },
        index=[10, 20, 30, 40, 50],  # the index is not read
    )
    path = tmp_path / "data.pkl"
    frame.to_pickle(path)
    chunks = list(iter_pickle_chunks(path, _pickle_source(), 2))
    assert [c.batch.num_rows for c in chunks] == [2, 2, 1]
    assert chunks[0].batch.schema.names == [ROW_COLUMN, "name", "count", "amount", "active", "seen", "zoned"]
    rows = _rows(chunks)
    assert [r[ROW_COLUMN] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0] == {
        ROW_COLUMN: 1,
        "name": "北京华为",
        "count": "1",
        "amount": "1",
        "active": "true",
        "seen": "2024-01-05T10:30:00",
        "zoned": "2024-01-05T10:30:00+08:00",
    }
    assert [r["count"] for r in rows] == ["1", "", "3", "4", "5"]
    assert [r["amount"] for r in rows] == ["1", "0.1", "", "2.5", "-3"]  # NaN is pandas' missing value
    assert [r["name"] for r in rows] == ["北京华为", "上海", "", "广州", "深圳"]
    assert rows[3]["seen"] == "2024-01-07T00:00:01" and rows[1]["seen"] == ""
    # Column names that are not text (a frame built from lists) are named by their text.
    pd.DataFrame([[1, "a"]]).to_pickle(path)
    assert _rows(list(iter_pickle_chunks(path, _pickle_source(), 2))) == [{ROW_COLUMN: 1, "0": "1", "1": "a"}]


def test_an_untrusted_pickle_is_refused_without_being_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "was-unpickled"
    path = tmp_path / "data.pkl"
    path.write_bytes(pickle.dumps(_Explodes(marker)))
    with pytest.raises(SourceError) as err:
        list(iter_pickle_chunks(path, _pickle_source(trusted=False), 10))
    assert str(err.value).startswith(f"{path}: not reading a pickle that is not trusted")
    assert "trusted: true" in str(err.value) and "parquet" in str(err.value)
    assert not marker.exists()
    # The spec model refuses it first, in the ordinary way.
    with pytest.raises(ValueError, match="trusted: true"):
        PickleSource(kind="pickle", path="data.pkl")


def test_pickle_errors_name_the_file_and_what_it_holds(tmp_path: Path) -> None:
    path = tmp_path / "data.pkl"

    def read() -> list[SourceChunk]:
        return list(iter_pickle_chunks(path, _pickle_source(), 10))

    with pytest.raises(SourceError, match=r"data\.pkl: file not found"):
        read()
    path.write_bytes(pickle.dumps({"id": [1, 2]}))
    with pytest.raises(SourceError) as err:
        read()
    assert str(err.value) == f"{path}: the pickle holds a builtins.dict, not a pandas DataFrame"
    pd.Series([1, 2]).to_pickle(path)
    with pytest.raises(SourceError, match=r"holds a pandas\..*Series, not a pandas DataFrame"):
        read()
    path.write_bytes(b"id,name\n1,a\n")
    with pytest.raises(SourceError, match=r"data\.pkl: cannot read the pickle: UnpicklingError"):
        read()
    pd.DataFrame({"mixed": [1, "a", 2.5]}).to_pickle(path)
    with pytest.raises(SourceError, match=r"cannot convert the DataFrame to columns: .*mixed"):
        read()
    pd.DataFrame([[1, 2]], columns=["a", "a"]).to_pickle(path)
    with pytest.raises(SourceError, match="column 'a' appears twice"):
        read()
    pd.DataFrame({"id": []}).to_pickle(path)
    assert read() == []
