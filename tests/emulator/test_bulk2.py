"""Bulk API 2.0 (ingest and query jobs) against the unmodified simple_salesforce client and raw HTTP,
over HTTPS to the emulator subprocess.

Each client-level test checks what the client returns *and* what the org holds afterwards
(through the admin export), so an emulator that answers plausibly without writing fails.
A few state-machine tests drive a Bulk2 in-process, where the worker can be stepped.
"""

from __future__ import annotations

import csv
import io
import re
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceOperationError

from salesforce_emulator import bulk2 as bulk2_module
from salesforce_emulator.bulk2 import Bulk2, Job
from salesforce_emulator.ids import make_id
from salesforce_emulator.schema import load_schema
from salesforce_emulator.state import Emulator
from salesforce_emulator.store import Store
from scripts.services import EmulatorProcess

SAMPLE_ORG = Path(__file__).resolve().parents[2] / "include" / "org" / "sample_org.yaml"
VERSION = "62.0"
WAIT = 0.1  # simple_salesforce's first poll delay; it backs off from there
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}\+0000$")
INGEST_INFO_KEYS = [
    "id",
    "operation",
    "object",
    "createdById",
    "createdDate",
    "systemModstamp",
    "state",
    "concurrencyMode",
    "contentType",
    "apiVersion",
    "jobType",
    "lineEnding",
    "columnDelimiter",
    "numberRecordsProcessed",
    "numberRecordsFailed",
    "retries",
    "totalProcessingTime",
    "apiActiveProcessingTime",
    "apexProcessingTime",
]


# ---------------------------------------------------------------- helpers


class Bulk2Http:
    """Raw Bulk API 2.0 calls, for shapes and for what the client never sends."""

    def __init__(self, emulator: EmulatorProcess) -> None:
        self.base = f"{emulator.base_url}/services/data/v{VERSION}/jobs"
        self.session = requests.Session()
        self.session.verify = str(emulator.ca_file)
        self.session.headers["Authorization"] = "Bearer " + emulator.token()["access_token"]

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, self.base + path, timeout=60, **kwargs)

    def create(self, **body: Any) -> dict[str, Any]:
        resp = self.call("POST", "/ingest", json={"contentType": "CSV", **body})
        assert resp.status_code == 200, resp.text
        return resp.json()

    def upload(self, job_id: str, data: str | bytes) -> requests.Response:
        payload = data.encode() if isinstance(data, str) else data
        return self.call("PUT", f"/ingest/{job_id}/batches", data=payload, headers={"Content-Type": "text/csv"})

    def patch(self, kind: str, job_id: str, state: str) -> requests.Response:
        return self.call("PATCH", f"/{kind}/{job_id}", json={"state": state})

    def info(self, kind: str, job_id: str) -> dict[str, Any]:
        resp = self.call("GET", f"/{kind}/{job_id}")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def wait(self, kind: str, job_id: str, states: tuple[str, ...] = ("JobComplete", "Failed", "Aborted")) -> dict:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            info = self.info(kind, job_id)
            if info["state"] in states:
                return info
            time.sleep(0.02)
        raise AssertionError(f"job {job_id} never reached {states}: {info}")

    def ingest(self, data: str, **body: Any) -> dict[str, Any]:
        """Create, upload, close and wait: one whole ingest job."""
        job = self.create(**body)
        assert self.upload(job["id"], data).status_code == 201
        assert self.patch("ingest", job["id"], "UploadComplete").status_code == 200
        return self.wait("ingest", job["id"])

    def results(self, job_id: str, kind: str) -> str:
        resp = self.call("GET", f"/ingest/{job_id}/{kind}")
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"].startswith("text/csv")
        return resp.content.decode()


@pytest.fixture
def raw(emulator: EmulatorProcess) -> Bulk2Http:
    return Bulk2Http(emulator)


def _error(resp: requests.Response) -> tuple[int, str, str]:
    body = resp.json()
    assert isinstance(body, list) and len(body) == 1 and set(body[0]) == {"errorCode", "message"}, body
    return resp.status_code, body[0]["errorCode"], body[0]["message"]


def _accounts(emulator: EmulatorProcess, *, include_deleted: bool = False) -> list[dict[str, Any]]:
    flag = "true" if include_deleted else "false"
    return emulator.admin(f"/__emulator/export/Account?include_deleted={flag}")["records"]


def _by_legacy(emulator: EmulatorProcess, sobject: str = "Account") -> dict[str, dict[str, Any]]:
    records = emulator.admin(f"/__emulator/export/{sobject}?include_deleted=false")["records"]
    return {r["Legacy_Id__c"]: r for r in records if r["Legacy_Id__c"]}


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return str(path)


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


# ---------------------------------------------------------------- simple_salesforce: ingest


def test_insert_reports_successes_and_failures_in_upload_order_with_values_as_uploaded(
    sf: Salesforce, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    data = (
        "Name,Legacy_Id__c,NumberOfEmployees,Description\n"
        'Acme,B2-1,10,"multi\nline, with ""quotes"""\n'
        ",B2-2,5,no name\n"  # Name is required
        "Globex,B2-3,notanumber,bad number\n"
        "Initech,B2-4,,empty cell means no value\n"
    )
    results = sf.bulk2.Account.insert(csv_file=_write(tmp_path, "a.csv", data), wait=WAIT)

    assert results == [
        {"numberRecordsFailed": 2, "numberRecordsProcessed": 4, "numberRecordsTotal": 4, "job_id": results[0]["job_id"]}
    ]
    job_id = results[0]["job_id"]
    stored = _by_legacy(emulator)
    assert set(stored) == {"B2-1", "B2-4"}
    assert stored["B2-1"]["Description"] == 'multi\nline, with "quotes"'
    assert stored["B2-4"]["NumberOfEmployees"] is None

    success = sf.bulk2.Account.get_successful_records(job_id)
    assert success.splitlines()[0] == '"sf__Id","sf__Created",Name,Legacy_Id__c,NumberOfEmployees,Description'
    assert _rows(success)[1:] == [
        [stored["B2-1"]["Id"], "true", "Acme", "B2-1", "10", 'multi\nline, with "quotes"'],
        [stored["B2-4"]["Id"], "true", "Initech", "B2-4", "", "empty cell means no value"],
    ]
    assert '"Initech","B2-4",""' in success, "every result field is quoted, as Salesforce writes them"

    failed = sf.bulk2.Account.get_failed_records(job_id)
    assert failed.splitlines()[0] == '"sf__Id","sf__Error",Name,Legacy_Id__c,NumberOfEmployees,Description'
    assert _rows(failed)[1:] == [
        ["", "REQUIRED_FIELD_MISSING:Required fields are missing: [Name]:Name --", "", "B2-2", "5", "no name"],
        [
            "",
            "INVALID_TYPE_ON_FIELD_IN_RECORD:NumberOfEmployees: value not of required type: notanumber:"
            "NumberOfEmployees --",
            "Globex",
            "B2-3",
            "notanumber",
            "bad number",
        ],
    ]
    assert sf.bulk2.Account.get_unprocessed_records(job_id) == "Name,Legacy_Id__c,NumberOfEmployees,Description\n"


def test_upsert_updates_matches_creates_the_rest_and_reports_created_flags(
    sf: Salesforce, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    sf.bulk2.Account.insert(
        csv_file=_write(tmp_path, "a.csv", "Name,Legacy_Id__c,BillingCity\nOld,UP-1,Oslo\n"), wait=WAIT
    )

    data = "Name,Legacy_Id__c\nRenamed,UP-1\nBrand New,UP-2\nNo Key,\n"
    [result] = sf.bulk2.Account.upsert(
        csv_file=_write(tmp_path, "b.csv", data), external_id_field="Legacy_Id__c", wait=WAIT
    )

    assert (result["numberRecordsProcessed"], result["numberRecordsFailed"]) == (3, 1)
    stored = _by_legacy(emulator)
    assert stored["UP-1"]["Name"] == "Renamed"
    assert stored["UP-1"]["BillingCity"] == "Oslo", "fields not in the upsert stay as they were"
    success = _rows(sf.bulk2.Account.get_successful_records(result["job_id"]))
    assert success[1:] == [
        [stored["UP-1"]["Id"], "false", "Renamed", "UP-1"],
        [stored["UP-2"]["Id"], "true", "Brand New", "UP-2"],
    ]
    failed = _rows(sf.bulk2.Account.get_failed_records(result["job_id"]))
    assert failed[1][1].startswith("MISSING_ARGUMENT:") and failed[1][2:] == ["No Key", ""]


def test_update_changes_named_records_and_fails_unknown_ids_with_their_id(
    sf: Salesforce, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    sf.bulk2.Account.insert(csv_file=_write(tmp_path, "a.csv", "Name,Legacy_Id__c\nA,UPD-1\n"), wait=WAIT)
    record_id = _by_legacy(emulator)["UPD-1"]["Id"]
    missing_id = make_id("001", 999_999)  # well-formed, but no such record

    data = f"Id,Name\n{record_id},Changed\n{missing_id},Ghost\n"
    [result] = sf.bulk2.Account.update(csv_file=_write(tmp_path, "u.csv", data), wait=WAIT)

    assert (result["numberRecordsProcessed"], result["numberRecordsFailed"]) == (2, 1)
    assert _by_legacy(emulator)["UPD-1"]["Name"] == "Changed"
    assert _rows(sf.bulk2.Account.get_successful_records(result["job_id"]))[1] == [
        record_id,
        "false",
        record_id,
        "Changed",
    ]
    failed = _rows(sf.bulk2.Account.get_failed_records(result["job_id"]))[1]
    assert failed == [missing_id, "INVALID_CROSS_REFERENCE_KEY:invalid cross reference id: --", missing_id, "Ghost"]


def test_delete_soft_deletes_and_hard_delete_removes_records(
    sf: Salesforce, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    sf.bulk2.Account.insert(csv_file=_write(tmp_path, "a.csv", "Name,Legacy_Id__c\nA,D-1\nB,D-2\n"), wait=WAIT)
    ids = {k: v["Id"] for k, v in _by_legacy(emulator).items()}

    [soft] = sf.bulk2.Account.delete(csv_file=_write(tmp_path, "d.csv", f"Id\n{ids['D-1']}\n"), wait=WAIT)
    [hard] = sf.bulk2.Account.hard_delete(csv_file=_write(tmp_path, "h.csv", f"Id\n{ids['D-2']}\n"), wait=WAIT)

    assert soft["numberRecordsFailed"] == hard["numberRecordsFailed"] == 0
    everything = {r["Id"]: r for r in _accounts(emulator, include_deleted=True)}
    assert everything[ids["D-1"]]["IsDeleted"] is True, "delete moves the record to the recycle bin"
    assert ids["D-2"] not in everything, "hardDelete removes it for good"
    assert _rows(sf.bulk2.Account.get_successful_records(soft["job_id"]))[1] == [ids["D-1"], "false", ids["D-1"]]


def test_relationship_column_resolves_parents_by_external_id_and_fails_unknown_ones(
    sf: Salesforce, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    sf.bulk2.Account.insert(csv_file=_write(tmp_path, "a.csv", "Name,Legacy_Id__c\nParent,ACC-1\n"), wait=WAIT)
    parent_id = _by_legacy(emulator)["ACC-1"]["Id"]

    data = "LastName,Legacy_Id__c,Account.Legacy_Id__c\nKnown,C-1,ACC-1\nOrphan,C-2,ACC-404\n"
    [result] = sf.bulk2.Contact.insert(csv_file=_write(tmp_path, "c.csv", data), wait=WAIT)

    assert result["numberRecordsFailed"] == 1
    contacts = _by_legacy(emulator, "Contact")
    assert contacts["C-1"]["AccountId"] == parent_id
    assert "C-2" not in contacts
    failed = _rows(sf.bulk2.Contact.get_failed_records(result["job_id"]))
    assert failed[0] == ["sf__Id", "sf__Error", "LastName", "Legacy_Id__c", "Account.Legacy_Id__c"]
    assert failed[1][1] == (
        "INVALID_FIELD:Foreign key external ID: ACC-404 not found for field Legacy_Id__c in entity Account: --"
    )


def test_unknown_column_fails_the_whole_job_and_leaves_every_row_unprocessed(
    sf: Salesforce, emulator: EmulatorProcess, raw: Bulk2Http, tmp_path: Path
) -> None:
    data = "Name,Foo__c\nA,1\nB,2\n"
    with pytest.raises(SalesforceOperationError, match="InvalidBatch : Field name not found : Foo__c"):
        sf.bulk2.Account.insert(csv_file=_write(tmp_path, "a.csv", data), wait=WAIT)

    [job] = raw.call("GET", "/ingest").json()["records"]
    info = raw.info("ingest", job["id"])
    assert info["state"] == "Failed"
    assert info["errorMessage"] == "InvalidBatch : Field name not found : Foo__c"
    assert (info["numberRecordsProcessed"], info["numberRecordsFailed"]) == (0, 0)
    assert _accounts(emulator) == []
    assert raw.results(job["id"], "unprocessedrecords") == 'Name,Foo__c\n"A","1"\n"B","2"\n'
    assert raw.results(job["id"], "successfulResults") == '"sf__Id","sf__Created",Name,Foo__c\n'


def test_row_with_the_wrong_number_of_columns_fails_alone(raw: Bulk2Http, emulator: EmulatorProcess) -> None:
    info = raw.ingest("Name,Legacy_Id__c\nA,W-1\nB,W-2,extra\nC\nD,W-4\n", object="Account", operation="insert")

    assert info["state"] == "JobComplete"
    assert (info["numberRecordsProcessed"], info["numberRecordsFailed"]) == (4, 2)
    assert set(_by_legacy(emulator)) == {"W-1", "W-4"}
    failed = _rows(raw.results(info["id"], "failedResults"))
    assert [row[1].split(":")[0] for row in failed[1:]] == ["TooManyColumns", "TooFewColumns"]
    assert failed[1][2:] == ["B", "W-2", "extra"], "the row is reported as uploaded, not dropped"


def test_pipe_delimiter_crlf_and_bom_are_honoured(raw: Bulk2Http, emulator: EmulatorProcess) -> None:
    data = '\ufeffName|Legacy_Id__c|Description\r\nA|P-1|"one\r\ntwo|three"\r\n'.encode()
    job = raw.create(object="Account", operation="insert", columnDelimiter="PIPE", lineEnding="CRLF")
    assert raw.upload(job["id"], data).status_code == 201
    raw.patch("ingest", job["id"], "UploadComplete")
    info = raw.wait("ingest", job["id"])

    assert info["state"] == "JobComplete", info
    assert _by_legacy(emulator)["P-1"]["Description"] == "one\r\ntwo|three"
    success = raw.results(job["id"], "successfulResults")
    assert success.startswith('"sf__Id"|"sf__Created"|Name|Legacy_Id__c|Description\r\n')
    assert success.endswith('|"true"|"A"|"P-1"|"one\r\ntwo|three"\r\n')


def test_line_ending_that_does_not_match_the_job_fails_it(raw: Bulk2Http, emulator: EmulatorProcess) -> None:
    info = raw.ingest("Name\r\nA\r\n", object="Account", operation="insert", lineEnding="LF")

    assert info["state"] == "Failed"
    assert info["errorMessage"] == (
        "ClientInputError : LineEnding is invalid on user data. Current LineEnding setting is LF"
    )
    assert _accounts(emulator) == []


def test_fail_next_bulk_jobs_fault_fails_the_job_with_its_rows_unprocessed(
    sf: Salesforce, emulator: EmulatorProcess, raw: Bulk2Http, tmp_path: Path
) -> None:
    emulator.admin("/__emulator/faults", "PUT", json={"fail_next_bulk_jobs": 1})
    path = _write(tmp_path, "a.csv", "Name,Legacy_Id__c\nA,F-1\n")

    with pytest.raises(SalesforceOperationError, match="fail_next_bulk_jobs"):
        sf.bulk2.Account.insert(csv_file=path, wait=WAIT)

    [job] = raw.call("GET", "/ingest").json()["records"]
    assert job["state"] == "Failed"
    assert sf.bulk2.Account.get_unprocessed_records(job["id"]) == 'Name,Legacy_Id__c\n"A","F-1"\n'
    assert _accounts(emulator) == []
    assert emulator.admin("/__emulator/faults")["fail_next_bulk_jobs"] == 0, "the fault is used up"
    [ok] = sf.bulk2.Account.insert(csv_file=path, wait=WAIT)
    assert ok["numberRecordsFailed"] == 0 and set(_by_legacy(emulator)) == {"F-1"}


def test_unprocessed_records_is_served_under_both_spellings(raw: Bulk2Http) -> None:
    job = raw.create(object="Account", operation="insert")
    raw.upload(job["id"], "Name\nA\n")
    assert raw.patch("ingest", job["id"], "Aborted").json()["state"] == "Aborted"

    assert raw.results(job["id"], "unprocessedrecords") == 'Name\n"A"\n'
    assert raw.results(job["id"], "unprocessedRecords") == 'Name\n"A"\n'


# ---------------------------------------------------------------- ingest: states, shapes, errors


def test_ingest_job_info_shapes_follow_salesforce(raw: Bulk2Http) -> None:
    created = raw.create(object="account", operation="upsert", externalIdFieldName="legacy_id__c")

    assert list(created) == [
        "id",
        "operation",
        "object",
        "createdById",
        "createdDate",
        "systemModstamp",
        "state",
        "externalIdFieldName",
        "concurrencyMode",
        "contentType",
        "apiVersion",
        "contentUrl",
        "lineEnding",
        "columnDelimiter",
    ]
    job_id = created["id"]
    assert re.fullmatch(r"750[A-Za-z0-9]{15}", job_id)
    assert (created["object"], created["externalIdFieldName"], created["state"]) == ("Account", "Legacy_Id__c", "Open")
    assert created["contentUrl"] == f"services/data/v{VERSION}/jobs/ingest/{job_id}/batches"
    assert created["apiVersion"] == 62.0 and isinstance(created["apiVersion"], float)
    assert STAMP.match(created["createdDate"]) and STAMP.match(created["systemModstamp"])
    assert (created["lineEnding"], created["columnDelimiter"], created["concurrencyMode"]) == (
        "LF",
        "COMMA",
        "Parallel",
    )

    open_info = raw.info("ingest", job_id)
    assert "numberRecordsProcessed" not in open_info and "numberRecordsFailed" not in open_info
    assert raw.upload(job_id, "Name,Legacy_Id__c\nX,S-1\n").status_code == 201
    raw.patch("ingest", job_id, "UploadComplete")
    done = raw.wait("ingest", job_id)
    expected = INGEST_INFO_KEYS.copy()
    expected.insert(expected.index("concurrencyMode"), "externalIdFieldName")
    assert list(done) == expected
    assert (done["jobType"], done["numberRecordsProcessed"], done["numberRecordsFailed"]) == ("V2Ingest", 1, 0)
    assert all(isinstance(done[k], int) for k in ("retries", "totalProcessingTime", "apexProcessingTime"))


def test_ingest_job_walks_open_upload_complete_job_complete_and_rejects_wrong_moves(raw: Bulk2Http) -> None:
    job = raw.create(object="Account", operation="insert")
    job_id = job["id"]

    assert _error(raw.call("DELETE", f"/ingest/{job_id}"))[:2] == (400, "INVALIDJOBSTATE"), "an Open job cannot go"
    assert raw.upload(job_id, "Name\nA\n").status_code == 201
    second = raw.upload(job_id, "Name\nB\n")
    assert _error(second)[:2] == (400, "BULK_API_ERROR")
    assert "only do 'PUT' once" in _error(second)[2]

    closed = raw.patch("ingest", job_id, "UploadComplete")
    assert closed.status_code == 200 and closed.json()["state"] == "UploadComplete"
    assert _error(raw.upload(job_id, "Name\nC\n"))[:2] == (400, "INVALIDJOBSTATE")
    assert raw.wait("ingest", job_id)["state"] == "JobComplete"
    assert _error(raw.patch("ingest", job_id, "UploadComplete"))[:2] == (400, "INVALIDJOBSTATE")
    assert _error(raw.patch("ingest", job_id, "Aborted")) == (
        400,
        "INVALIDJOBSTATE",
        "Aborting already Completed Job not allowed",
    )
    assert _error(raw.patch("ingest", job_id, "JobComplete"))[:2] == (400, "INVALIDJOBSTATE")


def test_closing_a_job_without_data_fails_it(raw: Bulk2Http) -> None:
    job = raw.create(object="Account", operation="insert")
    assert raw.patch("ingest", job["id"], "UploadComplete").status_code == 200
    info = raw.wait("ingest", job["id"])
    assert info["state"] == "Failed" and info["errorMessage"].startswith("InvalidBatch")


def test_aborting_an_open_job_processes_nothing(raw: Bulk2Http, emulator: EmulatorProcess) -> None:
    job = raw.create(object="Account", operation="insert")
    raw.upload(job["id"], "Name\nA\nB\n")

    aborted = raw.patch("ingest", job["id"], "Aborted")

    assert aborted.status_code == 200 and aborted.json()["state"] == "Aborted"
    assert raw.info("ingest", job["id"])["state"] == "Aborted"
    assert _accounts(emulator) == []
    assert raw.results(job["id"], "unprocessedrecords") == 'Name\n"A"\n"B"\n'
    assert raw.results(job["id"], "failedResults") == '"sf__Id","sf__Error",Name\n'


def test_deleting_a_finished_job_forgets_it(raw: Bulk2Http) -> None:
    info = raw.ingest("Name\nA\n", object="Account", operation="insert")

    resp = raw.call("DELETE", f"/ingest/{info['id']}")

    assert (resp.status_code, resp.content) == (204, b"")
    assert _error(raw.call("GET", f"/ingest/{info['id']}"))[:2] == (404, "NOT_FOUND")
    assert _error(raw.call("GET", f"/ingest/{info['id']}/successfulResults"))[:2] == (404, "NOT_FOUND")


def test_job_list_shows_ingest_and_query_jobs_apart(raw: Bulk2Http) -> None:
    first = raw.create(object="Account", operation="insert")
    second = raw.create(object="Contact", operation="delete")
    query = raw.call("POST", "/query", json={"operation": "query", "query": "SELECT Id FROM Account"}).json()

    ingest_list = raw.call("GET", "/ingest").json()
    query_list = raw.call("GET", "/query").json()

    assert list(ingest_list) == ["done", "records", "nextRecordsUrl"]
    assert (ingest_list["done"], ingest_list["nextRecordsUrl"]) == (True, None)
    assert [j["id"] for j in ingest_list["records"]] == [first["id"], second["id"]]
    assert list(ingest_list["records"][0]) == INGEST_INFO_KEYS[: INGEST_INFO_KEYS.index("columnDelimiter") + 1]
    assert [(j["id"], j["jobType"]) for j in query_list["records"]] == [(query["id"], "V2Query")]


def test_job_creation_is_validated_like_salesforce(raw: Bulk2Http) -> None:
    def create(**body: Any) -> tuple[int, str, str]:
        return _error(raw.call("POST", "/ingest", json=body))

    assert create(object="Nope__c", operation="insert")[:2] == (400, "INVALIDENTITY")
    assert create(object="Account", operation="upsert") == (
        400,
        "INVALIDJOB",
        "External ID was blank for Account. An External ID must be specified for upsert.",
    )
    assert create(object="Account", operation="upsert", externalIdFieldName="Name")[:2] == (400, "INVALIDJOB")
    assert create(object="Account", operation="merge")[:2] == (400, "JSON_PARSER_ERROR")
    assert create(object="Account", operation="insert", lineEnding="CR")[:2] == (400, "JSON_PARSER_ERROR")
    assert create(object="Account", operation="insert", columnDelimiter="COLON")[:2] == (400, "JSON_PARSER_ERROR")
    assert create(object="Account", operation="insert", contentType="JSON")[:2] == (400, "JSON_PARSER_ERROR")
    assert _error(raw.call("GET", "/ingest/7505g0000000000AAA"))[:2] == (404, "NOT_FOUND")


def test_bulk2_requires_a_session(emulator: EmulatorProcess) -> None:
    resp = requests.get(
        f"{emulator.base_url}/services/data/v{VERSION}/jobs/ingest", verify=str(emulator.ca_file), timeout=30
    )
    assert resp.status_code == 401 and resp.json()[0]["errorCode"] == "INVALID_SESSION_ID"


def test_upload_over_the_limit_is_refused_and_the_job_stays_open(
    emulator_factory: Any, emulator: EmulatorProcess
) -> None:
    small = emulator_factory("--max-upload-bytes", "1000")
    raw = Bulk2Http(small)
    job = raw.create(object="Account", operation="insert")

    too_big = raw.upload(job["id"], "Name\n" + ("B" * 99 + "\n") * 11)  # 1,105 bytes

    status, code, message = _error(too_big)
    assert (status, code) == (400, "CLIENTINPUTERROR")
    assert "Exceeded max size limit of 1000" in message
    assert raw.info("ingest", job["id"])["state"] == "Open"
    assert raw.upload(job["id"], "Name\nSmall\n").status_code == 201, "a smaller upload is still accepted"


def test_admin_reset_forgets_bulk_jobs(raw: Bulk2Http, emulator: EmulatorProcess) -> None:
    job = raw.create(object="Account", operation="insert")
    emulator.admin("/__emulator/reset", "POST")
    assert _error(raw.call("GET", f"/ingest/{job['id']}"))[:2] == (404, "NOT_FOUND")


# ---------------------------------------------------------------- query


def test_query_pages_through_results_with_locator_and_max_records(
    sf: Salesforce, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    lines = "".join(f"Account {i:02d},Q-{i:02d}\n" for i in range(25))
    sf.bulk2.Account.insert(csv_file=_write(tmp_path, "a.csv", "Name,Legacy_Id__c\n" + lines), wait=WAIT)

    pages = list(
        sf.bulk2.Account.query("SELECT Name, Legacy_Id__c, AccountNumber FROM Account ORDER BY Name", 10, wait=WAIT)
    )

    assert len(pages) == 3
    parsed = [_rows(page) for page in pages]
    assert all(rows[0] == ["Name", "Legacy_Id__c", "AccountNumber"] for rows in parsed)
    assert [len(rows) - 1 for rows in parsed] == [10, 10, 5]
    names = [row[0] for rows in parsed for row in rows[1:]]
    assert names == [f"Account {i:02d}" for i in range(25)]
    assert pages[0].startswith('"Name","Legacy_Id__c","AccountNumber"\n"Account 00","Q-00",""\n'), (
        "fully quoted, nulls as empty quoted strings"
    )


def test_query_result_headers_and_locator_shapes(sf: Salesforce, raw: Bulk2Http, tmp_path: Path) -> None:
    sf.bulk2.Account.insert(csv_file=_write(tmp_path, "a.csv", "Name\nA\nB\nC\n"), wait=WAIT)
    created = raw.call(
        "POST", "/query", json={"operation": "query", "query": "SELECT Id, Name FROM Account", "lineEnding": "LF"}
    ).json()

    assert list(created) == [
        "id",
        "operation",
        "object",
        "createdById",
        "createdDate",
        "systemModstamp",
        "state",
        "concurrencyMode",
        "contentType",
        "apiVersion",
        "lineEnding",
        "columnDelimiter",
    ]
    assert (created["state"], created["object"]) == ("UploadComplete", "Account")
    info = raw.wait("query", created["id"])
    assert (info["jobType"], info["state"], info["numberRecordsProcessed"]) == ("V2Query", "JobComplete", 3)

    first = raw.call("GET", f"/query/{created['id']}/results", params={"maxRecords": 2})
    assert first.status_code == 200 and first.headers["content-type"].startswith("text/csv")
    assert first.headers["Sforce-NumberOfRecords"] == "2"
    locator = first.headers["Sforce-Locator"]
    assert locator and locator != "null"
    last = raw.call("GET", f"/query/{created['id']}/results", params={"maxRecords": 2, "locator": locator})
    assert (last.headers["Sforce-NumberOfRecords"], last.headers["Sforce-Locator"]) == ("1", "null")
    assert _rows(last.text)[1][1] == "C"
    whole = raw.call("GET", f"/query/{created['id']}/results")
    assert (whole.headers["Sforce-NumberOfRecords"], whole.headers["Sforce-Locator"]) == ("3", "null")


def test_query_all_includes_deleted_records(sf: Salesforce, emulator: EmulatorProcess, tmp_path: Path) -> None:
    sf.bulk2.Account.insert(csv_file=_write(tmp_path, "a.csv", "Name,Legacy_Id__c\nA,QA-1\nB,QA-2\n"), wait=WAIT)
    gone = _by_legacy(emulator)["QA-1"]["Id"]
    sf.bulk2.Account.delete(csv_file=_write(tmp_path, "d.csv", f"Id\n{gone}\n"), wait=WAIT)

    live = "".join(sf.bulk2.Account.query("SELECT Legacy_Id__c FROM Account", wait=WAIT))
    everything = "".join(sf.bulk2.Account.query_all("SELECT Legacy_Id__c, IsDeleted FROM Account", wait=WAIT))

    assert _rows(live)[1:] == [["QA-2"]]
    assert sorted(_rows(everything)[1:]) == [["QA-1", "true"], ["QA-2", "false"]]


def test_bad_soql_is_refused_at_creation(raw: Bulk2Http) -> None:
    def create(soql: str) -> tuple[int, str, str]:
        return _error(raw.call("POST", "/query", json={"operation": "query", "query": soql}))

    assert create("SELEC Id FROM Account")[:2] == (400, "MALFORMED_QUERY")
    assert create("SELECT Id FROM Nope__c")[:2] == (400, "INVALID_TYPE")
    assert create("SELECT Nope__c FROM Account")[:2] == (400, "INVALID_FIELD")
    assert _error(raw.call("POST", "/query", json={"operation": "insert", "query": "SELECT Id FROM Account"}))[:2] == (
        400,
        "JSON_PARSER_ERROR",
    )


def test_query_results_before_completion_are_412_and_a_queued_query_can_be_aborted(
    raw: Bulk2Http, emulator: EmulatorProcess
) -> None:
    # A large ingest keeps the one worker busy, so the query job waits in the queue behind it.
    rows = "".join(f"Busy {i}\n" for i in range(30000))
    busy = raw.create(object="Account", operation="insert")
    raw.upload(busy["id"], "Name\n" + rows)
    raw.patch("ingest", busy["id"], "UploadComplete")
    query = raw.call("POST", "/query", json={"operation": "query", "query": "SELECT Id FROM Account"}).json()

    assert raw.info("query", query["id"])["state"] in ("UploadComplete", "InProgress")
    early = raw.call("GET", f"/query/{query['id']}/results")
    assert _error(early)[:2] == (412, "JOB_NOT_COMPLETE")
    assert _error(raw.call("DELETE", f"/query/{query['id']}"))[:2] == (400, "INVALIDJOBSTATE")
    aborted = raw.patch("query", query["id"], "Aborted")
    assert aborted.status_code == 200 and aborted.json()["state"] == "Aborted"

    assert raw.wait("ingest", busy["id"])["state"] == "JobComplete"
    assert raw.info("query", query["id"])["state"] == "Aborted", "an aborted query never runs"
    assert _error(raw.call("GET", f"/query/{query['id']}/results"))[:2] == (412, "JOB_NOT_COMPLETE")
    assert raw.call("DELETE", f"/query/{query['id']}").status_code == 204


# ---------------------------------------------------------------- in-process: the worker stepped by hand


@pytest.fixture
def bulk_in_process(tmp_path: Path) -> Bulk2:
    schema = load_schema(SAMPLE_ORG)
    return Bulk2(Emulator(schema=schema, store=Store(schema)))


def _queued(bulk: Bulk2, data: str, operation: str = "insert") -> Job:
    job = bulk.new_job(
        "ingest", operation=operation, object="Account", api_version=62.0, line_ending="LF",
        column_delimiter="COMMA", state="Open",
    )  # fmt: skip
    job.upload_path = bulk.path_for(job, "upload.csv")
    Path(job.upload_path).write_text(data, encoding="utf-8")
    job.uploaded = True
    assert bulk.transition(job, ("Open",), "UploadComplete")
    return job


def _text(bulk: Bulk2, job: Job, kind: str) -> str:
    return b"".join(bulk2_module._result_stream(bulk, job, kind)).decode()  # noqa: SLF001


def test_abort_during_processing_stops_at_a_chunk_and_leaves_the_rest_unprocessed(
    bulk_in_process: Bulk2, monkeypatch: pytest.MonkeyPatch
) -> None:
    bulk = bulk_in_process
    monkeypatch.setattr(bulk2_module, "CHUNK_ROWS", 2)
    job = _queued(bulk, "Name\nA\nB\nC\nD\nE\n")
    write = bulk.emu.store.write

    def write_then_abort(*args: Any, **kwargs: Any) -> Any:
        # The user aborts while the first chunk is being written.
        assert bulk.transition(job, ("InProgress",), "Aborted")
        job.abort_requested = True
        return write(*args, **kwargs)

    monkeypatch.setattr(bulk.emu.store, "write", write_then_abort)
    bulk.run_one(job)

    assert job.state == "Aborted"
    assert (job.number_processed, job.number_failed) == (2, 0)
    assert bulk.emu.store.count(bulk.emu.schema.objects["Account"]) == 2
    assert _text(bulk, job, "unprocessed") == 'Name\n"C"\n"D"\n"E"\n'
    assert len(_rows(_text(bulk, job, "success"))) == 3


def test_in_progress_job_serves_the_results_of_finished_chunks(
    bulk_in_process: Bulk2, monkeypatch: pytest.MonkeyPatch
) -> None:
    bulk = bulk_in_process
    monkeypatch.setattr(bulk2_module, "CHUNK_ROWS", 2)
    job = _queued(bulk, "Name\nA\nB\nC\n")
    seen: list[tuple[str, str, str]] = []
    write = bulk.emu.store.write

    def observe(*args: Any, **kwargs: Any) -> Any:
        seen.append((job.state, _text(bulk, job, "success"), _text(bulk, job, "unprocessed")))
        return write(*args, **kwargs)

    monkeypatch.setattr(bulk.emu.store, "write", observe)
    bulk.run_one(job)

    assert [state for state, _, _ in seen] == ["InProgress", "InProgress"]
    assert len(_rows(seen[0][1])) == 1 and len(_rows(seen[1][1])) == 3, "results grow chunk by chunk"
    assert seen[1][2] == "Name\n", "rows are unprocessed only once a job has stopped"
    assert job.state == "JobComplete" and job.number_processed == 3


def test_reset_during_processing_leaves_no_rows_behind(bulk_in_process: Bulk2, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    bulk = bulk_in_process
    monkeypatch.setattr(bulk2_module, "CHUNK_ROWS", 2)
    job = _queued(bulk, "Name\nA\nB\nC\nD\n")
    write = bulk.emu.store.write
    in_write, release = threading.Event(), threading.Event()

    def slow_write(*args: Any, **kwargs: Any) -> Any:
        in_write.set()
        release.wait(10)
        return write(*args, **kwargs)

    monkeypatch.setattr(bulk.emu.store, "write", slow_write)
    worker = threading.Thread(target=bulk.run_one, args=(job,))
    worker.start()
    assert in_write.wait(10)
    # Reset the store while a chunk is in flight: the chunk lands afterwards unless bulk.reset clears it.
    bulk.emu.store.reset()
    resetter = threading.Thread(target=bulk.reset)
    resetter.start()
    release.set()
    resetter.join(10)
    worker.join(10)

    assert bulk.emu.store.count(bulk.emu.schema.objects["Account"]) == 0
    assert bulk.jobs == {}
