"""Deferred decoding: legacy encodings read as latin-1 by the extract and decoded by the transform."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pytest

from dms.errors import SourceError
from dms.sources.csv import iter_csv_chunks
from dms.sources.text import decode_batch, decode_column, deferred, transport_encoding
from dms.spec import CsvSource


@pytest.mark.parametrize(
    ("encoding", "structural", "expected"),
    [
        ("gb18030", ',"', "latin-1"),
        ("GBK", '\t"', "latin-1"),
        ("big5", ";'", "latin-1"),
        ("cp1252", ',"', "latin-1"),
        ("koi8_r", '|"', "latin-1"),  # single-byte: every ASCII byte is itself
        # '|' (0x7C) and '\\' can be the second byte of a GBK or Shift_JIS character.
        ("gbk", '|"', None),
        ("shift_jis", ",\\", None),
        # GB18030's four-byte sequences have digits as their second and fourth byte.
        ("gb18030", '0"', None),
        ("utf-16", ',"', None),  # not ASCII-compatible: the reader transcodes it
        ("utf-8", ',"', None),  # read natively, nothing to defer
        ("latin-1", ',"', None),
    ],
)
def test_which_encodings_are_deferred(encoding: str, structural: str, expected: str | None) -> None:
    assert transport_encoding(encoding, structural) == expected


def _values_roundtrip(values: list[str], encoding: str) -> list[str]:
    transported = pa.array([v.encode(encoding).decode("latin-1") for v in values])
    return decode_column(transported, encoding, lambda i: f"value {i}").to_pylist()


def test_decode_column_restores_every_value_including_four_byte_and_empty_ones() -> None:
    rng = random.Random(7)
    alphabet = '北京上海深圳华为技术有限公司𠮷野家·—…€abc ,"\n123'
    values = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(3000)]
    values[5] = ""
    assert _values_roundtrip(values, "gb18030") == values


def test_a_value_holding_a_nul_is_decoded_value_by_value() -> None:
    values = ["客户\x00编号", "", "北京"]
    assert _values_roundtrip(values, "gbk") == values


def test_ascii_only_columns_pass_through_unchanged() -> None:
    column = pa.array(["C001", "2024/05/31", ""])
    assert decode_column(column, "gb18030", str).to_pylist() == ["C001", "2024/05/31", ""]


def _write_gb18030(tmp_path: Path, body: bytes) -> Path:
    path = tmp_path / "accounts.csv"
    path.write_bytes("编号,名称\n".encode("gb18030") + body)
    return path


def test_reader_marks_the_columns_and_decode_batch_gives_the_text(tmp_path: Path) -> None:
    path = _write_gb18030(tmp_path, "C1,华夏\nC2,长城\n".encode("gb18030"))
    [chunk] = iter_csv_chunks(path, CsvSource(path=path.name, encoding="gb18030"), 10)
    assert deferred(chunk.batch.schema.field("名称")) == "gb18030"
    assert chunk.batch.column("名称").to_pylist() != ["华夏", "长城"]  # still latin-1 here
    table = decode_batch(chunk.batch)
    assert table.column("名称").to_pylist() == ["华夏", "长城"]
    assert deferred(table.schema.field("名称")) is None


def test_bytes_that_are_not_valid_in_the_declared_encoding_name_file_row_and_column(tmp_path: Path) -> None:
    # Far enough into the file that the header check (which decodes the start) cannot see it.
    good = "".join(f"C{i},名称{i}\n" for i in range(20_000)).encode("gb18030")
    path = _write_gb18030(tmp_path, good + b"C20000,\xff\xfe\n")
    chunks = list(iter_csv_chunks(path, CsvSource(path=path.name, encoding="gb18030"), 5000))
    for chunk in chunks[:-1]:
        decode_batch(chunk.batch)
    with pytest.raises(SourceError) as err:
        decode_batch(chunks[-1].batch)
    message = str(err.value)
    assert str(path) in message
    assert "row 20002, column '名称'" in message  # header is row 1
    assert "byte 0xff is not valid gb18030" in message and "`encoding`" in message


def test_malformed_rows_of_a_deferred_encoding_are_reported_in_their_own_characters(tmp_path: Path) -> None:
    path = _write_gb18030(tmp_path, "C1,华夏\nC2,长城,多余\nC3,东方\n".encode("gb18030"))
    [chunk] = iter_csv_chunks(path, CsvSource(path=path.name, encoding="gb18030"), 10)
    [record] = chunk.malformed_records()
    assert record["row"] == 3
    assert "长城,多余" in record["reason"]
    assert decode_batch(chunk.batch).column("名称").to_pylist() == ["华夏", "东方"]
