"""A broken spec is an import error naming its file and line, and every other spec's DAG still loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT

UNKNOWN_KEY = """\
name: typo
objects:
  - name: accounts
    sobject: Account
    external_id: Legacy_Id__c
    source: {path: a.csv}
    fields:
      Legacy_Id__c: {source: id}
      Name: {sourc: name}
"""
NOT_YAML = "name: broken\nobjects: [\n  - name: a\n"


def test_broken_specs_are_reported_with_file_and_line_while_the_others_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from dms.dag_factory import INVALID_SPECS_DAG_ID

    (tmp_path / "typo.yaml").write_text(UNKNOWN_KEY)
    (tmp_path / "broken.yaml").write_text(NOT_YAML)
    monkeypatch.setenv("DMS_SPEC_PATH", str(tmp_path))
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    # The project's own specs (and their rollback DAGs) are all there despite the broken ones.
    shipped = {f"dms_{p.stem}" for p in (ROOT / "include" / "migrations").glob("*.yaml")}
    assert shipped and shipped | {f"{d}_rollback" for d in shipped} <= set(bag.dags)
    assert INVALID_SPECS_DAG_ID not in bag.dags
    ((file, message),) = bag.import_errors.items()
    assert Path(file).name == "migrations.py"
    assert f"{tmp_path / 'broken.yaml'}: line 3, column 3 not valid YAML: expected the node content" in message
    assert f"{tmp_path / 'typo.yaml'}: invalid migration spec" in message
    assert "line 9: objects[0] (name: accounts).fields.Name.sourc: unknown key" in message


def test_build_valid_dags_raises_what_the_import_error_shows(tmp_path: Path) -> None:
    from dms.dag_factory import build_valid_dags
    from dms.errors import SpecError

    (tmp_path / "typo.yaml").write_text(UNKNOWN_KEY)
    with pytest.raises(SpecError, match=r"typo.yaml: invalid migration spec\n  line 9: objects\[0\]"):
        build_valid_dags(tmp_path)
