"""Salesforce errors injected through the emulator: 503s, lost answers, the API limit and Failed Bulk jobs.

Each test ends with the two checks of the fault matrix: every source row ended loaded,
rejected or failed (summary.json), and Salesforce holds each external id at most once.

Airflow's own task retries are real here: the DAG's tasks keep their `retries`, only their
`retry_delay` is set to zero on the test's copy of the DAG object, so that dag.test() runs a
retry at once instead of idling 30 s (dag.test() waits for the delay like a scheduler would).
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from scripts.services import EmulatorProcess
from tests.conftest import ROOT
from tests.faults.checks import assert_each_key_once, assert_reconciled, spec_copy, summary, task_errors

DAG_ID = "dms_legacy_crm_accounts"
SOURCE_ROWS = 12  # the sample: 8 rows load, 4 are rejected by the transform
SEED = 20261127

pytestmark = pytest.mark.usefixtures("airflow_db")


def _dag(spec_dir: Path | None = None, name: str | None = None) -> Any:
    from dms.dag_factory import build_dag, build_dags
    from dms.spec import load_spec

    if spec_dir is None:
        dag = build_dags(ROOT / "include" / "migrations")[DAG_ID]
    else:
        spec_file = spec_dir / f"{name}.yaml"
        dag = build_dag(load_spec(spec_file), spec_file)
    for task in dag.tasks:
        task.retry_delay = timedelta(0)
    return dag


def _bulk_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, **settings: Any) -> Path:
    """The sample spec with every chunk through Bulk API 2.0 (the sample's chunks are Collections-sized)."""
    spec_dir = spec_copy(tmp_path / "specs", name, bulk_threshold=0, **settings)
    monkeypatch.setenv("DMS_SPEC_PATH", str(spec_dir))
    return spec_dir


def _connection_extra(monkeypatch: pytest.MonkeyPatch, **extra: Any) -> None:
    """Settings of the Salesforce connection, the way a user sets them (its extras)."""
    conn = json.loads(os.environ["AIRFLOW_CONN_SALESFORCE_DEFAULT"])
    conn["extra"] = {**conn.get("extra", {}), **extra}
    monkeypatch.setenv("AIRFLOW_CONN_SALESFORCE_DEFAULT", json.dumps(conn))


def _tries(run: Any, task_id: str) -> dict[int, int]:
    return {ti.map_index: ti.try_number for ti in run.get_task_instances() if ti.task_id == task_id}


def _chunks(dag_id: str, run_id: str) -> list[dict[str, Any]]:
    from dms.audit import Audit
    from dms.hooks.cloudant import DmsCloudantHook

    return [c for c in Audit(DmsCloudantHook().get_conn()).get_chunks(dag_id, run_id, "accounts") if c["ready"]]


def _ingest_jobs(emulator: EmulatorProcess) -> list[dict[str, Any]]:
    """Every Bulk ingest job with its info, read through the documented API (no faults are on by then)."""
    token = emulator.token()
    base = f"{token['instance_url']}/services/data/v62.0/jobs/ingest"
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    jobs = emulator.admin("/__emulator/bulk2/ingest")["jobs"]
    return [
        {**job, **requests.get(f"{base}/{job['id']}", headers=headers, timeout=30).json()}
        for job in jobs
        if job["object"] == "Account"
    ]


# ---------------------------------------------------------------- 503s and lost answers


def test_503s_and_lost_answers_on_collections_are_retried_in_the_call_and_load_each_row_once(
    emulator: EmulatorProcess, dms_connections: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A margin of repeats so that the seeded draws never exhaust one call: the run must succeed
    # without any task retry, since every call of an upsert through Collections is safe to repeat.
    _connection_extra(monkeypatch, max_retries=8)
    spec_dir = spec_copy(tmp_path / "specs", "sf_errors_collections", retries=0)
    monkeypatch.setenv("DMS_SPEC_PATH", str(spec_dir))
    emulator.admin("/__emulator/faults", "PUT", {"error_503_rate": 0.25, "timeout_rate": 0.25, "seed": SEED})

    run = _dag(spec_dir, "sf_errors_collections").test()

    faults = emulator.admin("/__emulator/faults")
    emulator.admin("/__emulator/faults", "PUT", {"error_503_rate": 0.0, "timeout_rate": 0.0})
    assert faults["unavailable_calls"] > 0 and faults["lost_answers"] > 0, faults
    assert run.state == "success"
    assert set(_tries(run, "accounts.load").values()) == {1}, "a passing fault must not cost a task retry"
    dag_id = "dms_sf_errors_collections"
    counts = assert_reconciled(dag_id, run.run_id, SOURCE_ROWS)
    assert (counts["loaded"], counts["rejected"], counts["failed"]) == (8, 4, 0)
    assert_each_key_once(emulator, counts["loaded"])
    # The org was empty: this run created every record, also those whose upsert was repeated
    # after a lost answer (the repeat itself reports them as updated). A rollback deletes them.
    assert counts["created"] == 8


def test_503s_and_lost_answers_on_bulk_jobs_never_upload_a_chunk_twice(
    emulator: EmulatorProcess, dms_connections: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _connection_extra(monkeypatch, max_retries=8)
    spec_dir = _bulk_spec(tmp_path, monkeypatch, "sf_errors_bulk", retries=4)
    emulator.admin("/__emulator/faults", "PUT", {"error_503_rate": 0.2, "timeout_rate": 0.2, "seed": SEED})

    run = _dag(spec_dir, "sf_errors_bulk").test()

    faults = emulator.admin("/__emulator/faults")
    emulator.admin("/__emulator/faults", "PUT", {"error_503_rate": 0.0, "timeout_rate": 0.0})
    assert faults["unavailable_calls"] > 0 and faults["lost_answers"] > 0, faults
    assert run.state == "success"
    dag_id = "dms_sf_errors_bulk"
    counts = assert_reconciled(dag_id, run.run_id, SOURCE_ROWS)
    assert (counts["loaded"], counts["rejected"], counts["failed"]) == (8, 4, 0)
    assert_each_key_once(emulator, counts["loaded"])
    jobs = _ingest_jobs(emulator)
    # An upload whose answer was lost is never sent again: its job is aborted and a new job
    # takes the chunk (on the task's retry, from the ledger). Every job got at most one upload,
    # and the jobs that ran processed each ready row exactly once.
    assert all(job["uploads"] <= 1 for job in jobs), jobs
    assert sum(job.get("numberRecordsProcessed", 0) for job in jobs if job["state"] == "JobComplete") == 8
    # The seed loses the answer to at least one upload: that chunk took an Airflow task retry,
    # which found its job in the ledger and aborted it.
    assert any(job["state"] == "Aborted" for job in jobs), jobs
    assert max(_tries(run, "accounts.load").values()) > 1


# ---------------------------------------------------------------- REQUEST_LIMIT_EXCEEDED


def test_request_limit_fails_the_run_at_once_and_a_retry_after_it_lifts_loads_each_row_once(
    emulator: EmulatorProcess, dms_connections: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    from airflow.sdk import timezone

    started: list[int] = []

    def use_up_the_limit(context: Any) -> None:
        # From the second load to start on (dag.test() picks the order), the org has no API requests left.
        started.append(context["ti"].map_index)
        if len(started) == 2:
            calls = emulator.admin("/__emulator/faults")["api_calls"]
            emulator.admin("/__emulator/faults", "PUT", {"request_limit": calls})

    when = timezone.utcnow()
    dag = _dag()
    dag.get_task("accounts.load").on_execute_callback = [use_up_the_limit]
    run = dag.test(logical_date=when, run_after=when)

    assert len(started) >= 2, "the fault was never injected"
    assert run.state == "failed"
    loads = {ti.map_index: ti.state for ti in run.get_task_instances() if ti.task_id == "accounts.load"}
    assert loads[started[0]] == "success" and loads[started[1]] == "failed", loads
    # Failed at once: retrying within minutes cannot restore a rolling 24-hour allowance.
    assert _tries(run, "accounts.load")[started[1]] == 1
    log = task_errors(capfd)
    assert "REQUEST_LIMIT_EXCEEDED" in log and "rolling 24-hour" in log, log[-3000:]
    first = summary(DAG_ID, run.run_id)
    assert first["status"] == "failed"
    before = assert_each_key_once(emulator, first["objects"]["accounts"]["loaded"])
    assert 0 < len(before) < 8

    # The limit lifts; the user clears the run (here: the same run again, so its ledger applies).
    emulator.admin("/__emulator/faults", "PUT", {"request_limit": None})
    dag.get_task("accounts.load").on_execute_callback = []
    again = dag.test(logical_date=when, run_after=when)

    assert again.run_id == run.run_id and again.state == "success"
    counts = assert_reconciled(DAG_ID, again.run_id, SOURCE_ROWS)
    assert (counts["loaded"], counts["rejected"], counts["failed"]) == (8, 4, 0)
    after = {r["Legacy_Id__c"]: r["Id"] for r in assert_each_key_once(emulator, counts["loaded"])}
    # The records of the chunk loaded before the limit are the same records, not new ones.
    assert all(after[r["Legacy_Id__c"]] == r["Id"] for r in before)


# ---------------------------------------------------------------- a Bulk job that ends Failed


def test_failed_bulk_job_keeps_what_it_processed_and_sends_only_the_unprocessed_rows_again(
    emulator: EmulatorProcess, dms_connections: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec_dir = _bulk_spec(tmp_path, monkeypatch, "sf_errors_failed_job")

    armed: list[bool] = []

    def fail_chunk_0s_job(context: Any) -> None:
        # Chunk 0 has 5 ready rows: its job fails after 2 of them, whenever dag.test() runs it.
        # Once: the callback runs again when the task resumes from its trigger.
        if context["ti"].map_index == 0 and not armed:
            emulator.admin("/__emulator/faults", "PUT", {"fail_next_bulk_jobs": 1, "fail_after_rows": 2})
            armed.append(True)

    dag = _dag(spec_dir, "sf_errors_failed_job")
    dag.get_task("accounts.load").on_execute_callback = [fail_chunk_0s_job]
    run = dag.test()

    assert run.state == "success"
    dag_id = "dms_sf_errors_failed_job"
    counts = assert_reconciled(dag_id, run.run_id, SOURCE_ROWS)
    assert (counts["loaded"], counts["rejected"], counts["failed"]) == (8, 4, 0)
    assert_each_key_once(emulator, counts["loaded"])
    jobs = _ingest_jobs(emulator)
    [failed] = [job for job in jobs if job["state"] == "Failed"]
    assert failed["numberRecordsProcessed"] == 2 and "fail_next_bulk_jobs" in failed["errorMessage"]
    # The two rows the Failed job processed were not sent again: every ready row went through
    # exactly one job that processed it.
    assert sum(job.get("numberRecordsProcessed", 0) for job in jobs) == 8
    chunks = {c["chunk"]: c for c in _chunks(dag_id, run.run_id)}
    assert {n: c["unprocessed_retries"] for n, c in chunks.items()} == {0: 1, 1: 0, 2: 0}
    assert chunks[0]["job_state"] == "Failed" and chunks[0]["loaded"] == 5
    assert len(jobs) == len(chunks) + 1


def test_bulk_jobs_that_keep_failing_leave_their_rows_failed_with_the_jobs_error_and_the_run_red(
    emulator: EmulatorProcess, dms_connections: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dms.operators.load import UNPROCESSED_RETRIES

    spec_dir = _bulk_spec(tmp_path, monkeypatch, "sf_errors_failing_jobs")
    emulator.admin("/__emulator/faults", "PUT", {"fail_next_bulk_jobs": 100})

    run = _dag(spec_dir, "sf_errors_failing_jobs").test()

    assert run.state == "failed"
    dag_id = "dms_sf_errors_failing_jobs"
    report = summary(dag_id, run.run_id)
    assert any("rows failed in Salesforce" in p and "max_error_rate" in p for p in report["problems"]), report
    counts = assert_reconciled(dag_id, run.run_id, SOURCE_ROWS)
    assert (counts["loaded"], counts["rejected"], counts["failed"]) == (0, 4, 8)
    assert_each_key_once(emulator, 0)
    chunks = _chunks(dag_id, run.run_id)
    # Each chunk: its first job and the bounded new jobs for its unprocessed rows, all Failed.
    assert all(c["unprocessed_retries"] == UNPROCESSED_RETRIES for c in chunks), chunks
    assert all(c["error_codes"] == {"UNPROCESSED": c["ready"]} for c in chunks), chunks
    jobs = _ingest_jobs(emulator)
    assert len(jobs) == len(chunks) * (1 + UNPROCESSED_RETRIES) and {j["state"] for j in jobs} == {"Failed"}
    errors = Path(counts["errors_csv"]).read_text(encoding="utf-8")
    assert errors.count("InternalServerError : job failed by the emulator's fail_next_bulk_jobs fault") == 8
