"""DAG integrity: every spec parses to a DAG, with tags and retries, and no import errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT

SPECS = sorted((ROOT / "include" / "migrations").glob("*.yaml"))


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_dag_files_import_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}


@pytest.mark.parametrize("spec_file", SPECS, ids=[p.stem for p in SPECS])
def test_every_spec_becomes_a_dag_with_tags_and_retries(dagbag, spec_file: Path) -> None:
    from dms.spec import load_spec

    spec = load_spec(spec_file)
    dag = dagbag.dags.get(spec.dag_id)
    assert dag is not None, f"{spec_file.name} did not become a DAG"
    assert dag.tags and "dms" in dag.tags
    for task in dag.tasks:
        if task.task_id != "reconcile":
            assert task.retries >= 2, f"{task.task_id} has retries={task.retries}"
    assert {"dry_run", "chunk_rows", "max_error_rate", "full_refresh"} <= set(dag.params.keys())
    for name in ("dry_run", "chunk_rows", "max_error_rate", "full_refresh"):
        param = dag.params.get_param(name)
        assert param.schema.get("title") and param.description


def test_task_ids_are_stable_across_parses() -> None:
    from dms.dag_factory import build_dags

    first = {d: sorted(t.task_id for t in dag.tasks) for d, dag in build_dags(ROOT / "include/migrations").items()}
    second = {d: sorted(t.task_id for t in dag.tasks) for d, dag in build_dags(ROOT / "include/migrations").items()}
    assert first == second and first


def test_invalid_spec_is_an_import_error_naming_file_and_yaml_path(tmp_path: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    dags = tmp_path / "dags"
    specs = tmp_path / "include" / "migrations"
    dags.mkdir()
    specs.mkdir(parents=True)
    shutil.copy(ROOT / "dags" / "migrations.py", dags / "migrations.py")
    (specs / "broken.yaml").write_text(
        "name: broken\nobjects:\n  - name: accounts\n    sobject: Account\n    operation: upsert\n"
        "    external_id: Legacy_Id__c\n    source: {path: a.csv}\n"
        "    fields:\n      Legacy_Id__c: {source: id, typo: 1}\n"
    )
    bag = DagBag(dag_folder=str(dags))
    (message,) = bag.import_errors.values()
    assert "broken.yaml" in message
    assert "objects[0] (name: accounts).fields.Legacy_Id__c.typo: unknown key" in message


def test_dag_file_parses_without_connections_or_pandas() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.path[:0] = ['plugins']\n"
        "import runpy; runpy.run_path('dags/migrations.py')\n"
        "heavy = [m for m in ('pandas', 'pyarrow', 'simple_salesforce', 'redis', 'ibmcloudant') if m in sys.modules]\n"
        "print('heavy=' + ','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "heavy="


@pytest.mark.parametrize("spec_file", SPECS, ids=[p.stem for p in SPECS])
def test_rollback_dag_and_pools_of_every_spec(dagbag, spec_file: Path) -> None:
    """Each spec also has its rollback DAG; every task that writes to Salesforce runs in a pool
    that airflow_settings.yaml defines (a task in a missing pool is never scheduled)."""
    import yaml

    from dms.spec import load_spec

    spec = load_spec(spec_file)
    settings = yaml.safe_load((ROOT / "airflow_settings.yaml").read_text())["airflow"]
    pools = {p["pool_name"] for p in settings["pools"]}
    rollback = dagbag.dags.get(f"{spec.dag_id}_rollback")
    assert rollback is not None and "rollback" in rollback.tags
    assert rollback.params.get_param("run_id").schema.get("title")
    writers = [t for t in dagbag.dags[spec.dag_id].tasks if t.task_id.endswith((".load", ".relink"))]
    writers += list(rollback.tasks)
    assert writers
    assert {t.pool for t in writers} == {f"dms_{spec.connections.salesforce}"}
    assert {t.pool for t in writers} <= pools
    # The other tasks do not hold Salesforce slots.
    assert {t.pool for t in dagbag.dags[spec.dag_id].tasks if t not in writers} == {"default_pool"}
