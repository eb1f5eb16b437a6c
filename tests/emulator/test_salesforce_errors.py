"""The emulator's Salesforce-error faults, and DMS's HTTP layer (retry policy, API limit) against them.

The DMS clients run against the emulator over HTTPS exactly as a load task runs them; the
sleeps between repeats are skipped (a no-op `sleep`), so no test waits on a backoff.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests
from simple_salesforce import Salesforce

from dms.errors import FatalError, RetriableError
from dms.salesforce.bulk2 import Bulk2Client
from dms.salesforce.collections import CollectionsClient
from dms.salesforce.http import ApiLimitError, OutcomeUnknownError, SalesforceAdapter
from scripts.services import EmulatorProcess

VERSION = "62.0"


def _dms_sf(emulator: EmulatorProcess, repeats: int = 2, timeout: float = 30.0) -> Salesforce:
    """simple_salesforce over a session with DMS's adapter, as DmsSalesforceHook builds it, without sleeps."""
    session = requests.Session()
    session.verify = str(emulator.ca_file)
    session.mount("https://", SalesforceAdapter(timeout, repeats, sleep=lambda _: None))
    token = emulator.token()
    return Salesforce(
        instance_url=token["instance_url"], session_id=token["access_token"], version=VERSION, session=session
    )


def _faults(emulator: EmulatorProcess, **changes: Any) -> dict[str, Any]:
    if changes:
        emulator.admin("/__emulator/faults", "PUT", changes)
    return emulator.admin("/__emulator/faults")


def _accounts(emulator: EmulatorProcess) -> dict[str, dict[str, Any]]:
    return {r["Legacy_Id__c"]: r for r in emulator.admin("/__emulator/export/Account")["records"]}


def _records(*keys: str) -> list[dict[str, Any]]:
    return [{"attributes": {"type": "Account"}, "Name": f"Account {k}", "Legacy_Id__c": k} for k in keys]


# ---------------------------------------------------------------- the emulator's faults


def test_lost_answer_fault_does_the_work_and_then_drops_the_connection(
    sf: Salesforce, emulator: EmulatorProcess
) -> None:
    _faults(emulator, timeout_rate=1.0)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        sf.session.post(
            f"{sf.base_url}sobjects/Account/",
            headers=sf.headers,
            data=json.dumps({"Name": "Lost", "Legacy_Id__c": "L-1"}),
            timeout=30,
        )
    record_id = _accounts(emulator)["L-1"]["Id"]
    # Even an answer that has no body (204 for an update) never completes.
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        sf.session.patch(
            f"{sf.base_url}sobjects/Account/{record_id}",
            headers=sf.headers,
            data=json.dumps({"Name": "Changed"}),
            timeout=30,
        )
    assert _faults(emulator, timeout_rate=0.0)["lost_answers"] == 2
    # Both calls took effect although their answers were lost.
    assert [(k, r["Name"]) for k, r in _accounts(emulator).items()] == [("L-1", "Changed")]


def test_seeded_faults_hit_the_same_calls_however_other_calls_interleave(
    sf: Salesforce, emulator: EmulatorProcess
) -> None:
    def pattern(interleave: bool) -> list[int]:
        _faults(emulator, error_503_rate=0.5, seed=7)
        codes = []
        for _ in range(12):
            if interleave:
                sf.session.get(f"{sf.base_url}sobjects/", headers=sf.headers, timeout=30)
            codes.append(sf.session.get(f"{sf.base_url}limits/", headers=sf.headers, timeout=30).status_code)
        return codes

    first = pattern(interleave=False)
    assert set(first) == {200, 503}
    assert pattern(interleave=True) == first


def test_failed_bulk_job_keeps_the_results_of_the_rows_it_processed(emulator: EmulatorProcess) -> None:
    _faults(emulator, fail_next_bulk_jobs=1, fail_after_rows=2)
    client = Bulk2Client(_dms_sf(emulator))
    job = client.create_job("Account", "insert")
    client.upload(job["id"], b'"Name","Legacy_Id__c"\n"A","F-1"\n"B","F-2"\n"C","F-3"\n"D","F-4"\n')
    client.set_state(job["id"], "UploadComplete")
    info = client.wait(job["id"], poll_seconds=0.05, sleep=time.sleep)

    assert info["state"] == "Failed" and "fail_next_bulk_jobs" in info["errorMessage"]
    assert info["numberRecordsProcessed"] == 2
    success = client.results(job["id"], "successfulResults").decode().splitlines()
    unprocessed = client.results(job["id"], "unprocessedrecords").decode().splitlines()
    assert len(success) == 3 and success[0].startswith('"sf__Id","sf__Created"')
    assert unprocessed == ["Name,Legacy_Id__c", '"C","F-3"', '"D","F-4"']
    assert client.results(job["id"], "failedResults").decode().splitlines()[1:] == []
    assert set(_accounts(emulator)) == {"F-1", "F-2"}


def test_timeout_and_fail_after_rows_faults_can_be_set_on_the_command_line(emulator_factory) -> None:
    proc = emulator_factory("--timeout-rate", "0.5", "--fail-after-rows", "3")
    faults = proc.admin("/__emulator/faults")
    assert (faults["timeout_rate"], faults["fail_after_rows"]) == (0.5, 3)


# ---------------------------------------------------------------- DMS's retry policy


def test_reads_are_repeated_after_503s_a_bounded_number_of_times(emulator: EmulatorProcess) -> None:
    sf = _dms_sf(emulator, repeats=2)
    _faults(emulator, error_503_rate=1.0)
    with pytest.raises(RetriableError, match="503"):
        Bulk2Client(sf).get_job("7505g0000000000AAA")
    assert _faults(emulator, error_503_rate=0.0)["unavailable_calls"] == 3
    assert Bulk2Client(sf).create_job("Account", "insert")["state"] == "Open"


def test_a_503_is_repeated_even_for_an_insert_because_salesforce_did_not_take_it_on(
    emulator: EmulatorProcess,
) -> None:
    sf = _dms_sf(emulator, repeats=1)
    _faults(emulator, error_503_rate=1.0)
    with pytest.raises(RetriableError):
        CollectionsClient(sf).send("insert", "Account", None, _records("I-1"))
    assert _faults(emulator, error_503_rate=0.0)["unavailable_calls"] == 2
    assert _accounts(emulator) == {}


def test_an_insert_whose_answer_is_lost_is_not_sent_again(emulator: EmulatorProcess) -> None:
    sf = _dms_sf(emulator, repeats=3)
    _faults(emulator, timeout_rate=1.0)
    with pytest.raises(OutcomeUnknownError, match="may or may not have taken effect"):
        CollectionsClient(sf).send("insert", "Account", None, _records("I-1", "I-2"))
    assert _faults(emulator, timeout_rate=0.0)["lost_answers"] == 1
    assert sorted(_accounts(emulator)) == ["I-1", "I-2"]


def test_an_upsert_whose_answer_is_lost_is_sent_again_and_loads_each_record_once(
    emulator: EmulatorProcess,
) -> None:
    sf = _dms_sf(emulator, repeats=3)
    # Seeded (see _FaultDraws in the emulator's app): the first answer is lost, the repeat gets through.
    _faults(emulator, timeout_rate=0.6, seed=5)
    results = CollectionsClient(sf).send("upsert", "Account", "Legacy_Id__c", _records("U-1", "U-2"))
    lost = _faults(emulator, timeout_rate=0.0)["lost_answers"]
    assert lost == 1
    assert [r["success"] for r in results] == [True, True]
    # The lost call created the records; the repeat found and updated them.
    assert [r["created"] for r in results] == [False, False]
    assert sorted(_accounts(emulator)) == ["U-1", "U-2"]


def test_an_upload_whose_answer_is_lost_is_not_sent_again(emulator: EmulatorProcess) -> None:
    client = Bulk2Client(_dms_sf(emulator, repeats=3))
    job = client.create_job("Account", "insert")
    _faults(emulator, timeout_rate=1.0)
    with pytest.raises(OutcomeUnknownError):
        client.upload(job["id"], b'"Name"\n"A"\n')
    _faults(emulator, timeout_rate=0.0)
    [listed] = [j for j in emulator.admin("/__emulator/bulk2/ingest")["jobs"] if j["id"] == job["id"]]
    assert listed["uploads"] == 1


def test_closing_a_job_again_after_a_lost_answer_is_success(emulator: EmulatorProcess) -> None:
    client = Bulk2Client(_dms_sf(emulator))
    job = client.create_job("Account", "insert")
    client.upload(job["id"], b'"Name","Legacy_Id__c"\n"A","C-1"\n')
    client.set_state(job["id"], "UploadComplete")
    # What the repeat of a close whose answer was lost meets: the job is closed already.
    assert client.set_state(job["id"], "UploadComplete")["state"] in ("UploadComplete", "InProgress", "JobComplete")
    aborted = client.create_job("Account", "insert")
    client.set_state(aborted["id"], "Aborted")
    assert client.set_state(aborted["id"], "Aborted")["state"] == "Aborted"
    with pytest.raises(FatalError, match="INVALIDJOBSTATE"):
        client.set_state(aborted["id"], "UploadComplete")


def test_request_limit_raises_a_fatal_error_naming_the_limit_from_any_call(emulator: EmulatorProcess) -> None:
    sf = _dms_sf(emulator)
    used = _faults(emulator)["api_calls"]
    _faults(emulator, request_limit=used)
    # simple_salesforce's own call (a SOQL query) and a DMS client call alike.
    with pytest.raises(ApiLimitError, match="REQUEST_LIMIT_EXCEEDED.*rolling 24-hour"):
        sf.query("SELECT Id FROM Account")
    with pytest.raises(ApiLimitError, match="REQUEST_LIMIT_EXCEEDED"):
        Bulk2Client(sf).create_job("Account", "insert")
    assert issubclass(ApiLimitError, FatalError) and not issubclass(ApiLimitError, RetriableError)
    # Refused at once, not repeated: each call above reached the emulator once.
    assert _faults(emulator, request_limit=None)["api_calls"] == used + 2


def test_the_connections_timeout_bounds_each_wait_for_an_answer(
    emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dms.hooks.salesforce import DmsSalesforceHook

    conn = emulator.salesforce_connection()
    conn["extra"].update(timeout=0.5, max_retries=1)
    monkeypatch.setenv("AIRFLOW_CONN_SALESFORCE_DEFAULT", json.dumps(conn))
    sf = DmsSalesforceHook().get_conn()
    _faults(emulator, latency_ms=5000)
    with pytest.raises(RetriableError, match="ReadTimeout"):
        Bulk2Client(sf).get_job("7505g0000000000AAA")
    # One try and one repeat, each cut short by the 0.5 s timeout (the emulator would answer after 5 s).
    assert _faults(emulator, latency_ms=0)["delayed_calls"] == 2
