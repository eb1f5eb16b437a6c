"""The CSV reader: strings only, exact chunk sizes, row numbers, encodings, and no silently lost rows."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from dms.errors import SourceError
from dms.sources.csv import CsvChunk, iter_csv_chunks
from dms.sources.text import decode_batch
from dms.spec import CsvSource
from dms.transform import REJECT_COLUMNS


def _write(tmp_path: Path, data: bytes | str, name: str = "data.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode(encoding) if isinstance(data, str) else data)
    return path


def _read(path: Path, chunk_rows: int = 1000, **source: object) -> list[CsvChunk]:
    return list(iter_csv_chunks(path, CsvSource(path=path.name, **source), chunk_rows))


def _rows(chunks: list[CsvChunk]) -> list[dict]:
    return [row for chunk in chunks for row in decode_batch(chunk.batch).to_pylist()]


def test_every_column_is_a_string_and_values_are_not_inferred(tmp_path: Path) -> None:
    path = _write(tmp_path, "id,amount,flag,day\n007,1.50,true,2024-01-05\n")
    [chunk] = _read(path)
    assert chunk.batch.schema == pa.schema(
        [
            ("__row", pa.int64()),
            ("id", pa.string()),
            ("amount", pa.string()),
            ("flag", pa.string()),
            ("day", pa.string()),
        ]
    )
    # "007" would become 7 under type inference; the spec decides types, not the reader.
    assert _rows([chunk]) == [{"__row": 2, "id": "007", "amount": "1.50", "flag": "true", "day": "2024-01-05"}]


def test_empty_values_stay_empty_strings_never_null(tmp_path: Path) -> None:
    path = _write(tmp_path, 'a,b,c\n,"",NULL\n')
    [row] = _rows(_read(path))
    assert row == {"__row": 2, "a": "", "b": "", "c": "NULL"}


def test_first_data_row_is_row_2_and_skip_rows_counts_preamble_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, "Exported by ERP\n\nname\nx\ny\n")
    rows = _rows(_read(path, skip_rows=2))
    # Lines 1-2 are the preamble (a blank line counts too), line 3 the header.
    assert [r["__row"] for r in rows] == [4, 5]
    assert [r["name"] for r in rows] == ["x", "y"]


def test_header_names_are_stripped_of_padding(tmp_path: Path) -> None:
    path = _write(tmp_path, " id , name\n1,a\n")
    [chunk] = _read(path)
    assert chunk.batch.column_names == ["__row", "id", "name"]


def test_gb18030_file_with_chinese_header_and_values_is_transcoded(tmp_path: Path) -> None:
    # 𠮷 is outside GBK: GB18030 writes it as a 4-byte sequence, which must survive too.
    text = "客户编号,客户名称,城市\nC001,北京华为技术有限公司,北京\nC002,上海𠮷野家,上海\n"
    path = _write(tmp_path, text, encoding="gb18030")
    chunks = _read(path, encoding="gb18030")
    assert chunks[0].batch.column_names == ["__row", "客户编号", "客户名称", "城市"]
    assert _rows(chunks) == [
        {"__row": 2, "客户编号": "C001", "客户名称": "北京华为技术有限公司", "城市": "北京"},
        {"__row": 3, "客户编号": "C002", "客户名称": "上海𠮷野家", "城市": "上海"},
    ]


def test_utf8_bom_does_not_end_up_in_the_first_column_name(tmp_path: Path) -> None:
    path = _write(tmp_path, b"\xef\xbb\xbfid,name\n1,caf\xc3\xa9\n")
    [chunk] = _read(path)
    assert chunk.batch.column_names == ["__row", "id", "name"]
    assert _rows([chunk]) == [{"__row": 2, "id": "1", "name": "café"}]


def test_quoted_value_with_embedded_newline_and_delimiter_is_one_row(tmp_path: Path) -> None:
    path = _write(tmp_path, 'id,address\n1,"12 Main St\nSuite 4, Floor 2"\n2,plain\n')
    rows = _rows(_read(path))
    assert rows == [
        {"__row": 2, "id": "1", "address": "12 Main St\nSuite 4, Floor 2"},
        # The multi-line record counts as one row: the next one is row 3.
        {"__row": 3, "id": "2", "address": "plain"},
    ]


def test_custom_delimiter_quotechar_and_crlf_line_endings(tmp_path: Path) -> None:
    path = _write(tmp_path, "id;name\r\n1;'Smith; John'\r\n2;Doe\r\n")
    rows = _rows(_read(path, delimiter=";", quotechar="'"))
    assert rows == [{"__row": 2, "id": "1", "name": "Smith; John"}, {"__row": 3, "id": "2", "name": "Doe"}]


def test_malformed_row_is_delivered_with_its_row_number_and_text_not_dropped(tmp_path: Path) -> None:
    path = _write(tmp_path, "id,name,city\n1,a,x\n2,b\n3,c,z,extra\n4,d,w\n")
    [chunk] = _read(path)
    # The good rows around the malformed ones keep their true row numbers.
    assert [r["__row"] for r in _rows([chunk])] == [2, 5]
    assert [(m.row, m.text) for m in chunk.malformed] == [(3, "2,b"), (4, "3,c,z,extra")]
    assert chunk.malformed[0].reason == "row has 2 fields, expected 3 in data.csv"
    assert chunk.rows == 4
    records = chunk.malformed_records()
    assert [list(r) for r in records] == [REJECT_COLUMNS] * 2
    assert records[1]["code"] == "MALFORMED" and records[1]["row"] == 4
    assert "4 fields, expected 3" in records[1]["reason"] and "3,c,z,extra" in records[1]["reason"]


def test_malformed_rows_travel_with_the_chunk_whose_rows_surround_them(tmp_path: Path) -> None:
    lines = ["n,v"] + [f"{i},x" for i in range(1, 7)]
    lines[3] = "bad"  # row 4, between chunk 1 (rows 2-3) and the last row of chunk 2 (rows 5-6)
    lines.append("trailing,bad,row")  # row 8, after the last good row
    path = _write(tmp_path, "\n".join(lines) + "\n")
    chunks = _read(path, chunk_rows=2)
    assert [[r["__row"] for r in c.batch.to_pylist()] for c in chunks] == [[2, 3], [5, 6], [7]]
    assert [[m.row for m in c.malformed] for c in chunks] == [[], [4], [8]]


def test_malformed_rows_after_the_last_full_chunk_get_a_chunk_of_their_own(tmp_path: Path) -> None:
    path = _write(tmp_path, "a,b\n1,2\n3,4\n5\n")
    chunks = _read(path, chunk_rows=2)
    assert [c.batch.num_rows for c in chunks] == [2, 0]
    assert [m.row for m in chunks[1].malformed] == [4]
    assert chunks[1].batch.schema == chunks[0].batch.schema
    assert sum(c.rows for c in chunks) == 3


def test_a_flood_of_malformed_rows_is_a_source_error_not_unbounded_rejects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every row has a trailing delimiter the header lacks: the file is mis-declared.
    monkeypatch.setattr("dms.sources.csv.MAX_MALFORMED_PER_CHUNK", 3)
    path = _write(tmp_path, "a,b\n" + "1,2,\n" * 10)
    with pytest.raises(SourceError) as err:
        _read(path, chunk_rows=2)
    message = str(err.value)
    assert str(path) in message and "row 5: 4 rows with the wrong number of fields" in message
    assert "first at row 2: row has 3 fields, expected 2" in message and "`delimiter` (',')" in message


def test_unclosed_quote_rejects_its_row_and_the_rows_it_swallowed_are_read_again(tmp_path: Path) -> None:
    path = _write(tmp_path, 'a,b\n1,2\n"3,4\n5,6\n7,8\n')
    [chunk] = _read(path)
    assert [(r["__row"], r["a"]) for r in _rows([chunk])] == [(2, "1"), (4, "5"), (5, "7")]
    [bad] = chunk.malformed
    assert (bad.row, bad.text) == (3, '"3,4\n')
    assert bad.reason == "a quoted value opens on this row and is never closed in data.csv"


def test_unclosed_quote_spanning_blocks_rejects_only_its_row(tmp_path: Path) -> None:
    path = _write(tmp_path, "a,b\n1,2\n" + '"3,4\n' + "5,6\n" * 2000)
    # Small blocks: pyarrow gives up on the quote that spans them, the rest is read row by row.
    chunks = list(iter_csv_chunks(path, CsvSource(path="data.csv"), 100, block_size=1024))
    assert [c.batch.num_rows for c in chunks] == [100] * 20 + [1]
    rows = _rows(chunks)
    assert [r["__row"] for r in rows] == [2, *range(4, 2004)]
    assert [(m.row, m.reason) for c in chunks for m in c.malformed] == [
        (3, "a quoted value opens on this row and is never closed in data.csv")
    ]


def test_file_cut_off_inside_a_quoted_value_rejects_the_last_row(tmp_path: Path) -> None:
    path = _write(tmp_path, 'a,b,c\n1,2,3\n4,5,"six is cut')
    [chunk] = _read(path)
    assert [r["__row"] for r in _rows([chunk])] == [2]
    assert [(m.row, m.text) for m in chunk.malformed] == [(3, '4,5,"six is cut')]
    assert "never closed" in chunk.malformed[0].reason


def test_file_without_final_line_break_keeps_its_last_row(tmp_path: Path) -> None:
    # Read again row by row (the last chunk), and the numbers stay those of the fast reader.
    path = _write(tmp_path, 'a,b\n1,"x ""y"""\n\n2,"multi\nline"\n3,z')
    chunks = list(iter_csv_chunks(path, CsvSource(path="data.csv"), 2))
    assert [c.batch.num_rows for c in chunks] == [2, 1]
    assert [(r["__row"], r["b"]) for r in _rows(chunks)] == [(2, 'x "y"'), (3, "multi\nline"), (4, "z")]
    assert not any(c.malformed for c in chunks)


def test_a_row_longer_than_a_block_is_read_whole_with_memory_of_one_row(tmp_path: Path) -> None:
    note = "長" * (3 << 20)  # 9 MiB of UTF-8 in one field, nine times pyarrow's block
    path = _write(tmp_path, f"id,note\n1,short\n2,{note}\n3,after\n")
    chunks = list(iter_csv_chunks(path, CsvSource(path="data.csv"), 2))
    rows = _rows(chunks)
    assert [(r["__row"], len(r["note"])) for r in rows] == [(2, 5), (3, len(note)), (4, 5)]
    assert rows[1]["note"] == note


def test_chunks_have_exactly_chunk_rows_across_block_boundaries_and_rows_are_contiguous(tmp_path: Path) -> None:
    path = _write(tmp_path, "id,text\n" + "".join(f"{i},value number {i}\n" for i in range(1, 1001)))
    # A 1 KiB block holds ~45 rows, so chunks of 70 straddle blocks in every possible way.
    chunks = list(iter_csv_chunks(path, CsvSource(path="data.csv"), 70, block_size=1024))
    assert [c.batch.num_rows for c in chunks] == [70] * 14 + [20]
    rows = _rows(chunks)
    assert [r["__row"] for r in rows] == list(range(2, 1002))
    assert [r["id"] for r in rows] == [str(i) for i in range(1, 1001)]


def test_large_file_streams_in_fixed_chunks_holding_only_a_chunk_in_memory(tmp_path: Path) -> None:
    rows_in_file = 200_000
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8") as handle:
        handle.write("id,name,amount,city\n")
        for i in range(rows_in_file):
            handle.write(f"{i},customer {i:06d},{i * 3}.25,city {i % 97}\n")
    file_size = path.stat().st_size
    assert file_size > 6_000_000

    sizes: list[int] = []
    retained: list[int] = []
    next_row = 2
    for chunk in iter_csv_chunks(path, CsvSource(path="big.csv"), 5_000, block_size=256 << 10):
        sizes.append(chunk.batch.num_rows)
        # The buffers a chunk keeps alive (whole buffers, even when it is a slice): a chunk
        # that pinned the file, or a growing buffer, would show here.
        retained.append(chunk.batch.get_total_buffer_size())
        numbers = chunk.batch.column("__row").to_pylist()
        assert numbers == list(range(next_row, next_row + len(numbers)))
        next_row += len(numbers)
    assert sizes == [5_000] * 40
    assert max(retained) < file_size / 10


def test_rows_the_declared_utf8_cannot_decode_are_rejected_naming_row_byte_and_encoding(tmp_path: Path) -> None:
    body = "id,name\n" + "".join(f"{i},ascii {i}\n" for i in range(5000)) + "5000,客户\n5001,after\n"
    path = _write(tmp_path, body, encoding="gb18030")
    # Small blocks so the bad bytes are met deep in the stream, not in the first block.
    chunks = list(iter_csv_chunks(path, CsvSource(path="data.csv", encoding="utf-8"), 100, block_size=4096))
    rows = _rows(chunks)
    assert len(rows) == 5001 and rows[-1] == {"__row": 5003, "id": "5001", "name": "after"}
    [bad] = [m for c in chunks for m in c.malformed]
    assert bad.row == 5002  # header, 5000 good rows, then the GB18030 one
    assert bad.reason == "byte 0xbf (column 6) is not valid utf-8, the spec's `encoding` for data.csv"
    assert sum(c.rows for c in chunks) == 5002


def test_wrong_declared_encoding_in_the_header_is_a_source_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "客户编号,名称\nC1,x\n", encoding="gb18030")
    with pytest.raises(SourceError, match=r"line 1 .*not valid utf-8.*`encoding`"):
        _read(path)


def test_bytes_a_deferred_encoding_cannot_decode_are_listed_per_row_by_the_decoding(tmp_path: Path) -> None:
    from dms.sources.text import Undecodable

    path = _write(tmp_path, b"id,name\n1,ok\n2,\xff\xfe\n3,fine\n")
    [chunk] = _read(path, encoding="ascii")  # decoded by the transform (dms.sources.text)
    assert chunk.batch.num_rows == 3 and not chunk.malformed
    undecodable: list[Undecodable] = []
    table = decode_batch(chunk.batch, undecodable=undecodable)
    assert table.column("name").to_pylist() == ["ok", "", "fine"]
    assert undecodable == [
        Undecodable(1, "name", f"{path}: row 3, column 'name': byte 0xff is not valid ascii, the spec's `encoding`")
    ]
    with pytest.raises(SourceError, match=r"row 3, column 'name': byte 0xff is not valid ascii"):
        decode_batch(chunk.batch)


def test_missing_file_is_a_source_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"nope\.csv: file not found"):
        _read(tmp_path / "nope.csv")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("id,name,id", r"row 1: column name 'id' appears twice \(columns 1 and 3\)"),
        ("id,,name", r"row 1: header column 2 has no name"),
        ("id,__row", r"row 1: header column 2 uses the reserved name '__row'"),
    ],
)
def test_bad_header_is_a_source_error_naming_the_column(tmp_path: Path, header: str, expected: str) -> None:
    path = _write(tmp_path, header + "\n1,2,3\n")
    with pytest.raises(SourceError, match=expected):
        _read(path)


def test_empty_file_is_a_source_error_and_header_only_file_yields_no_chunks(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no header row"):
        _read(_write(tmp_path, "", name="empty.csv"))
    assert _read(_write(tmp_path, "id,name\n", name="header.csv")) == []


def test_skip_rows_beyond_the_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="has only 2 lines, but skip_rows is 5"):
        _read(_write(tmp_path, "a\nb\n"), skip_rows=5)


def test_chunk_rows_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="chunk_rows"):
        _read(_write(tmp_path, "a\n1\n"), chunk_rows=0)


def test_a_file_without_header_takes_its_column_names_from_the_spec(tmp_path: Path) -> None:
    path = _write(tmp_path, "EXPORT 2024\nC1|华夏|北京\nC2|长城|上海\n", name="customers.txt", encoding="gb18030")
    chunks = _read(
        path, kind="txt", delimiter="|", header=False, columns=["id", "name", "city"], skip_rows=1, encoding="gb18030"
    )
    assert _rows(chunks) == [
        {"__row": 2, "id": "C1", "name": "华夏", "city": "北京"},
        {"__row": 3, "id": "C2", "name": "长城", "city": "上海"},
    ]


@pytest.mark.parametrize(
    ("encoding", "delimiter"),
    [("gbk", ","), ("gbk", "|"), ("gb2312", "\t"), ("big5", ";"), ("cp1252", ",")],
)
def test_legacy_encodings_read_with_any_delimiter_whether_decoded_now_or_by_the_transform(
    tmp_path: Path, encoding: str, delimiter: str
) -> None:
    # "|" with GBK cannot be deferred (it can be a GBK trail byte): the reader transcodes it itself.
    names = {"big5": ["台北", "高雄"], "cp1252": ["Café", "Zürich"]}.get(encoding, ["北京", "上海"])
    text = f"id{delimiter}city\n1{delimiter}{names[0]}\n2{delimiter}{names[1]}\n"
    path = _write(tmp_path, text, encoding=encoding)
    rows = _rows(_read(path, encoding=encoding, delimiter=delimiter))
    assert [r["city"] for r in rows] == names and [r["__row"] for r in rows] == [2, 3]
