"""Bad rows the CSV reader reads on row by row, and undecodable values rejected by the transform's log."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dms.errors import SourceError
from dms.sources.csv import iter_csv_chunks
from dms.sources.text import Undecodable, decode_batch
from dms.spec import CsvSource
from dms.transform.rejects import RejectCode, RejectLog, reject_undecodable


def _read(path: Path, chunk_rows: int, block_size: int = 1024) -> list:
    return list(iter_csv_chunks(path, CsvSource(path=path.name), chunk_rows, block_size=block_size))


def test_rows_read_on_row_by_row_keep_the_numbers_the_fast_reader_gives(tmp_path: Path) -> None:
    # Blank lines (not rows) and a quoted line break (one row) before and after the long row.
    body = "id,text\n" + "".join(f"{i},t{i}\n" for i in range(1, 60)) + '\n60,"two\nlines"\n\n'
    tail = "".join(f"{i},t{i}\n" for i in range(62, 120)) + '120,"again\ntwo"\n121,end\n'
    short, long = tmp_path / "short.csv", tmp_path / "long.csv"
    short.write_text(body + "61,short\n" + tail)
    long.write_text(body + "61," + "L" * 5000 + "\n" + tail)
    fast = [(r["__row"], r["id"]) for c in _read(short, 25) for r in decode_batch(c.batch).to_pylist()]
    slow_chunks = _read(long, 25)  # 5000 bytes in a 1 KiB block: read on row by row from row 61's chunk
    slow = [(r["__row"], r["id"]) for c in slow_chunks for r in decode_batch(c.batch).to_pylist()]
    assert slow == fast and len(fast) == 121
    assert [c.batch.num_rows for c in slow_chunks] == [25] * 4 + [21]


def test_a_flood_of_bad_rows_after_the_switch_is_a_source_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dms.sources.csv.MAX_MALFORMED_PER_CHUNK", 3)
    path = tmp_path / "flood.csv"
    path.write_text("a,b\n1," + "x" * 3000 + "\n" + "1,2,3\n" * 10)
    with pytest.raises(SourceError, match=r"flood.csv: row 6: 4 rows that cannot be read within one chunk"):
        _read(path, 2)


def test_a_value_beyond_the_longest_read_is_a_source_error_naming_its_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dms.sources.csv.MAX_FIELD_CHARS", 2000)
    path = tmp_path / "huge.csv"
    path.write_text("a,b\n1,2\n3," + "x" * 3000 + "\n")
    with pytest.raises(SourceError, match=r"huge.csv: row 3: field larger than field limit .*2000 characters"):
        _read(path, 10)


def test_undecodable_values_reject_their_rows_first_with_the_first_reason() -> None:
    log = RejectLog(np.array([2, 3, 4]), pd.Series(["a", "b", "c"], dtype="str"))
    reject_undecodable(
        log,
        [
            Undecodable(1, "name", "f.csv: row 3, column 'name': byte 0x8b is not valid gb18030"),
            Undecodable(1, "city", "f.csv: row 3, column 'city': byte 0x81 is not valid gb18030"),
        ],
    )
    log.add(np.array([True, True, False]), "Name", RejectCode.REQUIRED, "empty")
    frame = log.frame()
    assert frame.to_dict("records") == [
        {"row": 2, "key": "a", "field": "Name", "reason": "empty", "code": "REQUIRED"},
        {
            "row": 3,
            "key": "b",
            "field": "name",
            "reason": "f.csv: row 3, column 'name': byte 0x8b is not valid gb18030",
            "code": "MALFORMED",
        },
    ]
