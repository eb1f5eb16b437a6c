"""Recovery across runs: every row's result in the audit, and retrying only the rows that did not load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scripts.services import EmulatorProcess
from tests.conftest import ROOT

DAG_ID = "dms_legacy_crm_accounts"
SAMPLE = ROOT / "include" / "data" / "legacy_crm" / "accounts_gb18030.csv"

pytestmark = pytest.mark.usefixtures("airflow_db")


def _run(conf: dict[str, Any] | None = None) -> Any:
    from dms.dag_factory import build_dags

    return build_dags(ROOT / "include" / "migrations")[DAG_ID].test(run_conf=conf or {})


def _audit() -> Any:
    from dms.audit import Audit
    from dms.hooks.cloudant import DmsCloudantHook

    return Audit(DmsCloudantHook().get_conn())


def test_chunk_records_carry_every_rows_result_as_csv_attachments(emulator, dms_connections) -> None:
    from dms.row_results import read_attachment

    run = _run()
    audit = _audit()
    rows: dict[str, list[dict[str, str]]] = {"rejects.csv.gz": [], "successes.csv.gz": [], "failures.csv.gz": []}
    for doc in audit.get_chunks(DAG_ID, run.run_id, "accounts"):
        for name in rows:
            rows[name] += read_attachment(audit.get_attachment(doc["_id"], name))
    assert sorted(r["key"] for r in rows["rejects.csv.gz"]) == ["C0007", "C0008", "C0009", "C0010"]
    assert {r["code"] for r in rows["rejects.csv.gz"]} == {"REQUIRED", "TYPE", "VALUE_MAP"}
    ids = {a["Legacy_Id__c"]: a["Id"] for a in emulator.admin("/__emulator/export/Account")["records"]}
    assert {r["key"]: r["id"] for r in rows["successes.csv.gz"]} == ids
    assert {r["created"] for r in rows["successes.csv.gz"]} == {"True"}
    assert rows["failures.csv.gz"] == []
    doc = audit.get_run(DAG_ID, run.run_id)
    assert doc["spec"] == "legacy_crm_accounts" and len(doc["spec_sha256"]) == 64
    assert doc["params"]["chunk_rows"] == 5 and doc["status"] == "success"
    assert doc["start_date"] and doc["end_date"]


def test_retry_failed_from_resubmits_only_the_rows_that_did_not_load(
    emulator: EmulatorProcess, dms_connections, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _run()
    assert first.state == "success"
    before = {a["Legacy_Id__c"]: a for a in emulator.admin("/__emulator/export/Account")["records"]}
    assert len(before) == 8

    # The user fixes the four rejected rows in the export (same rows, same order).
    data_root = tmp_path / "data"
    (data_root / "legacy_crm").mkdir(parents=True)
    text = SAMPLE.read_bytes().decode("gb18030")
    fixed = (
        text.replace("C0007,,", "C0007,北京新创科技,")
        .replace("2019/13/45", "2019/12/25")
        .replace("未知行业", "零售")
        .replace(",abc,", ",4200000,")
    )
    (data_root / "legacy_crm" / "accounts_gb18030.csv").write_bytes(fixed.encode("gb18030"))
    monkeypatch.setenv("DMS_DATA_ROOT", str(data_root))
    # Even a good row changed in the file is not re-sent: only the failed rows are retried.
    (data_root / "legacy_crm" / "accounts_gb18030.csv").write_bytes(
        fixed.replace("北京华夏科技有限公司", "改过的名字").encode("gb18030")
    )

    second = _run({"retry_failed_from": first.run_id})
    assert second.state == "success"
    after = {a["Legacy_Id__c"]: a for a in emulator.admin("/__emulator/export/Account")["records"]}
    assert set(after) == set(before) | {"C0007", "C0008", "C0009", "C0010"}
    assert after["C0007"]["Name"] == "北京新创科技" and after["C0008"]["Customer_Since__c"] == "2019-12-25"
    assert after["C0010"]["AnnualRevenue"] == 4200000.0
    assert after["C0001"]["Name"] == "北京华夏科技有限公司"
    assert {k: after[k]["LastModifiedDate"] for k in before} == {k: a["LastModifiedDate"] for k, a in before.items()}

    audit = _audit()
    doc = audit.get_run(DAG_ID, second.run_id)
    assert doc["retry_of"] == first.run_id
    assert doc["objects"]["accounts"]["source"] == 4 and doc["objects"]["accounts"]["loaded"] == 4
    assert audit.get_run(DAG_ID, first.run_id)["retried_by"] == [second.run_id]


def test_retry_from_an_unknown_run_is_a_clear_error(emulator, dms_connections) -> None:
    run = _run({"retry_failed_from": "manual__1999-01-01T00:00:00+00:00"})
    assert run.state == "failed"
    tis = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert tis["accounts.extract"] == "failed"


def test_rollback_deletes_what_the_run_created_and_restores_what_it_changed(
    emulator: EmulatorProcess, dms_connections
) -> None:
    from simple_salesforce import Salesforce

    from dms.dag_factory import build_dags

    token = emulator.token()
    sf = Salesforce(instance_url=token["instance_url"], session_id=token["access_token"], version="62.0")
    existing = sf.Account.create(
        {"Legacy_Id__c": "C0001", "Name": "旧名称", "Industry": "Retail", "Phone": "010-1", "Active__c": False}
    )["id"]
    run = _run()
    assert run.state == "success"
    changed = sf.Account.get(existing)
    assert (changed["Name"], changed["Industry"], changed["AnnualRevenue"]) == (
        "北京华夏科技有限公司",
        "Technology",
        12500000.5,
    )

    rollback = build_dags(ROOT / "include" / "migrations")[f"{DAG_ID}_rollback"].test(run_conf={"run_id": run.run_id})
    assert rollback.state == "success"
    live = {a["Legacy_Id__c"]: a for a in emulator.admin("/__emulator/export/Account?include_deleted=false")["records"]}
    assert set(live) == {"C0001"}  # the seven accounts the run created are deleted
    restored = live["C0001"]
    assert (restored["Id"], restored["Name"], restored["Industry"]) == (existing, "旧名称", "Retail")
    # A field that was empty before the run is empty again (restored as null, not left as loaded).
    assert restored["AnnualRevenue"] is None and restored["Customer_Since__c"] is None
    assert (restored["Phone"], restored["Active__c"]) == ("010-1", False)
    doc = _audit().get_chunk(DAG_ID, run.run_id, "accounts.rollback", 0)
    assert (doc["deleted"], doc["restored"], doc["failed"]) == (7, 1, 0)


def test_rollback_of_an_unknown_run_fails_clearly(emulator, dms_connections) -> None:
    from dms.dag_factory import build_dags

    dag = build_dags(ROOT / "include" / "migrations")[f"{DAG_ID}_rollback"]
    run = dag.test(run_conf={"run_id": "manual__1999-01-01T00:00:00+00:00"})
    assert run.state == "failed"
