"""The related-objects sample (accounts CSV, contacts xlsx, opportunities fixed-width) end to end.

Checks the records in the emulator: parents before children, lookups by external id and by
existing records, self-lookups set in the second pass, missing parents rejected and
reported, and no duplicates on a second run.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from scripts.services import EmulatorProcess
from tests.conftest import ROOT

DAG_ID = "dms_legacy_crm_full"

pytestmark = pytest.mark.usefixtures("airflow_db")


def _run(conf: dict[str, Any] | None = None) -> Any:
    from dms.dag_factory import build_dags

    dag = build_dags(ROOT / "include" / "migrations")[DAG_ID]
    return dag.test(run_conf=conf or {})


def _records(emulator: EmulatorProcess, sobject: str) -> dict[str, dict[str, Any]]:
    rows = emulator.admin(f"/__emulator/export/{sobject}?include_deleted=false")["records"]
    return {r.get("Legacy_Id__c") or r["Id"]: r for r in rows}


def _summary(env: dict[str, str], run_id: str) -> dict[str, Any]:
    safe = run_id.replace(":", "_").replace("+", "_")
    return json.loads((Path(env["DMS_RESULTS_DIR"]) / DAG_ID / safe / "summary.json").read_text())


def _csv(path: str) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_dag_orders_loads_by_lookups_and_adds_relink_passes() -> None:
    from dms.dag_factory import build_dags

    dag = build_dags(ROOT / "include" / "migrations")[DAG_ID]
    tasks = dag.task_dict
    assert "accounts.load" in tasks["contacts.load"].upstream_task_ids
    assert "accounts.load" in tasks["opportunities.load"].upstream_task_ids
    # A child's extract and transform do not wait for the parent.
    assert not tasks["contacts.extract"].upstream_task_ids
    assert tasks["contacts.transform"].upstream_task_ids == {"contacts.extract"}
    # Self-lookups get a relink pass after their object's load; opportunities need none.
    assert tasks["accounts_relink.relink"].upstream_task_ids == {"accounts.load", "accounts.transform"}
    assert tasks["contacts_relink.relink"].upstream_task_ids == {"contacts.load", "contacts.transform"}
    assert "opportunities_relink.relink" not in tasks


def test_related_objects_load_with_their_lookups(emulator: EmulatorProcess, dms_connections) -> None:
    run = _run()
    assert run.state == "success"
    users = {u["Email"]: u["Id"] for u in emulator.admin("/__emulator/export/User")["records"] if u["Email"]}
    types = {t["DeveloperName"]: t["Id"] for t in emulator.admin("/__emulator/export/RecordType")["records"]}

    accounts = _records(emulator, "Account")
    assert set(accounts) == {"A001", "A002", "A003", "A004"}
    ids = {k: a["Id"] for k, a in accounts.items()}
    # Self-lookup set by the relink pass; the email lookup is case-insensitive, like SOQL.
    assert accounts["A002"]["ParentId"] == ids["A001"]
    assert accounts["A003"]["ParentId"] == ids["A002"]
    assert accounts["A001"]["ParentId"] is None
    assert accounts["A003"]["OwnerId"] == users["li.wei@example.com"]
    assert accounts["A001"]["RecordTypeId"] == types["Enterprise"]
    assert accounts["A004"]["RecordTypeId"] == types["SMB"]

    contacts = _records(emulator, "Contact")
    assert set(contacts) == {"A001-01", "A001-02", "A001-03", "A002-01", "A002-02", "A003-01"}
    assert contacts["A001-02"]["AccountId"] == ids["A001"]
    assert contacts["A001-03"]["ReportsToId"] == contacts["A001-02"]["Id"]
    assert contacts["A002-02"]["ReportsToId"] == contacts["A002-01"]["Id"]
    assert contacts["A001-01"]["ReportsToId"] is None
    assert contacts["A001-01"]["Birthdate"] == "1975-04-08"
    assert contacts["A001-01"]["LastName"] == "王"

    opportunities = _records(emulator, "Opportunity")
    assert set(opportunities) == {"O0000001", "O0000002", "O0000003", "O0000004", "O0000005"}
    first = opportunities["O0000001"]
    assert (first["Name"], first["StageName"], first["Amount"]) == ("华夏科技云平台升级", "Proposal", 1250000.0)
    assert (first["AccountId"], first["CloseDate"]) == (ids["A001"], "2026-03-15")
    assert first["RecordTypeId"] == types["New_Business"]

    summary = _summary(dms_connections, run.run_id)["objects"]
    counts = {name: (c["source"], c["loaded"], c["rejected"], c["failed"]) for name, c in summary.items()}
    assert counts == {"accounts": (7, 4, 3, 0), "contacts": (9, 6, 3, 0), "opportunities": (7, 5, 2, 0)}

    account_rejects = {r["key"]: r for r in _csv(summary["accounts"]["rejects_csv"])}
    assert {k: (r["code"], r["field"]) for k, r in account_rejects.items()} == {
        "A005": ("LOOKUP", "OwnerId"),  # two users share sales@example.com
        "A006": ("LOOKUP", "OwnerId"),  # no such user
        "A007": ("VALUE_MAP", "RecordTypeId"),
    }
    assert "more than one User with Email" in account_rejects["A005"]["reason"]

    contact_rejects = {r["key"]: r for r in _csv(summary["contacts"]["rejects_csv"])}
    assert {k: r["code"] for k, r in contact_rejects.items()} == {
        "A404-01": "MISSING_PARENT",
        "A003-02": "REQUIRED",
        "A005-01": "MISSING_PARENT",  # its account was rejected, and Salesforce has none
    }
    assert contact_rejects["A404-01"]["row"] == "9"  # Excel row: title, header, then data from row 3
    missing = _csv(str(Path(summary["contacts"]["rejects_csv"]).with_name("contacts_missing_parents.csv")))
    assert {r["key"] for r in missing} == {"A404-01", "A005-01"}
    assert all("'A404'" in r["reason"] or "'A005'" in r["reason"] for r in missing)

    opportunity_rejects = {r["key"]: r["code"] for r in _csv(summary["opportunities"]["rejects_csv"])}
    assert opportunity_rejects == {"O0000006": "VALUE_MAP", "O0000007": "MISSING_PARENT"}


def test_second_run_creates_no_duplicates_and_keeps_the_links(emulator: EmulatorProcess, dms_connections) -> None:
    assert _run().state == "success"
    before = {s: _records(emulator, s) for s in ("Account", "Contact", "Opportunity")}
    assert _run().state == "success"
    after = {s: _records(emulator, s) for s in ("Account", "Contact", "Opportunity")}
    for sobject in before:
        assert {k: r["Id"] for k, r in after[sobject].items()} == {k: r["Id"] for k, r in before[sobject].items()}
    assert after["Contact"]["A001-03"]["ReportsToId"] == before["Contact"]["A001-02"]["Id"]


def test_parents_already_in_salesforce_count_as_present(emulator: EmulatorProcess, dms_connections) -> None:
    """A404 exists in the org before the run: the contact that names it now loads."""
    from simple_salesforce import Salesforce

    token = emulator.token()
    sf = Salesforce(instance_url=token["instance_url"], session_id=token["access_token"], version="62.0")
    sf.Account.create({"Name": "既有客户", "Legacy_Id__c": "a404"})  # external ids match case-insensitively
    run = _run()
    assert run.state == "success"
    contacts = _records(emulator, "Contact")
    assert "A404-01" in contacts
    assert contacts["A404-01"]["AccountId"] == _records(emulator, "Account")["a404"]["Id"]


def test_dry_run_previews_inserts_updates_and_rejects_and_writes_nothing(
    emulator: EmulatorProcess, dms_connections
) -> None:
    def preview() -> dict[str, tuple[int, ...]]:
        run = _run({"dry_run": True})
        assert run.state == "success"
        objects = _summary(dms_connections, run.run_id)["objects"]
        return {n: (c["would_insert"], c["would_update"], c["rejected"]) for n, c in objects.items()}

    # Parents that would be loaded count as present for their children, as in a real run.
    expected_rejects = {"accounts": 3, "contacts": 3, "opportunities": 2}
    assert preview() == {"accounts": (4, 0, 3), "contacts": (6, 0, 3), "opportunities": (5, 0, 2)}
    assert _records(emulator, "Account") == {} and _records(emulator, "Contact") == {}
    assert _run().state == "success"
    assert preview() == {
        name: (0, loaded, expected_rejects[name])
        for name, loaded in {"accounts": 4, "contacts": 6, "opportunities": 5}.items()
    }
