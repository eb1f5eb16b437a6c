"""Bulk API 1.0 (JSON jobs) against unmodified clients: simple_salesforce's `sf.bulk` and
Airflow's SalesforceBulkOperator/SalesforceHook, over HTTPS to the emulator subprocess.

Each test checks what the client returns *and* what the org holds afterwards (through the
admin export), so an emulator that answers plausibly without writing fails.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceError, SalesforceGeneralError

from salesforce_emulator.bulk1 import Batch, Bulk1, Job
from salesforce_emulator.schema import load_schema
from salesforce_emulator.state import Emulator
from salesforce_emulator.store import Store
from scripts.services import EmulatorProcess

SAMPLE_ORG = Path(__file__).resolve().parents[2] / "include" / "org" / "sample_org.yaml"
VERSION = "62.0"


# ---------------------------------------------------------------- helpers


def _accounts(emulator: EmulatorProcess, *, include_deleted: bool = False) -> list[dict[str, Any]]:
    flag = "true" if include_deleted else "false"
    return emulator.admin(f"/__emulator/export/Account?include_deleted={flag}")["records"]


def _by_legacy(emulator: EmulatorProcess) -> dict[str, dict[str, Any]]:
    return {r["Legacy_Id__c"]: r for r in _accounts(emulator) if r["Legacy_Id__c"]}


class _Bulk1Http:
    """Raw Bulk 1.0 calls, for what the clients never send (bad ids, late batches, bad JSON)."""

    def __init__(self, emulator: EmulatorProcess) -> None:
        self.base = f"{emulator.base_url}/services/async/{VERSION}"
        self.session = requests.Session()
        self.session.verify = str(emulator.ca_file)
        self.session.headers.update(
            {"X-SFDC-Session": emulator.token()["access_token"], "Content-Type": "application/json"}
        )

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, self.base + path, timeout=30, **kwargs)

    def create_job(self, **body: Any) -> dict[str, Any]:
        resp = self.call("POST", "/job", json={"contentType": "JSON", **body})
        assert resp.status_code == 201, resp.text
        return resp.json()

    def wait_batch(self, job_id: str, batch_id: str) -> dict[str, Any]:
        for _ in range(100):
            info = self.call("GET", f"/job/{job_id}/batch/{batch_id}").json()
            if info["state"] in {"Completed", "Failed", "NotProcessed"}:
                return info
        raise AssertionError(f"batch {batch_id} never finished: {info}")


@pytest.fixture
def raw(emulator: EmulatorProcess) -> _Bulk1Http:
    return _Bulk1Http(emulator)


def _error(resp: requests.Response) -> tuple[int, str]:
    body = resp.json()
    assert set(body) == {"exceptionCode", "exceptionMessage"}, body
    return resp.status_code, body["exceptionCode"]


# ---------------------------------------------------------------- simple_salesforce: DML


def test_insert_results_follow_input_order_across_batches_with_row_errors(
    sf: Salesforce, emulator: EmulatorProcess
) -> None:
    payload = [
        {"Name": "Acme", "Legacy_Id__c": "B1-1", "NumberOfEmployees": 10},
        {"Legacy_Id__c": "B1-2"},  # Name is required
        {"Name": "Globex", "Legacy_Id__c": "B1-3", "Industry": "Banking"},
        {"Name": "Initech", "Legacy_Id__c": "B1-4", "Industry": "Not A Value"},  # restricted picklist
        {"Name": "Umbrella", "Legacy_Id__c": "B1-5", "Parent": {"Legacy_Id__c": "B1-1"}},
    ]
    # batch_size=2 makes three batches; results must still come back in payload order.
    results = sf.bulk.Account.insert(payload, batch_size=2)

    assert [r["success"] for r in results] == [True, False, True, False, True]
    assert all(r["created"] for r in results if r["success"])
    assert results[1] == {
        "success": False,
        "created": False,
        "id": None,
        "errors": [
            {
                "statusCode": "REQUIRED_FIELD_MISSING",
                "message": "Required fields are missing: [Name]",
                "fields": ["Name"],
            }
        ],
    }
    assert results[3]["errors"][0]["statusCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    stored = _by_legacy(emulator)
    assert set(stored) == {"B1-1", "B1-3", "B1-5"}
    assert stored["B1-1"]["Id"] == results[0]["id"]
    assert stored["B1-1"]["NumberOfEmployees"] == 10
    assert stored["B1-5"]["ParentId"] == results[0]["id"], "a nested parent reference resolves by external id"


def test_upsert_updates_matches_and_creates_the_rest(sf: Salesforce, emulator: EmulatorProcess) -> None:
    sf.bulk.Account.insert([{"Name": "Old", "Legacy_Id__c": "UP-1", "BillingCity": "Oslo"}])

    results = sf.bulk.Account.upsert(
        [
            {"Name": "Renamed", "Legacy_Id__c": "UP-1"},
            {"Name": "Brand New", "Legacy_Id__c": "UP-2"},
            {"Name": "No Key"},  # the external id is missing
        ],
        external_id_field="Legacy_Id__c",
    )

    assert [(r["success"], r["created"]) for r in results] == [(True, False), (True, True), (False, False)]
    assert results[2]["errors"][0]["statusCode"] == "MISSING_ARGUMENT"
    stored = _by_legacy(emulator)
    assert stored["UP-1"]["Name"] == "Renamed"
    assert stored["UP-1"]["BillingCity"] == "Oslo", "fields not in the upsert stay as they were"
    assert stored["UP-2"]["Id"] == results[1]["id"]
    assert len(_accounts(emulator)) == 2


def test_update_changes_named_records_and_reports_unknown_ids(sf: Salesforce, emulator: EmulatorProcess) -> None:
    created = sf.bulk.Account.insert([{"Name": "A", "Legacy_Id__c": "UPD-1"}, {"Name": "B", "Legacy_Id__c": "UPD-2"}])

    results = sf.bulk.Account.update(
        [
            {"Id": created[1]["id"], "Phone": "555-0100"},
            {"Id": "001000000000000AAA", "Phone": "555-0101"},
            {"Id": created[0]["id"], "NumberOfEmployees": "many"},
        ]
    )

    assert [r["success"] for r in results] == [True, False, False]
    assert results[0] == {"success": True, "created": False, "id": created[1]["id"], "errors": []}
    assert results[1]["errors"][0]["statusCode"] == "INVALID_CROSS_REFERENCE_KEY"
    assert results[2]["errors"][0]["statusCode"] == "INVALID_TYPE_ON_FIELD_IN_RECORD"
    stored = _by_legacy(emulator)
    assert stored["UPD-2"]["Phone"] == "555-0100"
    assert stored["UPD-1"]["NumberOfEmployees"] is None


def test_delete_moves_records_to_the_recycle_bin(sf: Salesforce, emulator: EmulatorProcess) -> None:
    created = sf.bulk.Account.insert([{"Name": "Keep", "Legacy_Id__c": "D-1"}, {"Name": "Drop", "Legacy_Id__c": "D-2"}])

    results = sf.bulk.Account.delete([{"Id": created[1]["id"]}, {"Id": "not-an-id"}])

    assert results[0] == {"success": True, "created": False, "id": created[1]["id"], "errors": []}
    assert results[1]["success"] is False
    assert results[1]["errors"][0]["statusCode"] == "MALFORMED_ID"
    assert [r["Legacy_Id__c"] for r in _accounts(emulator)] == ["D-1"]
    deleted = [r for r in _accounts(emulator, include_deleted=True) if r["IsDeleted"]]
    assert [r["Id"] for r in deleted] == [created[1]["id"]], "a soft delete keeps the row, flagged"


def test_hard_delete_removes_records_for_good(sf: Salesforce, emulator: EmulatorProcess) -> None:
    created = sf.bulk.Account.insert([{"Name": "Gone", "Legacy_Id__c": "HD-1"}, {"Name": "Stays"}])

    results = sf.bulk.Account.hard_delete([{"Id": created[0]["id"]}])

    assert results == [{"success": True, "created": False, "id": created[0]["id"], "errors": []}]
    everything = _accounts(emulator, include_deleted=True)
    assert [r["Name"] for r in everything] == ["Stays"], "hardDelete leaves nothing in the recycle bin"


def test_use_serial_and_auto_batch_size_still_process_everything(sf: Salesforce, emulator: EmulatorProcess) -> None:
    payload = [{"Name": f"Serial {i}", "Legacy_Id__c": f"S-{i}"} for i in range(25)]

    results = sf.bulk.Account.insert(payload, batch_size="auto", use_serial=True)

    assert len(results) == 25 and all(r["success"] for r in results)
    stored = _by_legacy(emulator)
    assert [results[i]["id"] for i in range(25)] == [stored[f"S-{i}"]["Id"] for i in range(25)]


def test_detailed_results_merge_each_request_row_into_its_result(sf: Salesforce, emulator: EmulatorProcess) -> None:
    # include_detailed_results reads GET .../batch/{id}/request back and zips it with the results.
    results = sf.bulk.Account.insert(
        [{"Name": "Detailed", "Legacy_Id__c": "DR-1"}, {"Legacy_Id__c": "DR-2"}], include_detailed_results=True
    )

    assert results[0]["Name"] == "Detailed" and results[0]["success"] is True
    assert results[1]["Legacy_Id__c"] == "DR-2" and results[1]["success"] is False


# ---------------------------------------------------------------- simple_salesforce: queries


def test_query_returns_records_with_epoch_millisecond_dates_and_nested_parents(
    sf: Salesforce, emulator: EmulatorProcess
) -> None:
    parent = sf.bulk.Account.insert([{"Name": "Parent Co", "Legacy_Id__c": "Q-P"}])[0]["id"]
    sf.bulk.Account.insert(
        [
            {
                "Name": "Child Co",
                "Legacy_Id__c": "Q-C",
                "ParentId": parent,
                "Customer_Since__c": "2021-03-04",
                "Last_Activity__c": "2024-05-06T07:08:09.000Z",
                "Active__c": True,
                "AnnualRevenue": 1250.5,
            }
        ]
    )

    records = sf.bulk.Account.query(
        "SELECT Id, Name, Customer_Since__c, Last_Activity__c, Active__c, AnnualRevenue, Parent.Name "
        "FROM Account WHERE Legacy_Id__c = 'Q-C'"
    )

    assert len(records) == 1
    rec = records[0]
    assert rec["attributes"] == {"type": "Account", "url": f"/services/data/v{VERSION}/sobjects/Account/{rec['Id']}"}
    # Bulk API 1.0 JSON results carry dates and datetimes as epoch milliseconds, unlike REST.
    assert rec["Customer_Since__c"] == int(datetime(2021, 3, 4, tzinfo=UTC).timestamp() * 1000)
    assert rec["Last_Activity__c"] == int(datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC).timestamp() * 1000)
    assert rec["Active__c"] is True and rec["AnnualRevenue"] == 1250.5
    assert rec["Parent"]["Name"] == "Parent Co"
    assert rec["Parent"]["attributes"]["type"] == "Account"


def test_query_all_includes_deleted_records_and_query_does_not(sf: Salesforce, emulator: EmulatorProcess) -> None:
    created = sf.bulk.Account.insert([{"Name": "Live"}, {"Name": "Binned"}])
    sf.bulk.Account.delete([{"Id": created[1]["id"]}])

    live = sf.bulk.Account.query("SELECT Name, IsDeleted FROM Account ORDER BY Name")
    every = sf.bulk.Account.query_all("SELECT Name, IsDeleted FROM Account ORDER BY Name")

    assert [(r["Name"], r["IsDeleted"]) for r in live] == [("Live", False)]
    assert [(r["Name"], r["IsDeleted"]) for r in every] == [("Binned", True), ("Live", False)]


def test_query_with_no_rows_returns_an_empty_list(sf: Salesforce) -> None:
    assert sf.bulk.Account.query("SELECT Id FROM Account") == []


def test_invalid_soql_fails_the_batch_and_the_client_raises(sf: Salesforce) -> None:
    with pytest.raises(SalesforceGeneralError) as excinfo:
        sf.bulk.Account.query("SELECT Nope__c FROM Account")
    assert "Failed to process query: INVALID_FIELD" in str(excinfo.value)


# ---------------------------------------------------------------- protocol: jobs, batches, errors


def test_job_and_batch_info_track_a_batch_from_queued_to_completed(raw: _Bulk1Http) -> None:
    job = raw.create_job(operation="insert", object="account", concurrencyMode="Serial")
    assert job["state"] == "Open" and job["object"] == "Account" and job["concurrencyMode"] == "Serial"
    assert job["contentType"] == "JSON" and job["apiVersion"] == float(VERSION) and job["id"].startswith("750")

    added = raw.call("POST", f"/job/{job['id']}/batch", json=[{"Name": "One"}, {"Name": "Two"}, {}])
    assert added.status_code == 201
    batch = added.json()
    assert batch["state"] in {"Queued", "InProgress", "Completed"} and batch["jobId"] == job["id"]

    done = raw.wait_batch(job["id"], batch["id"])
    assert done["state"] == "Completed"
    assert (done["numberRecordsProcessed"], done["numberRecordsFailed"]) == (3, 1)

    closed = raw.call("POST", f"/job/{job['id']}", json={"state": "Closed"}).json()
    assert closed["state"] == "Closed"
    assert closed["numberBatchesTotal"] == closed["numberBatchesCompleted"] == 1
    assert (closed["numberRecordsProcessed"], closed["numberRecordsFailed"]) == (3, 1)
    listed = raw.call("GET", f"/job/{job['id']}/batch").json()
    assert [b["id"] for b in listed["batchInfo"]] == [batch["id"]]
    results = raw.call("GET", f"/job/{job['id']}/batch/{batch['id']}/result").json()
    assert [r["success"] for r in results] == [True, True, False]


def test_simple_salesforce_concurrency_mode_numbers_map_to_parallel_and_serial(raw: _Bulk1Http) -> None:
    # simple_salesforce sends use_serial as concurrencyMode 1 and the default as 0.
    assert raw.create_job(operation="insert", object="Account", concurrencyMode=1)["concurrencyMode"] == "Serial"
    assert raw.create_job(operation="insert", object="Account", concurrencyMode=0)["concurrencyMode"] == "Parallel"
    hard = raw.create_job(operation="hardDelete", object="Account")
    assert hard["operation"] == "hardDelete"


def test_unknown_job_id_is_invalid_job(raw: _Bulk1Http) -> None:
    assert _error(raw.call("GET", "/job/7505g00000000zzAAA")) == (400, "InvalidJob")
    assert _error(raw.call("POST", "/job/7505g00000000zzAAA/batch", json=[{"Name": "x"}])) == (400, "InvalidJob")
    assert _error(raw.call("POST", "/job/garbage", json={"state": "Closed"})) == (400, "InvalidJob")


def test_adding_a_batch_to_a_closed_job_is_invalid_job_state(raw: _Bulk1Http, emulator: EmulatorProcess) -> None:
    job = raw.create_job(operation="insert", object="Account")
    raw.call("POST", f"/job/{job['id']}", json={"state": "Closed"})

    resp = raw.call("POST", f"/job/{job['id']}/batch", json=[{"Name": "Too late"}])

    assert _error(resp) == (400, "InvalidJobState")
    assert _accounts(emulator) == []


def test_aborting_a_job_blocks_new_batches_and_closing_it_again(raw: _Bulk1Http) -> None:
    job = raw.create_job(operation="insert", object="Account")
    aborted = raw.call("POST", f"/job/{job['id']}", json={"state": "Aborted"})
    assert aborted.json()["state"] == "Aborted"

    assert _error(raw.call("POST", f"/job/{job['id']}/batch", json=[{"Name": "x"}])) == (400, "InvalidJobState")
    assert _error(raw.call("POST", f"/job/{job['id']}", json={"state": "Closed"})) == (400, "InvalidJobState")


def test_malformed_json_batch_is_invalid_batch(raw: _Bulk1Http) -> None:
    job = raw.create_job(operation="insert", object="Account")

    assert _error(raw.call("POST", f"/job/{job['id']}/batch", data="[{'Name': oops}")) == (400, "InvalidBatch")
    assert _error(raw.call("POST", f"/job/{job['id']}/batch", json={"Name": "not a list"})) == (400, "InvalidBatch")


def test_batch_over_ten_thousand_records_fails_without_writing(raw: _Bulk1Http, emulator: EmulatorProcess) -> None:
    job = raw.create_job(operation="insert", object="Account")
    batch = raw.call("POST", f"/job/{job['id']}/batch", json=[{"Name": f"n{i}"} for i in range(10_001)]).json()

    info = raw.wait_batch(job["id"], batch["id"])

    assert info["state"] == "Failed"
    assert info["stateMessage"] == (
        "InvalidBatch : Exceeded number of records: 10001. Number of records should be less than or equal to 10000"
    )
    assert _error(raw.call("GET", f"/job/{job['id']}/batch/{batch['id']}/result")) == (400, "InvalidBatch")
    assert _accounts(emulator) == []


def test_unknown_field_fails_the_whole_batch(raw: _Bulk1Http, emulator: EmulatorProcess) -> None:
    job = raw.create_job(operation="insert", object="Account")
    batch = raw.call("POST", f"/job/{job['id']}/batch", json=[{"Name": "ok"}, {"Name": "x", "Bogus__c": 1}]).json()

    info = raw.wait_batch(job["id"], batch["id"])

    assert (info["state"], info["stateMessage"]) == ("Failed", "InvalidBatch : Field name not found : Bogus__c")
    assert _accounts(emulator) == []


def test_job_creation_validates_object_upsert_key_and_content_type(raw: _Bulk1Http) -> None:
    def create(**body: Any) -> tuple[int, str]:
        return _error(raw.call("POST", "/job", json=body))

    assert create(operation="insert", object="Nope__c", contentType="JSON") == (400, "InvalidEntity")
    assert create(operation="upsert", object="Account", contentType="JSON") == (400, "InvalidJob")
    assert create(operation="upsert", object="Account", contentType="JSON", externalIdFieldName="Name") == (
        400,
        "InvalidJob",
    )
    assert create(operation="merge", object="Account", contentType="JSON") == (400, "InvalidJob")
    assert create(operation="insert", object="Account", contentType="CSV") == (400, "InvalidJob")
    assert _error(raw.call("POST", "/job", data="{not json")) == (400, "InvalidJob")


def test_bulk1_requires_a_session(emulator: EmulatorProcess) -> None:
    resp = requests.get(
        f"{emulator.base_url}/services/async/{VERSION}/job/7505g00000000zzAAA", verify=str(emulator.ca_file), timeout=30
    )
    assert _error(resp) == (401, "InvalidSessionId")


def test_fail_next_bulk_jobs_fault_fails_the_batches(sf: Salesforce, emulator: EmulatorProcess) -> None:
    emulator.admin("/__emulator/faults", "PUT", json={"fail_next_bulk_jobs": 1})

    with pytest.raises(SalesforceError):
        sf.bulk.Account.insert([{"Name": "Never"}])

    assert _accounts(emulator) == []
    # The fault is used up: the next job goes through.
    assert sf.bulk.Account.insert([{"Name": "Fine"}])[0]["success"] is True


# ---------------------------------------------------------------- Airflow provider


def test_salesforce_hook_describes_and_queries_through_the_emulator(
    airflow_salesforce_conn: str, sf: Salesforce
) -> None:
    from airflow.providers.salesforce.hooks.salesforce import SalesforceHook

    sf.bulk.Account.insert([{"Name": "Hooked", "Legacy_Id__c": "H-1"}])
    hook = SalesforceHook(salesforce_conn_id=airflow_salesforce_conn)

    assert hook.get_conn().bulk_url.endswith(f"/services/async/{VERSION}/")
    fields = hook.get_available_fields("Account")
    assert {"Id", "Name", "Legacy_Id__c", "ParentId"} <= set(fields)
    result = hook.make_query("SELECT Id, Name FROM Account WHERE Legacy_Id__c = 'H-1'")
    assert result["totalSize"] == 1 and result["records"][0]["Name"] == "Hooked"


def test_bulk_operator_insert_returns_results_and_writes_records(
    airflow_salesforce_conn: str, emulator: EmulatorProcess
) -> None:
    from airflow.providers.salesforce.operators.bulk import SalesforceBulkOperator

    insert_accounts = SalesforceBulkOperator(
        task_id="insert_accounts",
        operation="insert",
        object_name="Account",
        payload=[{"Name": "Op One", "Legacy_Id__c": "OP-1"}, {"Legacy_Id__c": "OP-2"}],
        salesforce_conn_id=airflow_salesforce_conn,
    )

    result = insert_accounts.execute(context={})

    assert [r["success"] for r in result] == [True, False]
    assert result[1]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    stored = _by_legacy(emulator)
    assert list(stored) == ["OP-1"] and stored["OP-1"]["Id"] == result[0]["id"]


def test_bulk_operator_upsert_matches_on_the_external_id(
    airflow_salesforce_conn: str, sf: Salesforce, emulator: EmulatorProcess
) -> None:
    from airflow.providers.salesforce.operators.bulk import SalesforceBulkOperator

    existing = sf.bulk.Account.insert([{"Name": "Before", "Legacy_Id__c": "OU-1"}])[0]["id"]
    upsert_accounts = SalesforceBulkOperator(
        task_id="upsert_accounts",
        operation="upsert",
        object_name="Account",
        external_id_field="Legacy_Id__c",
        payload=[{"Name": "After", "Legacy_Id__c": "OU-1"}, {"Name": "Fresh", "Legacy_Id__c": "OU-2"}],
        batch_size=1,
        use_serial=True,
        salesforce_conn_id=airflow_salesforce_conn,
    )

    result = upsert_accounts.execute(context={})

    assert [(r["success"], r["created"]) for r in result] == [(True, False), (True, True)]
    assert result[0]["id"] == existing
    stored = _by_legacy(emulator)
    assert stored["OU-1"]["Name"] == "After" and stored["OU-1"]["Id"] == existing
    assert stored["OU-2"]["Id"] == result[1]["id"]


def test_bulk_operator_delete_and_hard_delete_remove_records(
    airflow_salesforce_conn: str, sf: Salesforce, emulator: EmulatorProcess
) -> None:
    from airflow.providers.salesforce.operators.bulk import SalesforceBulkOperator

    ids = [r["id"] for r in sf.bulk.Account.insert([{"Name": "Soft"}, {"Name": "Hard"}, {"Name": "Kept"}])]

    soft = SalesforceBulkOperator(
        task_id="delete_accounts",
        operation="delete",
        object_name="Account",
        payload=[{"Id": ids[0]}, {"Id": "0015g00000000zzAAA"}],
        salesforce_conn_id=airflow_salesforce_conn,
    ).execute(context={})
    hard = SalesforceBulkOperator(
        task_id="hard_delete_accounts",
        operation="hard_delete",
        object_name="Account",
        payload=[{"Id": ids[1]}],
        salesforce_conn_id=airflow_salesforce_conn,
    ).execute(context={})

    assert [r["success"] for r in soft] == [True, False]
    assert soft[1]["errors"][0]["statusCode"] == "INVALID_CROSS_REFERENCE_KEY"
    assert hard == [{"success": True, "created": False, "id": ids[1], "errors": []}]
    assert [r["Name"] for r in _accounts(emulator)] == ["Kept"]
    binned = {r["Name"]: r["IsDeleted"] for r in _accounts(emulator, include_deleted=True)}
    assert binned == {"Soft": True, "Kept": False}


# ---------------------------------------------------------------- in process: the batch life cycle


@pytest.fixture
def bulk_in_process() -> Bulk1:
    """A Bulk1 whose worker thread is not started, so the test decides when a batch is processed."""
    schema = load_schema(SAMPLE_ORG)
    emu = Emulator(schema=schema, store=Store(schema))
    return Bulk1(emu, start_worker=False)


def test_batch_goes_queued_then_in_progress_then_completed(bulk_in_process: Bulk1) -> None:
    bulk = bulk_in_process
    job = bulk.create_job({"operation": "insert", "object": "Account", "contentType": "JSON"}, VERSION)
    assert isinstance(job, Job)
    batch = bulk.add_batch(job, b'[{"Name": "A"}, {"Name": "B"}]')
    assert isinstance(batch, Batch)
    assert bulk.batch_json(batch)["state"] == "Queued"
    assert bulk.job_json(job)["numberBatchesQueued"] == 1

    seen: list[str] = []
    store_write = bulk.emu.store.write

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(bulk.batch_json(batch)["state"])
        return store_write(*args, **kwargs)

    bulk.emu.store.write = spy  # type: ignore[method-assign]
    assert bulk.process_next() is True

    assert seen == ["InProgress"]
    info = bulk.batch_json(batch)
    assert (info["state"], info["numberRecordsProcessed"]) == ("Completed", 2)
    assert bulk.job_json(job)["numberBatchesCompleted"] == 1
    assert bulk.process_next() is False


def test_abort_leaves_queued_batches_not_processed(bulk_in_process: Bulk1) -> None:
    bulk = bulk_in_process
    job = bulk.create_job({"operation": "insert", "object": "Account", "contentType": "JSON"}, VERSION)
    batch = bulk.add_batch(job, b'[{"Name": "Never written"}]')

    assert bulk.set_state(job, "Aborted") is None
    bulk.process_next()

    assert bulk.batch_json(batch)["state"] == "NotProcessed"
    assert bulk.emu.store.export(bulk.emu.schema.objects["Account"]) == []


def test_query_results_split_into_several_result_files(bulk_in_process: Bulk1) -> None:
    bulk = bulk_in_process
    bulk.query_chunk = 2
    ingest = bulk.create_job({"operation": "insert", "object": "Account", "contentType": "JSON"}, VERSION)
    bulk.add_batch(ingest, b'[{"Name": "a"}, {"Name": "b"}, {"Name": "c"}]')
    bulk.process_next()
    query = bulk.create_job({"operation": "query", "object": "Account", "contentType": "JSON"}, VERSION)
    batch = bulk.add_batch(query, b"SELECT Name FROM Account ORDER BY Name")
    bulk.process_next()

    files = [bulk.query_records(batch, rid) for rid in batch.result_ids]

    assert [[r["Name"] for r in f or []] for f in files] == [["a", "b"], ["c"]]
