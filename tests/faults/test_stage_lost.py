"""Redis restarted without its data: the run fails clearly, and a re-run loads every row once.

Before the first load, nothing was loaded and a new run is the remedy. After some chunks of an
insert were loaded, the re-run of the same run takes those chunks' results from their audit
records (the audit store mirrors the load ledger) instead of inserting them again.

The stage lives in a private redis-server with no persistence, started for this test: the
shared Redis of the other test sessions is never restarted or flushed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.services import EmulatorProcess, RedisServer, start_redis
from tests.conftest import ROOT
from tests.faults.checks import assert_each_key_once, assert_reconciled, spec_copy, task_errors

DAG_ID = "dms_legacy_crm_accounts"
INSERT_SPEC = "fault_stage_lost_insert"
INSERT_DAG_ID = f"dms_{INSERT_SPEC}"
# Four chunks of three source rows: two load before Redis loses its data, two after.
INSERT_CHUNK_ROWS = 3
LOADS_BEFORE_THE_LOSS = 2

pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.fixture
def private_redis(tmp_path: Path, dms_connections: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """A redis-server of this test only, holding the stage (the `dms_staging` connection points at it)."""
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = start_redis(workdir)
    monkeypatch.setenv(
        "AIRFLOW_CONN_DMS_STAGING",
        json.dumps({"conn_type": "redis", "host": server.host, "port": server.port, "extra": {"db": 1}}),
    )
    yield server
    server.stop()


def _dag() -> Any:
    from dms.dag_factory import build_dags

    return build_dags(ROOT / "include" / "migrations")[DAG_ID]


def test_stage_lost_before_the_load_fails_the_run_and_loads_nothing(
    emulator: EmulatorProcess, private_redis: RedisServer, capfd: pytest.CaptureFixture[str]
) -> None:
    import redis

    stage = redis.Redis(host=private_redis.host, port=private_redis.port, db=1)
    restarts: list[int] = []

    def lose_the_stage(context: Any) -> None:
        # Right before the first load runs, every transform having staged its chunk: the moment
        # the issue names. Later loads find the restarted, empty Redis as it is.
        if not restarts:
            assert stage.keys("dms:stage:*:ready:*"), "the transforms staged nothing to lose"
            private_redis.restart()
            restarts.append(context["ti"].map_index)

    dag = _dag()
    dag.get_task("accounts.load").on_execute_callback = [lose_the_stage]
    run = dag.test()

    assert restarts, "the fault was never injected"
    assert run.state == "failed"
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    loads = {index: state for (task, index), state in states.items() if task == "accounts.load"}
    assert loads and set(loads.values()) == {"failed"}, states
    assert all(state == "success" for (task, _), state in states.items() if task == "accounts.transform")
    # Nothing partial: not one row reached Salesforce.
    assert emulator.admin("/__emulator/export/Account")["records"] == []
    message = task_errors(capfd)
    assert f"run {run.run_id} of {DAG_ID}: the staged 'ready' table of chunk {restarts[0]} of accounts" in message
    assert "clear this run's task accounts.extract together with its downstream tasks" in message

    # The remedy the message gives: a new run stages the source again and loads every row once.
    fresh = _dag().test()
    assert fresh.state == "success"
    counts = assert_reconciled(DAG_ID, fresh.run_id, 12)
    assert (counts["loaded"], counts["rejected"], counts["failed"]) == (8, 4, 0)
    assert_each_key_once(emulator, counts["loaded"])


def _insert_spec(directory: Path, **settings: Any) -> Path:
    """The sample spec as a plain insert, in chunks of three rows: a second send would create its records again.

    The customer number goes into AccountNumber, which the org does not keep unique (Legacy_Id__c
    is unique there and would refuse a second insert), and there is no external id.
    """
    spec_dir = spec_copy(directory, INSERT_SPEC, retries=0, **settings)
    path = spec_dir / f"{INSERT_SPEC}.yaml"
    text = path.read_text(encoding="utf-8")
    for old, new in (
        ("operation: upsert", "operation: insert"),
        ("    external_id: Legacy_Id__c\n", ""),
        ("Legacy_Id__c: {source: 客户编号}", "AccountNumber: {source: 客户编号}"),
        ("chunk_rows: 5", f"chunk_rows: {INSERT_CHUNK_ROWS}"),
    ):
        assert text.count(old) == 1, f"the sample spec changed: no single {old!r}"
        text = text.replace(old, new)
    path.write_text(text, encoding="utf-8")
    return spec_dir


def _accounts_once(emulator: EmulatorProcess, loaded: int) -> dict[str, dict[str, Any]]:
    """The org's Accounts by customer number, each number once: nothing was inserted twice."""
    records = emulator.admin("/__emulator/export/Account")["records"]
    numbers = [r["AccountNumber"] for r in records]
    assert len(numbers) == len(set(numbers)) == loaded, sorted(numbers)
    return {r["AccountNumber"]: r for r in records}


def _chunk_records(run_id: str) -> dict[int, dict[str, Any]]:
    from dms.audit import Audit
    from dms.hooks.cloudant import DmsCloudantHook

    return {c["chunk"]: c for c in Audit(DmsCloudantHook().get_conn()).get_chunks(INSERT_DAG_ID, run_id, "accounts")}


@pytest.mark.parametrize("bulk_threshold", [0, 10_000], ids=["bulk2", "collections"])
def test_insert_rerun_after_the_stage_was_lost_mid_load_sends_no_loaded_chunk_again(
    tmp_path: Path,
    emulator: EmulatorProcess,
    private_redis: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    bulk_threshold: int,
) -> None:
    import pendulum

    from dms.dag_factory import build_dags

    spec_dir = _insert_spec(tmp_path / "specs", bulk_threshold=bulk_threshold)
    monkeypatch.setenv("DMS_SPEC_PATH", str(spec_dir))
    # A run id of its own per case: the session's audit store keeps every case's records.
    when = pendulum.datetime(2026, 3, 3 if bulk_threshold else 4, tz="UTC")
    started: list[int] = []

    def lose_the_stage(context: Any) -> None:
        # Counted by chunk, not by call: a deferred load's callback may run again when it resumes.
        index = context["ti"].map_index
        if index in started:
            return
        started.append(index)
        if len(started) == LOADS_BEFORE_THE_LOSS + 1:
            private_redis.restart()

    dag = build_dags(spec_dir)[INSERT_DAG_ID]
    dag.get_task("accounts.load").on_execute_callback = [lose_the_stage]
    run = dag.test(logical_date=when, run_after=when)

    assert len(started) > LOADS_BEFORE_THE_LOSS, "the fault was never injected"
    assert run.state == "failed"
    loads = {ti.map_index: ti.state for ti in run.get_task_instances() if ti.task_id == "accounts.load"}
    before_loss = started[:LOADS_BEFORE_THE_LOSS]
    assert len(loads) == 4 and {loads[i] for i in before_loss} == {"success"}, loads
    assert {s for i, s in loads.items() if i not in before_loss} == {"failed"}, loads
    message = task_errors(capfd)
    lost = started[LOADS_BEFORE_THE_LOSS]
    assert f"run {run.run_id} of {INSERT_DAG_ID}: the staged 'ready' table of chunk {lost} of accounts" in message
    first_records = _chunk_records(run.run_id)
    loaded_before = _accounts_once(emulator, sum(first_records[i]["loaded"] for i in before_loss))
    assert loaded_before, first_records
    jobs_before = {j["id"] for j in emulator.admin("/__emulator/bulk2/ingest")["jobs"]}

    # The same run again (what clearing the extract and its downstream tasks does).
    again = build_dags(spec_dir)[INSERT_DAG_ID].test(logical_date=when, run_after=when)

    assert again.run_id == run.run_id and again.state == "success"
    counts = assert_reconciled(INSERT_DAG_ID, again.run_id, 12)
    assert (counts["loaded"], counts["rejected"], counts["failed"]) == (8, 4, 0)
    records = _accounts_once(emulator, counts["loaded"])
    # The chunks loaded before the loss were not sent again: their records are the same records, untouched.
    for key, record in loaded_before.items():
        assert (records[key]["Id"], records[key]["SystemModstamp"]) == (record["Id"], record["SystemModstamp"])
    chunks = _chunk_records(again.run_id)
    # dag.test() picks the order of the loads; one chunk has every row rejected and loads nothing.
    sent_before = [i for i in before_loss if first_records[i]["ready"] - first_records[i]["load_rejected"] > 0]
    assert sent_before, first_records
    for index in sent_before:
        assert chunks[index].get("from_audit_record") is True, chunks[index]
        assert (chunks[index]["loaded"], chunks[index]["job_id"]) == (
            first_records[index]["loaded"],
            first_records[index]["job_id"],
        )
    jobs = emulator.admin("/__emulator/bulk2/ingest")["jobs"]
    if bulk_threshold:
        assert jobs == [] and {c["api"] for c in chunks.values() if c["loaded"]} == {"collections"}
    else:
        # One job, uploaded once, per chunk with rows: the earlier chunks kept the jobs they had.
        with_rows = [c for c in chunks.values() if c["ready"] - c["load_rejected"] > 0]
        assert sorted(j["id"] for j in jobs) == sorted(c["job_id"] for c in with_rows)
        assert all(j["uploads"] == 1 for j in jobs), jobs
        assert jobs_before == {first_records[i]["job_id"] for i in sent_before}


def test_full_refresh_of_a_completed_insert_run_loads_every_row_again(
    tmp_path: Path, emulator: EmulatorProcess, dms_connections: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit store's ledger mirror and final records do not hold back a full refresh: it inserts again."""
    import pendulum

    from dms.dag_factory import build_dags

    spec_dir = _insert_spec(tmp_path / "specs", bulk_threshold=0)
    monkeypatch.setenv("DMS_SPEC_PATH", str(spec_dir))
    when = pendulum.datetime(2026, 3, 5, tz="UTC")
    first = build_dags(spec_dir)[INSERT_DAG_ID].test(logical_date=when, run_after=when)
    assert first.state == "success"
    ids = {r["Id"] for r in _accounts_once(emulator, 8).values()}

    again = build_dags(spec_dir)[INSERT_DAG_ID].test(logical_date=when, run_after=when, run_conf={"full_refresh": True})

    assert again.run_id == first.run_id and again.state == "success"
    counts = assert_reconciled(INSERT_DAG_ID, again.run_id, 12)
    assert (counts["loaded"], counts["rejected"], counts["failed"]) == (8, 4, 0)
    records = emulator.admin("/__emulator/export/Account")["records"]
    # An insert loaded twice holds every key twice: the second time as new records.
    keys = [r["AccountNumber"] for r in records]
    assert len(keys) == 16 and all(keys.count(k) == 2 for k in keys), sorted(keys)
    assert ids < {r["Id"] for r in records}
    assert not any(c.get("from_audit_record") for c in _chunk_records(again.run_id).values())
