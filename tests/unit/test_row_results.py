"""What the audit stores of each row: sensitive fields masked, attachments readable back."""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import random
from typing import Any

import pytest


def test_sensitive_fields_are_masked_in_what_the_audit_stores() -> None:
    from dms.row_results import mask_row

    obj = _obj(sensitive=True)
    reject = {"row": 3, "key": "li@x.cn", "field": "Phone", "reason": "'138 0000' is longer than 40", "code": "LENGTH"}
    masked = mask_row(obj, reject)
    assert masked["key"] == "***" and "138" not in masked["reason"] and "Phone" in masked["reason"]
    failure = {
        "row": 4,
        "key": "wang@x.cn",
        "id": "",
        "code": "INVALID_EMAIL_ADDRESS",
        "message": "Email: invalid: 'wang@x'",
    }
    assert "wang" not in str(mask_row(obj, failure))
    other = {"row": 5, "key": "a@b.cn", "field": "Title", "reason": "'CEO' too long", "code": "LENGTH"}
    assert mask_row(obj, other)["reason"] == "'CEO' too long"


def test_attachments_read_back_as_rows() -> None:
    from dms.row_results import read_attachment

    data = gzip.compress(b"row,key,id,created\n2,C1,001x,True\n")
    assert read_attachment(data) == [{"row": "2", "key": "C1", "id": "001x", "created": "True"}]
    assert read_attachment(None) == []


def test_bulk_errors_split_into_code_message_and_fields() -> None:
    from dms.salesforce.bulk_csv import split_bulk_error

    assert split_bulk_error("REQUIRED_FIELD_MISSING:Required fields are missing: [Name]:Name --") == (
        "REQUIRED_FIELD_MISSING",
        "Required fields are missing: [Name]",
        "Name",
    )
    assert split_bulk_error("INVALID_CROSS_REFERENCE_KEY:invalid cross reference id:") == (
        "INVALID_CROSS_REFERENCE_KEY",
        "invalid cross reference id",
        "",
    )
    assert split_bulk_error("FIELD_CUSTOM_VALIDATION_EXCEPTION:Amount must be > 0: check it:Amount__c,Stage --")[2] == (
        "Amount__c,Stage"
    )
    assert split_bulk_error("UNABLE_TO_LOCK_ROW:unable to obtain exclusive access to this record") == (
        "UNABLE_TO_LOCK_ROW",
        "unable to obtain exclusive access to this record",
        "",
    )


# ---------------------------------------------------------------- attachments, built in Arrow

# Cells that stress the CSV: delimiters, quotes, line breaks, formula starts, blanks, non-ASCII.
_PIECES = ["a", "Zé", "中文", ",", '"', "'", ":", "\n", " ", "\t", "=", "+", "-", "@", "", "x y"]


class _Stage:
    """Staged tables by kind, missing like Redis says it: the attachments' input, nothing more."""

    def __init__(self, tables: dict[str, Any]) -> None:
        self.tables = tables

    def get_table(self, key: Any, kind: str) -> Any:
        from dms.staging import StageMissingError

        if kind not in self.tables:
            raise StageMissingError(f"no {kind}")
        return self.tables[kind]


def _key() -> Any:
    from dms.staging import ChunkKey

    return ChunkKey("dag", "run", "contacts", 3)


def _obj(sensitive: bool) -> Any:
    from dms.spec import ObjectSpec

    return ObjectSpec.model_validate(
        {
            "name": "contacts",
            "sobject": "Contact",
            "operation": "upsert",
            "external_id": "Email",
            "source": {"path": "c.csv"},
            "fields": {
                "Email": {"source": "mail", "sensitive": sensitive},
                "Phone": {"source": "tel", "sensitive": sensitive},
                "Title": {"source": "title"},
            },
        }
    )


def _text(rng: random.Random, nullable: bool = True) -> str | None:
    if nullable and rng.random() < 0.1:
        return None
    return "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 5)))


def _tables(seed: int, rows: int = 400) -> dict[str, Any]:
    """Every staged result kind, rows out of order, with the column types the engine stages."""
    import pyarrow as pa

    rng = random.Random(seed)

    def numbers(n: int) -> list[int]:
        return [rng.randint(1, rows // 2) for _ in range(n)]  # repeats: ties keep their order

    def reject_columns(n: int) -> dict[str, list[Any]]:
        return {
            "key": [_text(rng) for _ in range(n)],
            "field": [rng.choice(["Email", "Phone", "Title", None, ""]) for _ in range(n)],
            "reason": [_text(rng) for _ in range(n)],
            # A null code or message under sensitive fields is the one place the row rules
            # printed "None"; those get their own test below.
            "code": [rng.choice(["REQUIRED", "MISSING_PARENT", "=cmd", "LENGTH"]) for _ in range(n)],
        }

    def failure_columns(n: int) -> dict[str, list[Any]]:
        return {
            "row": [str(r) for r in numbers(n)],
            "key": [_text(rng) for _ in range(n)],
            "id": [rng.choice(["", "003000000000001AAA", None]) for _ in range(n)],
            "field": [rng.choice(["Email", "Phone", "Title", ""]) for _ in range(n)],
            "code": [rng.choice(["INVALID_EMAIL_ADDRESS", "DUPLICATE_VALUE"]) for _ in range(n)],
            "message": [_text(rng, nullable=False) for _ in range(n)],
        }

    n = rows // 4
    return {
        # The transform stages every column as text; the load's own rejects keep an int row.
        "rejects": pa.table({"row": [str(r) for r in numbers(n)], **reject_columns(n)}),
        "load_rejects": pa.table({"row": pa.array(numbers(n), pa.int64()), **reject_columns(n)}),
        "failures": pa.table(failure_columns(n)),
        "relink_failures": pa.table(failure_columns(n)),
        "successes": pa.table(
            {
                "row": [str(r) for r in numbers(n)],
                "key": [_text(rng) for _ in range(n)],
                "id": [f"003{i:015d}" for i in range(n)],
                "created": [rng.choice([True, False]) for _ in range(n)],
            }
        ),
        "before": pa.table({"Id": [f"003{i:015d}" for i in range(n)], "Title": [_text(rng) for _ in range(n)]}),
    }


def _reference_attachments(stage: Any, key: Any, obj: Any, kinds: list[str]) -> dict[str, bytes]:
    """The row-by-row implementation these attachments replaced (a dict per row, mask_row, csv.writer)."""
    from dms.row_results import ATTACHMENTS, BEFORE, mask_row
    from dms.staging import StageMissingError

    rows: dict[str, list[dict[str, Any]]] = {}
    for kind in kinds:
        name, _ = ATTACHMENTS[kind]
        with contextlib.suppress(StageMissingError):
            rows.setdefault(name, []).extend(stage.get_table(key, kind).to_pylist())
    out: dict[str, bytes] = {}
    with contextlib.suppress(StageMissingError):
        if "successes" not in kinds:
            raise StageMissingError("before-images belong to the load's record")
        before = stage.get_table(key, "before")
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(before.column_names)
        writer.writerows(zip(*(before.column(c).to_pylist() for c in before.column_names), strict=True))
        out[BEFORE] = buffer.getvalue().encode("utf-8")
    for name, records in rows.items():
        columns = next(cols for n, cols in ATTACHMENTS.values() if n == name)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for record in sorted(records, key=lambda r: int(r.get("row", 0))):
            masked = mask_row(obj, record)
            writer.writerow([masked.get(c, "") for c in columns])
        out[name] = buffer.getvalue().encode("utf-8")
    return out


@pytest.mark.parametrize("sensitive", [True, False])
@pytest.mark.parametrize(
    "kinds", [["rejects", "load_rejects", "failures", "successes"], ["relink_failures"]], ids=["load", "relink"]
)
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("unstaged", [(), ("load_rejects", "failures", "before")], ids=["all", "some"])
def test_attachments_are_byte_for_byte_what_the_row_by_row_rules_wrote(
    sensitive: bool, kinds: list[str], seed: int, unstaged: tuple[str, ...]
) -> None:
    from dms.row_results import chunk_attachments, read_attachment

    tables = {kind: table for kind, table in _tables(seed).items() if kind not in unstaged}
    stage, obj = _Stage(tables), _obj(sensitive)
    expected = _reference_attachments(stage, _key(), obj, kinds)
    got = chunk_attachments(stage, _key(), obj, kinds)
    assert list(got) == list(expected)
    for name, data in got.items():
        assert gzip.decompress(data) == expected[name], name
        # ... and the readers see the same rows in it.
        assert read_attachment(data) == list(csv.DictReader(io.StringIO(expected[name].decode())))


def test_attachments_mask_what_mask_row_masks() -> None:
    import pyarrow as pa

    from dms.row_results import chunk_attachments, read_attachment

    tables = {
        "rejects": pa.table(
            {
                "row": ["12", "3"],
                "key": ["li@x.cn", ""],
                "field": ["Phone", "Title"],
                "reason": ["'138 0000' is longer than 40", "'CEO' too long"],
                "code": ["LENGTH", "LENGTH"],
            }
        ),
        "failures": pa.table(
            {
                "row": ["7", "5", "6", "8"],
                "key": ["wang@x.cn", "a@b.cn", "c@d.cn", "e@f.cn"],
                "id": ["", "", "", ""],
                "field": ["Email", "", "", ""],
                "code": ["INVALID_EMAIL_ADDRESS", "X", "Y", "Z"],
                "message": ["Email: invalid: 'wang@x'", 'bad "v" here: yes', "no quote here", "a :b 'c"],
            }
        ),
    }
    got = chunk_attachments(_Stage(tables), _key(), _obj(True), ["rejects", "failures"])
    rejects = read_attachment(got["rejects.csv.gz"])
    assert [r["row"] for r in rejects] == ["3", "12"]
    assert rejects[0] == {"row": "3", "key": "", "field": "Title", "reason": "'CEO' too long", "code": "LENGTH"}
    assert rejects[1]["key"] == "***"
    assert rejects[1]["reason"] == "Phone: rejected (LENGTH); the value is not shown (sensitive field)"
    failures = read_attachment(got["failures.csv.gz"])
    # A quote wins over an earlier colon, as in mask_row: the quote is what holds the value.
    assert [(r["row"], r["key"], r["message"]) for r in failures] == [
        ("5", "***", "bad ***"),
        ("6", "***", "no quote here"),
        ("7", "***", "Email: invalid: ***"),
        ("8", "***", "a :b ***"),
    ]


def test_attachments_read_back_carriage_returns_and_nulls_as_text() -> None:
    import pyarrow as pa

    from dms.row_results import chunk_attachments, read_attachment

    tables = {
        "failures": pa.table(
            {
                "row": ["2", "1"],
                "key": ["k\r1", None],
                "id": [None, "001"],
                "field": ["", ""],
                "code": [None, "X"],
                "message": [None, 'line\r\nbreak, "quoted"'],
            }
        ),
    }
    for sensitive in (False, True):
        rows = read_attachment(
            chunk_attachments(_Stage(tables), _key(), _obj(sensitive), ["failures"])["failures.csv.gz"]
        )
        # csv.writer left a lone "\r" unquoted, which csv.reader cannot read back.
        assert rows[1]["key"] == ("***" if sensitive else "k\r1")
        # A null is an empty cell, even under sensitive fields (the row rules printed "None").
        assert rows[1]["message"] == "" and rows[1]["code"] == "" and rows[1]["id"] == ""
        assert rows[0]["key"] == "" and rows[0]["message"] == (
            'line\r\nbreak, "quoted"' if not sensitive else "line\r\nbreak, ***"
        )


def test_attachments_are_identical_bytes_on_a_retry() -> None:
    from dms.row_results import chunk_attachments

    stage = _Stage(_tables(7))
    kinds = ["rejects", "load_rejects", "failures", "successes"]
    first = chunk_attachments(stage, _key(), _obj(True), kinds)
    assert first == chunk_attachments(stage, _key(), _obj(True), kinds)
    assert all(data[4:8] == b"\0\0\0\0" for data in first.values())  # gzip mtime 0


def test_result_tables_not_staged_make_empty_attachments() -> None:
    import pyarrow as pa

    from dms.row_results import chunk_attachments, read_attachment

    empty = pa.table({c: pa.array([], pa.string()) for c in ["row", "key", "id", "created"]})
    got = chunk_attachments(_Stage({"successes": empty}), _key(), _obj(False), ["failures", "successes"])
    # A dry run stages no load results: its record still says "no failures", with a header.
    assert list(got) == ["failures.csv.gz", "successes.csv.gz"]
    assert gzip.decompress(got["failures.csv.gz"]) == b"row,key,id,field,code,message\n"
    assert gzip.decompress(got["successes.csv.gz"]) == b"row,key,id,created\n"
    assert read_attachment(got["failures.csv.gz"]) == []
