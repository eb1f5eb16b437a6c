"""update, delete and hardDelete end to end: keys from a file and from a SOQL query."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import pytest

from scripts.services import EmulatorProcess

pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.fixture
def seeded(emulator: EmulatorProcess, dms_connections) -> dict[str, str]:
    """Five accounts, by Legacy_Id__c -> Id."""
    from simple_salesforce import Salesforce

    token = emulator.token()
    sf = Salesforce(instance_url=token["instance_url"], session_id=token["access_token"], version="62.0")
    cities = ["北京", "广州", "广州", "上海", "深圳"]
    return {
        f"K{i}": sf.Account.create({"Legacy_Id__c": f"K{i}", "Name": f"客户{i}", "BillingCity": city})["id"]
        for i, city in enumerate(cities, start=1)
    }


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str, files: dict[str, str]) -> tuple[Any, dict]:
    from dms.dag_factory import build_dag
    from dms.spec import load_spec

    for name, body in files.items():
        (tmp_path / name).write_text(body, encoding="utf-8")
    monkeypatch.setenv("DMS_DATA_ROOT", str(tmp_path))
    specs = tmp_path / "specs"
    specs.mkdir()
    spec_file = specs / "ops.yaml"
    spec_file.write_text(spec, encoding="utf-8")
    # dag.test() syncs the DAGs of the bundle (dags/) first: the spec must be found through it.
    monkeypatch.setenv("DMS_SPEC_PATH", str(specs))
    parsed = load_spec(spec_file)
    run = build_dag(parsed, spec_file).test()
    results = Path(os.environ["DMS_RESULTS_DIR"])
    safe = run.run_id.replace(":", "_").replace("+", "_")
    summary = json.loads((results / parsed.dag_id / safe / "summary.json").read_text())
    return run, summary["objects"]


def _accounts(emulator: EmulatorProcess, include_deleted: bool = False) -> dict[str, dict[str, Any]]:
    rows = emulator.admin(f"/__emulator/export/Account?include_deleted={str(include_deleted).lower()}")["records"]
    return {r["Legacy_Id__c"]: r for r in rows}


def test_update_by_id_changes_only_the_mapped_fields(tmp_path, monkeypatch, emulator, seeded) -> None:
    spec = """
name: ops_update
objects:
  - name: accounts
    sobject: Account
    operation: update
    source: {path: updates.csv}
    fields:
      Id: {source: id}
      Name: {source: name}
"""
    body = f"id,name\n{seeded['K1']},新名称一\n{seeded['K2']},新名称二\n"
    run, objects = _run(tmp_path, monkeypatch, spec, {"updates.csv": body})
    assert run.state == "success"
    accounts = _accounts(emulator)
    assert (accounts["K1"]["Name"], accounts["K2"]["Name"], accounts["K3"]["Name"]) == ("新名称一", "新名称二", "客户3")
    assert accounts["K1"]["BillingCity"] == "北京"  # not mapped: unchanged
    assert (objects["accounts"]["loaded"], objects["accounts"]["created"]) == (2, 0)


def test_delete_takes_its_ids_from_a_soql_query(tmp_path, monkeypatch, emulator, seeded) -> None:
    spec = """
name: ops_delete_query
objects:
  - name: guangzhou
    sobject: Account
    operation: delete
    source:
      kind: salesforce
      soql: "SELECT Id FROM Account WHERE BillingCity = '广州'"
    fields:
      Id: {source: Id}
"""
    run, objects = _run(tmp_path, monkeypatch, spec, {})
    assert run.state == "success"
    assert set(_accounts(emulator)) == {"K1", "K4", "K5"}
    # delete moves records to the recycle bin: still there with IsDeleted.
    binned = _accounts(emulator, include_deleted=True)
    assert binned["K2"]["IsDeleted"] is True and binned["K3"]["IsDeleted"] is True
    assert (objects["guangzhou"]["source"], objects["guangzhou"]["loaded"]) == (2, 2)


def test_hard_delete_from_a_file_of_ids_goes_through_bulk_and_reports_unknown_ids(
    tmp_path, monkeypatch, emulator, seeded
) -> None:
    spec = """
name: ops_hard_delete
max_error_rate: 0.5
objects:
  - name: purge
    sobject: Account
    operation: hardDelete
    source: {path: purge.csv}
    fields:
      Id: {source: id}
"""
    missing = seeded["K5"][:-3] + "ZZZ"
    body = f"id\n{seeded['K4']}\n{seeded['K5']}\n{missing}\n"
    run, objects = _run(tmp_path, monkeypatch, spec, {"purge.csv": body})
    assert run.state == "success"
    everything = _accounts(emulator, include_deleted=True)
    assert "K4" not in everything and "K5" not in everything  # gone, not in the recycle bin
    counts = objects["purge"]
    assert (counts["source"], counts["loaded"], counts["failed"]) == (3, 2, 1)
    with open(counts["errors_csv"], encoding="utf-8") as fh:
        [error] = list(csv.DictReader(fh))
    # The file's fourth line (header first); the key of an Id-based operation is the Id.
    assert (error["row"], error["key"], error["error_code"]) == ("4", missing, "INVALID_CROSS_REFERENCE_KEY")


def test_a_cycle_between_two_objects_loads_in_two_passes(tmp_path, monkeypatch, emulator, dms_connections) -> None:
    spec = """
name: ops_cycle
objects:
  - name: accounts
    sobject: Account
    operation: upsert
    external_id: Legacy_Id__c
    source: {path: accounts.csv}
    fields:
      Legacy_Id__c: {source: id}
      Name: {source: name}
      Primary_Contact__r.Legacy_Id__c: {source: primary, parent: contacts}
  - name: contacts
    sobject: Contact
    operation: upsert
    external_id: Legacy_Id__c
    source: {path: contacts.csv}
    fields:
      Legacy_Id__c: {source: id}
      LastName: {source: name}
      Account.Legacy_Id__c: {source: account}
"""
    files = {
        "accounts.csv": "id,name,primary\nA1,甲公司,P1\nA2,乙公司,\nA3,丙公司,P404\n",
        "contacts.csv": "id,name,account\nP1,张,A1\nP2,李,A2\nP3,王,A404\n",
    }
    run, objects = _run(tmp_path, monkeypatch, spec, files)
    # A3's primary contact and P3's account exist nowhere: the records load, the link cannot.
    assert run.state == "failed"
    accounts = _accounts(emulator)
    contacts = {c["Legacy_Id__c"]: c for c in emulator.admin("/__emulator/export/Contact")["records"]}
    assert accounts["A1"]["Primary_Contact__c"] == contacts["P1"]["Id"]
    assert contacts["P1"]["AccountId"] == accounts["A1"]["Id"]
    assert contacts["P2"]["AccountId"] == accounts["A2"]["Id"]
    assert accounts["A3"]["Primary_Contact__c"] is None and contacts["P3"]["AccountId"] is None
    # Loaded without their link: counted as failed with the reason, so the run is not green.
    assert (objects["accounts"]["loaded"], objects["accounts"]["failed"]) == (2, 1)
    assert (objects["contacts"]["loaded"], objects["contacts"]["failed"]) == (2, 1)
    with open(objects["contacts"]["errors_csv"], encoding="utf-8") as fh:
        [error] = list(csv.DictReader(fh))
    assert (error["key"], error["error_code"]) == ("P3", "MISSING_PARENT")
    assert "'A404'" in error["message"]


def test_an_external_id_repeated_across_chunks_is_loaded_once_and_the_repeat_rejected(
    tmp_path, monkeypatch, emulator, dms_connections
) -> None:
    spec = """
name: ops_duplicates
chunk_rows: 2
objects:
  - name: accounts
    sobject: Account
    operation: upsert
    external_id: Legacy_Id__c
    source: {path: accounts.csv}
    fields:
      Legacy_Id__c: {source: id}
      Name: {source: name}
"""
    # D1 in chunks 0 and 2 (in another case: external ids match case-insensitively); D2 twice in
    # chunk 1, where the transform rejects both.
    body = "id,name\nD1,第一\nX1,其他\nD2,甲\nD2,乙\nd1,第二\n"
    run, objects = _run(tmp_path, monkeypatch, spec, {"accounts.csv": body})
    assert run.state == "success"
    counts = objects["accounts"]
    assert (counts["source"], counts["loaded"], counts["rejected"]) == (5, 2, 3)
    with open(counts["rejects_csv"], encoding="utf-8") as fh:
        rejects = list(csv.DictReader(fh))
    assert {r["code"] for r in rejects} == {"DUPLICATE_KEY"}
    across = [r for r in rejects if r["key"].lower() == "d1"]
    assert len(across) == 1 and "also in row" in across[0]["reason"]
    accounts = {a["Legacy_Id__c"].lower(): a for a in emulator.admin("/__emulator/export/Account")["records"]}
    assert set(accounts) == {"d1", "x1"}
