"""The Bulk API 2.0 CSV body and the pairing of result lines with uploaded rows (pure logic)."""

from __future__ import annotations

import csv
import io
import random
from collections import Counter

import pandas as pd
import pytest

from dms.errors import ReconcileError
from dms.salesforce.bulk_csv import match_results, read_results, to_bulk_csv

TRICKY = [
    "plain",
    "",
    'a "quoted" word',
    "comma, inside",
    "line\nbreak",
    "crlf\r\nbreak",
    "华为技术",
    "x\x1fy",
    "\\",
    "=1+2",
]


def _frame(rows: list[list[str]], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns, dtype="str")
    frame.insert(0, "__row", range(2, len(rows) + 2))
    return frame


def _result_csv(header: list[str], lines: list[list[str]]) -> bytes:
    # Salesforce quotes only where needed, and may use CRLF; the reader must not care.
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(lines)
    return buffer.getvalue().encode("utf-8")


def test_the_upload_body_quotes_every_cell_and_reads_back_exactly() -> None:
    columns = ["Name", "Description"]
    rows = [[a, b] for a in TRICKY for b in TRICKY[:3]]
    body = to_bulk_csv(_frame(rows, columns), columns)
    assert body.startswith(b'"Name","Description"\n')
    assert b"\r\n" not in body.replace(b"crlf\r\nbreak", b"")
    parsed = list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))
    assert parsed == [columns, *rows]
    # Every cell quoted, the empty ones too: Bulk API 2.0 reads "" and an empty cell alike.
    assert body.count(b'""\n') + body.count(b'"",') >= len(rows) // len(TRICKY)


def test_results_in_any_order_pair_with_their_rows_duplicates_one_to_one() -> None:
    columns = ["Legacy_Id__c", "Name"]
    rng = random.Random(7)
    rows = [[f"K{i % 40}", rng.choice(TRICKY)] for i in range(120)]  # many identical rows
    frame = _frame(rows, columns)
    ok: list[list[str]] = []
    bad: list[list[str]] = []
    skip: list[list[str]] = []
    for row, values in zip(frame["__row"], rows, strict=True):
        outcome = rng.choice(["ok", "bad", "skip"])
        if outcome == "ok":
            ok.append([f"001{row:015d}", rng.choice(["true", "false"]), *values])
        elif outcome == "bad":
            bad.append(["", "REQUIRED_FIELD_MISSING:Required fields are missing: [Name]:Name --", *values])
        else:
            skip.append(values)
    for part in (ok, bad, skip):
        rng.shuffle(part)
    loaded, failures = match_results(
        frame,
        columns,
        _result_csv(["sf__Id", "sf__Created", *columns], ok),
        _result_csv(["sf__Id", "sf__Error", *columns], bad),
        _result_csv(columns, skip),
        "the job failed",
    )
    by_row = dict(zip(frame["__row"], map(tuple, rows), strict=True))
    assert len(loaded) + len(failures) == len(rows)
    assert sorted(r["row"] for r in loaded + failures) == sorted(by_row)
    # Each result went to a row with exactly the values it echoes.
    echoed = {line[0]: tuple(line[2:]) for line in ok}
    assert all(by_row[r["row"]] == echoed[r["id"]] for r in loaded)
    # Identical rows are interchangeable: per outcome, the values paired are those echoed.
    missing = [f for f in failures if f["code"] == "REQUIRED_FIELD_MISSING"]
    unprocessed = [f for f in failures if f["code"] == "UNPROCESSED"]
    assert len(missing) + len(unprocessed) == len(failures)
    assert Counter(by_row[f["row"]] for f in missing) == Counter(tuple(line[2:]) for line in bad)
    assert Counter(by_row[f["row"]] for f in unprocessed) == Counter(map(tuple, skip))
    assert all(f["field"] == "Name" and f["message"] == "Required fields are missing: [Name]" for f in missing)
    assert all(f["message"] == "the job failed" for f in unprocessed)


def test_a_result_for_a_row_that_was_not_uploaded_is_an_error() -> None:
    columns = ["Name"]
    frame = _frame([["A"], ["B"]], columns)
    with pytest.raises(ReconcileError, match="not uploaded"):
        match_results(
            frame,
            columns,
            _result_csv(["sf__Id", "sf__Created", "Name"], [["1", "true", "A"], ["2", "true", "C"]]),
            b"",
            b"",
            "",
        )
    with pytest.raises(ReconcileError, match="1 results for 2 uploaded rows"):
        match_results(
            frame, columns, _result_csv(["sf__Id", "sf__Created", "Name"], [["1", "true", "A"]]), b"", b"", ""
        )


def test_separator_inside_values_cannot_make_two_rows_look_alike() -> None:
    # Joined naively, ("a\x1fb", "c") and ("a", "b\x1fc") would be the same key.
    columns = ["X", "Y"]
    frame = _frame([["a\x1fb", "c"], ["a", "b\x1fc"]], columns)
    ok = [["id1", "true", "a", "b\x1fc"], ["id2", "true", "a\x1fb", "c"]]
    loaded, failures = match_results(frame, columns, _result_csv(["sf__Id", "sf__Created", *columns], ok), b"", b"", "")
    assert failures == []
    assert {r["id"]: r["row"] for r in loaded} == {"id1": 3, "id2": 2}


def test_result_files_read_every_cell_as_text() -> None:
    table = read_results(b'\xef\xbb\xbf"sf__Id","sf__Created","N"\n"001","true","007"\n"002","false",""\n')
    assert table.column_names == ["sf__Id", "sf__Created", "N"]
    assert table.to_pylist() == [
        {"sf__Id": "001", "sf__Created": "true", "N": "007"},
        {"sf__Id": "002", "sf__Created": "false", "N": ""},
    ]
    assert read_results(b"").num_rows == 0
