"""`airflow backfill create` on the CeleryExecutor: one run per interval of the nightly SQL sample,
each loading only the invoices its interval changed, and a re-run of the intervals duplicating nothing."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from scripts.sample_db import DATABASE, load_sample_db
from scripts.services import EmulatorProcess, PostgresServer
from tests.celery.conftest import CeleryAirflow

DAG_ID = "dms_legacy_erp_invoices"
# Three nights of the sample (its invoices change every 6 hours from 1 January 2026, +08:00).
FROM_DATE, TO_DATE = "2026-01-03", "2026-01-05"
WAIT_SECONDS = 240


def _updated_at(postgres_server: PostgresServer) -> dict[str, dt.datetime]:
    import psycopg

    with psycopg.connect(
        host=postgres_server.host, port=postgres_server.port, user="postgres", dbname=DATABASE
    ) as conn:
        return dict(conn.execute("SELECT invoice_no, updated_at FROM erp.invoices").fetchall())


def _seed_accounts(emulator: EmulatorProcess) -> None:
    """The customers the invoices point at, as a CRM migration would have loaded them."""
    from simple_salesforce import Salesforce

    token = emulator.token()
    sf = Salesforce(instance_url=token["instance_url"], session_id=token["access_token"], version="62.0")
    for code in ("C0001", "C0002", "C0003", "C0004", "C0005", "C0006", "C0011", "C0012"):
        sf.Account.create({"Legacy_Id__c": code, "Name": f"客户 {code}"})


def _backfill(stack: CeleryAirflow, *extra: str) -> None:
    airflow = str(Path(sys.executable).with_name("airflow"))
    args = [airflow, "backfill", "create", "--dag-id", DAG_ID, "--from-date", FROM_DATE, "--to-date", TO_DATE]
    done = subprocess.run([*args, *extra], env=stack.env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


def _backfill_runs(stack: CeleryAirflow, expected: int) -> list[dict[str, Any]]:
    """The DAG's backfill runs once `expected` of them exist and none is queued or running."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        stack.check_running()
        runs = stack.get(f"/api/v2/dags/{DAG_ID}/dagRuns", run_type="backfill", limit=100)["dag_runs"]
        if len(runs) >= expected and all(r["state"] not in ("queued", "running") for r in runs):
            return runs
        assert time.monotonic() < deadline, f"backfill runs not done: {[(r['dag_run_id'], r['state']) for r in runs]}"
        time.sleep(3)


def _wait_backfills_completed(stack: CeleryAirflow) -> None:
    """The scheduler marks a backfill complete a loop after its last run; only then may another start."""
    deadline = time.monotonic() + 60
    while True:
        backfills = stack.get("/api/v2/backfills", dag_id=DAG_ID)["backfills"]
        if backfills and all(b.get("completed_at") for b in backfills):
            return
        assert time.monotonic() < deadline, f"backfills not completed: {backfills}"
        time.sleep(2)


def _summary(results_dir: str, run_id: str) -> dict[str, Any]:
    safe = run_id.replace(":", "_").replace("+", "_")
    return json.loads((Path(results_dir) / DAG_ID / safe / "summary.json").read_text())


def test_backfill_makes_one_run_per_interval_each_loading_only_its_rows(
    celery_airflow: CeleryAirflow,
    emulator: EmulatorProcess,
    postgres_server: PostgresServer,
    dms_connections: dict[str, str],
) -> None:
    load_sample_db(postgres_server.host, postgres_server.port)
    _seed_accounts(emulator)
    changed = _updated_at(postgres_server)
    # Backfill runs, like scheduled ones, only run while the DAG is not paused.
    response = celery_airflow.request("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})
    assert response.status_code == 200, response.text[:300]
    _backfill(celery_airflow)
    runs = _backfill_runs(celery_airflow, expected=1)
    assert len(runs) >= 2, [r["dag_run_id"] for r in runs]
    loaded_by_run: dict[str, set[str]] = {}
    for run in runs:
        assert run["state"] == "success", run
        start, end = (dt.datetime.fromisoformat(run[k]) for k in ("data_interval_start", "data_interval_end"))
        assert end - start == dt.timedelta(days=1)  # nightly intervals, not the empty ones of a plain cron
        mine = {invoice for invoice, at in changed.items() if start <= at < end}
        counts = _summary(dms_connections["DMS_RESULTS_DIR"], run["dag_run_id"])["objects"]["invoices"]
        # Each run read exactly the rows its interval changed, and every one is accounted for.
        assert counts["source"] == len(mine) > 0
        assert counts["source"] == counts["loaded"] + counts["rejected"] + counts["failed"]
        loaded_by_run[run["dag_run_id"]] = mine
    invoices = {r["Legacy_Id__c"]: r["Id"] for r in emulator.admin("/__emulator/export/Invoice__c")["records"]}
    everything = set().union(*loaded_by_run.values())
    assert set(invoices) <= everything and len(invoices) >= len(everything) - 3  # the sample's 3 bad rows

    # Re-running the same intervals updates the same records: nothing is duplicated.
    _wait_backfills_completed(celery_airflow)
    _backfill(celery_airflow, "--reprocess-behavior", "completed")
    _wait_backfills_completed(celery_airflow)
    rerun = _backfill_runs(celery_airflow, expected=len(runs))
    assert all(r["state"] == "success" for r in rerun)
    # The same runs ran again (later end dates), not new ones.
    first_end = {r["dag_run_id"]: r["end_date"] for r in runs}
    assert {r["dag_run_id"] for r in rerun} == set(first_end)
    assert all(r["end_date"] > first_end[r["dag_run_id"]] for r in rerun)
    again = {r["Legacy_Id__c"]: r["Id"] for r in emulator.admin("/__emulator/export/Invoice__c")["records"]}
    assert again == invoices
