"""The two load paths: sObject Collections for small chunks, Bulk API 2.0 for large ones.

Both must give an empty cell and a boolean the same meaning, and both must survive a retry
without creating a record twice.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pytest

from dms.staging import ChunkKey
from scripts.services import EmulatorProcess

SPEC = """
name: api_choice
bulk_threshold: {threshold}
objects:
  - name: accounts
    sobject: Account
    operation: {operation}
    {external_id}
    source: {{path: accounts.csv}}
    fields:
{fields}
"""
UPSERT_FIELDS = """      Legacy_Id__c: {source: id}
      Name: {source: name}
      Active__c: {source: active, type: boolean}
      AnnualRevenue: {source: revenue, type: number}
      NumberOfEmployees: {source: staff, type: integer}
      Customer_Since__c: {source: since, type: date}"""


def _operator(tmp_path: Path, name: str, threshold: int, operation: str = "upsert", fields: str = UPSERT_FIELDS):
    from dms.operators.load import LoadOperator

    spec_file = tmp_path / f"{name}.yaml"
    external_id = "external_id: Legacy_Id__c" if operation == "upsert" else ""
    spec_file.write_text(SPEC.format(threshold=threshold, operation=operation, external_id=external_id, fields=fields))
    return LoadOperator(
        task_id="load", spec_file=str(spec_file), object_name="accounts", chunk={}, poll_seconds=0.1, deferrable=False
    )


def _load(operator: Any, run_id: str, ready: dict[str, list[Any]], describe: dict | None = None) -> dict[str, Any]:
    stage = operator.stage()
    key = ChunkKey("dms_api_choice", run_id, "accounts", 0)
    stage.put_table(key, "ready", pa.table(ready))
    if describe is not None:
        stage.put_json(f"dms_api_choice:{run_id}:accounts:describe", describe)
    operator.chunk = {"object": "accounts", "chunk": 0, "rows": len(ready["__row"]), "ready": len(ready["__row"])}
    context = {"ti": SimpleNamespace(dag_id="dms_api_choice", run_id=run_id), "params": {}}
    return operator.execute(context)


def _describe(emulator: EmulatorProcess) -> dict[str, Any]:
    import requests

    from dms.transform import describe_subset

    token = emulator.token()
    resp = requests.get(
        f"{token['instance_url']}/services/data/v62.0/sobjects/Account/describe",
        headers={"Authorization": f"Bearer {token['access_token']}"},
        verify=str(emulator.ca_file),
        timeout=30,
    )
    return describe_subset(resp.json())


def _accounts(emulator: EmulatorProcess) -> dict[str, dict[str, Any]]:
    return {a["Legacy_Id__c"]: a for a in emulator.admin("/__emulator/export/Account")["records"]}


@pytest.mark.parametrize("threshold", [10_000, 0], ids=["collections", "bulk2"])
def test_empty_cells_and_booleans_mean_the_same_through_both_apis(
    tmp_path: Path, dms_connections, emulator: EmulatorProcess, threshold: int
) -> None:
    operator = _operator(tmp_path, "both", threshold)
    describe = _describe(emulator)
    first = {
        "__row": [2, 3],
        "Legacy_Id__c": ["K1", "K2"],
        "Name": ["甲", "乙"],
        "Active__c": ["true", "false"],
        "AnnualRevenue": ["1234.5", ""],
        "NumberOfEmployees": ["12", ""],
        "Customer_Since__c": ["2024-02-29", ""],
    }
    out = _load(operator, f"{threshold}-1", first, describe)
    assert (out["loaded"], out["failed"], out["created"]) == (2, 0, 2)
    accounts = _accounts(emulator)
    assert (accounts["K1"]["Active__c"], accounts["K2"]["Active__c"]) == (True, False)
    assert (accounts["K1"]["AnnualRevenue"], accounts["K1"]["NumberOfEmployees"]) == (1234.5, 12)
    assert accounts["K1"]["Customer_Since__c"] == "2024-02-29"
    # Empty on create: null.
    assert (accounts["K2"]["AnnualRevenue"], accounts["K2"]["Customer_Since__c"]) == (None, None)
    # Empty on update: unchanged, through either API.
    second = {**first, "Name": ["甲二", "乙二"], "Active__c": ["false", "true"], "AnnualRevenue": ["", "99"]}
    out = _load(operator, f"{threshold}-2", second, describe)
    assert (out["loaded"], out["created"]) == (2, 0)
    accounts = _accounts(emulator)
    assert (accounts["K1"]["Name"], accounts["K1"]["Active__c"], accounts["K1"]["AnnualRevenue"]) == (
        "甲二",
        False,
        1234.5,
    )
    assert (accounts["K2"]["Active__c"], accounts["K2"]["AnnualRevenue"]) == (True, 99.0)


def test_small_chunks_use_collections_and_large_ones_bulk(
    tmp_path: Path, dms_connections, emulator: EmulatorProcess
) -> None:
    from dms.audit import Audit
    from dms.hooks.cloudant import DmsCloudantHook

    describe = _describe(emulator)
    ready = {
        "__row": [2],
        "Legacy_Id__c": ["S1"],
        "Name": ["小"],
        "Active__c": [""],
        "AnnualRevenue": [""],
        "NumberOfEmployees": [""],
        "Customer_Since__c": [""],
    }
    small = _load(_operator(tmp_path, "small", 2), "choice-small", ready, describe)
    big = _load(_operator(tmp_path, "big", 1), "choice-big", {**ready, "Legacy_Id__c": ["B1"]}, describe)
    assert small["job_id"] == "" and big["job_id"]
    audit = Audit(DmsCloudantHook().get_conn())
    apis = [audit.get_chunks("dms_api_choice", run, "accounts")[0]["api"] for run in ("choice-small", "choice-big")]
    assert apis == ["collections", "bulk2"]


def test_collections_retry_reads_the_ledger_instead_of_inserting_again(
    tmp_path: Path, dms_connections, emulator: EmulatorProcess
) -> None:
    fields = "      Name: {source: name}"
    operator = _operator(tmp_path, "insert", 10_000, operation="insert", fields=fields)
    ready = {"__row": list(range(2, 252)), "Name": [f"公司{i}" for i in range(250)]}  # two calls of 200 and 50
    first = _load(operator, "coll-retry", ready, _describe(emulator))
    second = _load(operator, "coll-retry", ready)
    assert (first["loaded"], second["loaded"]) == (250, 250)
    assert len(emulator.admin("/__emulator/export/Account")["records"]) == 250


def test_insert_sent_without_an_answer_fails_those_rows_instead_of_duplicating(
    tmp_path: Path, dms_connections, emulator: EmulatorProcess
) -> None:
    fields = "      Name: {source: name}"
    operator = _operator(tmp_path, "insert2", 10_000, operation="insert", fields=fields)
    stage = operator.stage()
    # What a task killed during its second Collections call leaves in the ledger.
    ledger = ChunkKey("dms_api_choice", "coll-killed", "accounts", 0)
    stage.record(ledger, **{"coll_sent:200": "1"})
    ready = {"__row": list(range(2, 252)), "Name": [f"公司{i}" for i in range(250)]}
    out = _load(operator, "coll-killed", ready, _describe(emulator))
    assert (out["loaded"], out["failed"]) == (200, 50)
    failures = stage.get_table(ChunkKey("dms_api_choice", "coll-killed", "accounts", 0), "failures").to_pylist()
    assert {f["code"] for f in failures} == {"UNKNOWN_OUTCOME"}
    assert len(emulator.admin("/__emulator/export/Account")["records"]) == 200


def test_a_bulk_load_defers_to_the_trigger_and_resumes_with_the_results(
    tmp_path: Path, dms_connections, emulator: EmulatorProcess
) -> None:
    """No worker slot waits for Salesforce: the task hands the job to the trigger and returns."""
    import asyncio

    from airflow.sdk.exceptions import TaskDeferred

    from dms.triggers.bulk2 import Bulk2JobTrigger

    operator = _operator(tmp_path, "deferred", 0)
    operator.deferrable = True
    ready = {
        "__row": [2, 3],
        "Legacy_Id__c": ["T1", "T2"],
        "Name": ["甲", "乙"],
        "Active__c": ["true", ""],
        "AnnualRevenue": ["", ""],
        "NumberOfEmployees": ["", ""],
        "Customer_Since__c": ["", ""],
    }
    with pytest.raises(TaskDeferred) as deferred:
        _load(operator, "deferred-1", ready, _describe(emulator))
    trigger = deferred.value.trigger
    assert isinstance(trigger, Bulk2JobTrigger) and deferred.value.method_name == "execute_complete"
    # The trigger survives serialization, as the triggerer rebuilds it from the database.
    classpath, kwargs = trigger.serialize()
    assert classpath == "dms.triggers.bulk2.Bulk2JobTrigger"
    rebuilt = Bulk2JobTrigger(**kwargs)

    async def first_event() -> dict[str, Any]:
        async for event in rebuilt.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    event = asyncio.run(first_event())
    assert event["status"] == "done" and event["state"] == "JobComplete"
    context = {"ti": SimpleNamespace(dag_id="dms_api_choice", run_id="deferred-1"), "params": {}}
    out = operator.execute_complete(context, event, **deferred.value.kwargs)
    assert (out["loaded"], out["failed"], out["deferred"], out["job_id"]) == (2, 0, True, event["job_id"])
    assert set(_accounts(emulator)) == {"T1", "T2"}


def test_the_trigger_reports_a_job_it_cannot_find(dms_connections, emulator: EmulatorProcess) -> None:
    import asyncio

    from dms.triggers.bulk2 import Bulk2JobTrigger

    async def first_event() -> dict[str, Any]:
        async for event in Bulk2JobTrigger("7505g0000000000AAA", "salesforce_default", 0.1).run():
            return event.payload
        raise AssertionError("no event")

    event = asyncio.run(first_event())
    assert event["status"] == "error" and "7505g0000000000AAA" in event["job_id"]
