"""The sample migration end to end through dag.test(): real Redis, audit store and Salesforce emulator."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from scripts.services import EmulatorProcess
from tests.conftest import ROOT

DAG_ID = "dms_legacy_crm_accounts"
GOOD_IDS = {"C0001", "C0002", "C0003", "C0004", "C0005", "C0006", "C0011", "C0012"}
BAD_ROWS = {"C0007": "Name", "C0008": "Customer_Since__c", "C0009": "Industry", "C0010": "AnnualRevenue"}

pytestmark = pytest.mark.usefixtures("airflow_db")


def _run(conf: dict[str, Any] | None = None) -> Any:
    from dms.dag_factory import build_dags

    dag = build_dags(ROOT / "include" / "migrations")[DAG_ID]
    return dag.test(run_conf=conf or {})


def _accounts(emulator: EmulatorProcess) -> list[dict[str, Any]]:
    return emulator.admin("/__emulator/export/Account?include_deleted=false")["records"]


def _summary(env: dict[str, str], run_id: str) -> dict[str, Any]:
    (path,) = Path(env["DMS_RESULTS_DIR"]).glob(f"{DAG_ID}/*/summary.json")
    return json.loads(path.read_text())


def test_sample_migration_loads_good_rows_and_rejects_bad_ones(emulator, dms_connections) -> None:
    run = _run()
    assert run.state == "success"
    accounts = {a["Legacy_Id__c"]: a for a in _accounts(emulator)}
    assert set(accounts) == GOOD_IDS
    acme = accounts["C0001"]
    assert acme["Name"] == "北京华夏科技有限公司"
    assert (acme["Industry"], acme["AnnualRevenue"], acme["NumberOfEmployees"]) == ("Technology", 12500000.5, 320)
    assert (acme["Customer_Since__c"], acme["Active__c"], acme["BillingCountry"]) == ("2015-03-12", True, "中国")
    assert accounts["C0004"]["Active__c"] is False

    summary = _summary(dms_connections, run.run_id)["objects"]["accounts"]
    assert (summary["source"], summary["loaded"], summary["rejected"], summary["failed"]) == (12, 8, 4, 0)
    with open(summary["rejects_csv"], encoding="utf-8") as fh:
        rejects = {r["key"]: r for r in csv.DictReader(fh)}
    assert {k: r["field"] for k, r in rejects.items()} == BAD_ROWS
    # Row numbers count the header as line 1, as a spreadsheet shows them.
    assert rejects["C0007"]["row"] == "8"
    with open(summary["success_csv"], encoding="utf-8") as fh:
        successes = {r["key"]: r for r in csv.DictReader(fh)}
    assert {k: r["salesforce_id"] for k, r in successes.items()} == {k: a["Id"] for k, a in accounts.items()}
    assert {r["created"] for r in successes.values()} == {"True"}


def test_second_run_updates_instead_of_duplicating(emulator, dms_connections) -> None:
    assert _run().state == "success"
    first = {a["Legacy_Id__c"]: a["Id"] for a in _accounts(emulator)}
    assert _run().state == "success"
    second = _accounts(emulator)
    assert len(second) == len(GOOD_IDS)
    assert {a["Legacy_Id__c"]: a["Id"] for a in second} == first


def test_run_writes_run_and_chunk_audit_documents(emulator, dms_connections) -> None:
    from dms.audit import Audit
    from dms.hooks.cloudant import DmsCloudantHook

    run = _run()
    audit = Audit(DmsCloudantHook().get_conn())
    doc = audit.get_run(DAG_ID, run.run_id)
    assert doc["status"] == "success"
    assert doc["objects"]["accounts"]["loaded"] == 8
    chunks = audit.get_chunks(DAG_ID, run.run_id, "accounts")
    assert [c["chunk"] for c in chunks] == [0, 1, 2]
    assert sum(c["loaded"] for c in chunks) == 8
    reject_codes: dict[str, int] = {}
    for c in chunks:
        for code, n in c["reject_codes"].items():
            reject_codes[code] = reject_codes.get(code, 0) + n
    assert reject_codes == {"REQUIRED": 1, "TYPE": 2, "VALUE_MAP": 1}
    # Chunks of 5 rows are far below bulk_threshold: each went through sObject Collections.
    assert {c["api"] for c in chunks if c["ready"]} == {"collections"}


def test_dry_run_validates_and_loads_nothing(emulator, dms_connections) -> None:
    run = _run({"dry_run": True})
    assert run.state == "success"
    assert _accounts(emulator) == []
    summary = _summary(dms_connections, run.run_id)["objects"]["accounts"]
    assert (summary["source"], summary["ready"], summary["rejected"], summary["loaded"]) == (12, 8, 4, 0)


def test_rows_failing_in_salesforce_fail_the_run_and_are_reported(emulator, dms_connections) -> None:
    emulator.admin("/__emulator/faults", "PUT", {"lock_row_rate": 1.0})
    run = _run()
    assert run.state == "failed"
    summary = _summary(dms_connections, run.run_id)
    counts = summary["objects"]["accounts"]
    assert (counts["loaded"], counts["failed"], counts["rejected"]) == (0, 8, 4)
    assert summary["status"] == "failed" and "max_error_rate" in summary["problems"][0]
    with open(counts["errors_csv"], encoding="utf-8") as fh:
        errors = list(csv.DictReader(fh))
    assert {e["error_code"] for e in errors} == {"UNABLE_TO_LOCK_ROW"}
    assert {e["key"] for e in errors} == GOOD_IDS


def test_max_error_rate_param_lets_a_run_with_some_failures_pass(emulator, dms_connections) -> None:
    emulator.admin("/__emulator/faults", "PUT", {"lock_row_rate": 1.0})
    run = _run({"max_error_rate": 1.0})
    assert run.state == "success"
    counts = _summary(dms_connections, run.run_id)["objects"]["accounts"]
    assert counts["source"] == counts["loaded"] + counts["rejected"] + counts["failed"]
