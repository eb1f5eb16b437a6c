"""value_map_file: a two-column CSV under the data root, read once per run by the extract."""

from __future__ import annotations

from pathlib import Path

import pytest

from dms.errors import FatalError

SPEC = """
name: maps
objects:
  - name: accounts
    sobject: Account
    operation: insert
    source: {path: accounts.csv}
    fields:
      Industry: {source: 行业, value_map_file: maps/industry.csv}
"""


def _extract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str):
    from dms.operators.extract import ExtractOperator

    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "industry.csv").write_text(body, encoding="utf-8-sig")
    spec = tmp_path / "maps.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    monkeypatch.setenv("DMS_DATA_ROOT", str(tmp_path))
    return ExtractOperator(task_id="extract", spec_file=str(spec), object_name="accounts")


def test_reads_the_pairs_after_the_header_skipping_blank_lines(tmp_path, monkeypatch) -> None:
    op = _extract(tmp_path, monkeypatch, "旧值,新值\n科技, Technology\n\n金融,Finance\n")
    assert op._value_maps() == {"Industry": {"科技": "Technology", "金融": "Finance"}}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("from,to\n科技,Technology,extra\n", "maps/industry.csv: row 2 has 3 columns"),
        ("from,to\n科技,Technology\n科技,Retail\n", "row 3 maps '科技' again, to 'Retail'"),
    ],
)
def test_bad_files_name_the_file_and_row(tmp_path, monkeypatch, body: str, message: str) -> None:
    op = _extract(tmp_path, monkeypatch, body)
    with pytest.raises(FatalError, match=message):
        op._value_maps()


def test_a_path_leaving_the_data_root_is_refused_by_the_spec() -> None:
    from dms.errors import SpecError
    from dms.spec import parse_spec

    doc = {
        "name": "maps",
        "objects": [
            {
                "name": "a",
                "sobject": "Account",
                "source": {"path": "a.csv"},
                "operation": "insert",
                "fields": {"Industry": {"source": "x", "value_map_file": "../secrets.csv"}},
            }
        ],
    }
    with pytest.raises(SpecError, match=r"fields.Industry: value_map_file must be a path relative to the data root"):
        parse_spec(doc, "maps.yaml")
