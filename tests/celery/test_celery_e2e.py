"""End to end on the CeleryExecutor: a DMS run through the REST API, its chunks spread over two workers.

The accounts sample runs in 2-row chunks (6 mapped transforms and 6 mapped loads), every
non-empty chunk loaded by a Bulk API 2.0 job whose polling the load hands to the triggerer
(dms.triggers.bulk2.Bulk2JobTrigger). The assertions read what Airflow recorded: the task
instances' hostnames (each worker's Celery node name, see conftest.HOSTNAME_MODULE), the
loads' XComs, the triggerer's own log, and the records the emulator holds.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from typing import Any

import pytest

from scripts.services import EmulatorProcess
from tests.celery.conftest import DAG_ID, WORKERS, CeleryAirflow

RUN_SECONDS = 150
CHUNK_ROWS = 2
SOURCE_ROWS = 12
# The sample's rows that the transform rejects (see tests/integration/test_sample_migration.py).
BAD_IDS = {"C0007", "C0008", "C0009", "C0010"}


def _wait_for_run(stack: CeleryAirflow, run_id: str) -> dict[str, Any]:
    """The DAG run once it is no longer queued or running, failing early if a component died."""
    deadline = time.monotonic() + RUN_SECONDS
    while True:
        stack.check_running()
        run = stack.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
        if run["state"] not in ("queued", "running") or time.monotonic() > deadline:
            return run
        time.sleep(2)


def _xcom(stack: CeleryAirflow, run_id: str, task_id: str, map_index: int) -> Any:
    entry = stack.get(
        f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
        map_index=map_index,
        deserialize="true",
        stringify="false",
    )
    return entry["value"]


def _task_log(stack: CeleryAirflow, run_id: str, task_id: str, map_index: int) -> str:
    """The first try's whole log as the API serves it, its structured lines joined as JSON text."""
    response = stack.request(
        "GET",
        f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/logs/1",
        params={"map_index": map_index, "full_content": "true"},
    )
    assert response.status_code == 200, response.text[:500]
    return json.dumps(response.json()["content"], ensure_ascii=False)


@pytest.mark.parametrize("celery_airflow", ["redis", "rabbitmq"], indirect=True)
def test_chunks_spread_over_two_celery_workers_and_bulk_jobs_wait_in_the_triggerer(
    celery_airflow: CeleryAirflow, emulator: EmulatorProcess
) -> None:
    stack = celery_airflow
    response = stack.request("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})
    assert response.status_code == 200, response.text
    run_id = f"celery_e2e_{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    response = stack.request(
        "POST",
        f"/api/v2/dags/{DAG_ID}/dagRuns",
        json={"dag_run_id": run_id, "logical_date": None, "conf": {"chunk_rows": CHUNK_ROWS}},
    )
    assert response.status_code == 200, response.text

    run = _wait_for_run(stack, run_id)
    elapsed = time.monotonic() - started
    instances = stack.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", limit=100)["task_instances"]
    states = {(ti["task_id"], ti["map_index"]): ti["state"] for ti in instances}
    assert run["state"] == "success", f"run {run['state']} after {elapsed:.0f} s: {states}\n{stack.diagnostics()}"

    # Six chunks, each transformed and loaded by a mapped task instance of its own.
    chunks = -(-SOURCE_ROWS // CHUNK_ROWS)
    mapped = [ti for ti in instances if ti["task_id"] in ("accounts.transform", "accounts.load")]
    assert Counter(ti["task_id"] for ti in mapped) == {"accounts.transform": chunks, "accounts.load": chunks}
    assert all(ti["state"] == "success" for ti in mapped), states

    # Spread over both workers: the hostname each task recorded is its worker's Celery node name.
    hostnames = Counter(ti["hostname"] for ti in mapped)
    workers = Counter(name.split("@", 1)[0] for name in hostnames)
    assert set(workers) == set(WORKERS), f"mapped tasks by hostname: {dict(hostnames)}"
    # ...and Celery's own record agrees: the worker so named logged the task instance's workload.
    worker_logs = {name: stack.logs[name].read_text(errors="replace") for name in WORKERS}
    for ti in mapped:
        path = f"run_id={run_id}/task_id={ti['task_id']}/map_index={ti['map_index']}/"
        assert path in worker_logs[ti["hostname"].split("@", 1)[0]], f"{path} not in the log of {ti['hostname']}"

    # The triggerer waited for the Bulk jobs: each non-empty chunk's load says it was deferred,
    # and its log (through the API) shows the deferral and the trigger's run, read from the file
    # the triggerer wrote beside the task's (attempt=1.log.trigger.<triggerer job id>.log).
    loads = [_xcom(stack, run_id, "accounts.load", i) for i in range(chunks)]
    with_rows = [i for i, load in enumerate(loads) if load["loaded"] + load["failed"] > 0]
    assert len(with_rows) == chunks - len(BAD_IDS) // CHUNK_ROWS, loads
    for i, load in enumerate(loads):
        if i not in with_rows:
            assert not load.get("deferred"), load  # an empty chunk starts no job
            continue
        assert load["deferred"] and load["job_state"] == "JobComplete", load
        log = _task_log(stack, run_id, "accounts.load", i)
        assert "Pausing task as DEFERRED" in log, log[-3000:]
        assert "Trigger fired event" in log and load["job_id"] in log, log[-3000:]
    triggerers = stack.get("/api/v2/jobs", job_type="TriggererJob")["jobs"]
    assert triggerers, "no TriggererJob recorded"
    trigger_files = [f".log.trigger.{job['id']}.log" for job in triggerers]
    assert any(name in _task_log(stack, run_id, "accounts.load", with_rows[0]) for name in trigger_files)

    # And the data arrived: the 8 good rows as Accounts, none of the rejected ones.
    assert sum(load["loaded"] for load in loads) == SOURCE_ROWS - len(BAD_IDS)
    records = emulator.admin("/__emulator/export/Account?include_deleted=false")["records"]
    legacy_ids = {record["Legacy_Id__c"] for record in records}
    assert len(records) == SOURCE_ROWS - len(BAD_IDS)
    assert legacy_ids == {f"C{n:04d}" for n in range(1, SOURCE_ROWS + 1)} - BAD_IDS
