"""A load killed with SIGKILL during its Bulk job: the retry resumes the job from the ledger, uploading nothing again.

The run goes in a child process (`dag.test()`, which runs each task, and the trigger a deferred
task waits on, in that process). The emulator holds Bulk jobs queued (hold_bulk_jobs), so the
child is killed at a known point: the chunk is uploaded, the job closed and recorded in the
ledger, and no result has been read. The retry is the same run again (same run id).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scripts.processes import descendants
from scripts.services import EmulatorProcess, RedisServer, die_with_parent
from tests.conftest import ROOT
from tests.faults.checks import assert_each_key_once, assert_reconciled, spec_copy
from tests.integration.conftest import TEST_STAGING_DB

SPEC_NAME = "fault_killed_load"
DAG_ID = f"dms_{SPEC_NAME}"
LOGICAL_DATE = "2026-03-01T00:00:00+00:00"
# Bounds a hang of the child; nothing is asserted about how long anything takes.
WAIT_SECONDS = 300

pytestmark = pytest.mark.usefixtures("airflow_db")

# What the child runs: the DAG of the spec copy, as dag.test() in the test process would.
_RUN_DAG = """
import sys
from pathlib import Path

import pendulum

from dms.dag_factory import build_dags

spec_dir, dag_id, when = sys.argv[1:4]
logical_date = pendulum.parse(when)
build_dags(Path(spec_dir))[dag_id].test(logical_date=logical_date, run_after=logical_date)
"""


def _wait_for(what: str, found: Callable[[], Any], child: subprocess.Popen[bytes], log: Path) -> Any:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        if child.poll() is not None:
            raise AssertionError(f"the run ended ({child.returncode}) before {what}:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)
    raise AssertionError(f"no {what} within {WAIT_SECONDS} s:\n{log.read_text()[-4000:]}")


def _ingest_jobs(emulator: EmulatorProcess) -> list[dict[str, Any]]:
    return emulator.admin("/__emulator/bulk2/ingest")["jobs"]


def test_load_killed_after_its_upload_resumes_the_job_and_uploads_nothing_again(
    tmp_path: Path,
    emulator: EmulatorProcess,
    redis_server: RedisServer,
    dms_connections: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    import pendulum
    import redis

    from dms.audit import Audit
    from dms.dag_factory import build_dags
    from dms.hooks.cloudant import DmsCloudantHook

    # Bulk for every chunk, however small; no Airflow retries, as the retry is the re-run below.
    spec_dir = spec_copy(tmp_path / "specs", SPEC_NAME, bulk_threshold=0, retries=0)
    monkeypatch.setenv("DMS_SPEC_PATH", str(spec_dir))
    stage = redis.Redis(host=redis_server.host, port=redis_server.port, db=TEST_STAGING_DB, decode_responses=True)
    emulator.admin("/__emulator/faults", "PUT", {"hold_bulk_jobs": True})
    # Whatever happens below, the session's emulator must not keep holding the next tests' jobs.
    request.addfinalizer(lambda: emulator.admin("/__emulator/faults", "PUT", {"hold_bulk_jobs": False}))

    log = tmp_path / "killed-run.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")])}
    with open(log, "wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", _RUN_DAG, str(spec_dir), DAG_ID, LOGICAL_DATE],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
    try:

        def closed_job() -> tuple[str, dict[str, str]] | None:
            # The ledger says UploadComplete only after the upload and the close went through.
            for name in stage.scan_iter(f"dms:ledger:{DAG_ID}:*"):
                ledger = stage.hgetall(name)
                if ledger.get("state") == "UploadComplete":
                    return name, ledger
            return None

        ledger_key, ledger = _wait_for("Bulk job closed by a load", closed_job, child, log)
        family = [child.pid, *descendants(child.pid)]
        for pid in family:
            os.kill(pid, signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    job_id = ledger["job_id"]
    chunk = int(ledger_key.rsplit(":", 1)[1])
    # Killed after the upload and before the results: one job, uploaded once, nothing processed.
    assert [(j["id"], j["state"], j["uploads"]) for j in _ingest_jobs(emulator)] == [(job_id, "UploadComplete", 1)]
    assert emulator.admin("/__emulator/export/Account")["records"] == []

    emulator.admin("/__emulator/faults", "PUT", {"hold_bulk_jobs": False})
    when = pendulum.parse(LOGICAL_DATE)
    run = build_dags(spec_dir)[DAG_ID].test(logical_date=when, run_after=when)

    assert run.state == "success"
    counts = assert_reconciled(DAG_ID, run.run_id, 12)
    assert (counts["loaded"], counts["rejected"], counts["failed"]) == (8, 4, 0)
    assert_each_key_once(emulator, counts["loaded"])
    chunks = Audit(DmsCloudantHook().get_conn()).get_chunks(DAG_ID, run.run_id, "accounts")
    jobs = {j["id"]: j for j in _ingest_jobs(emulator)}
    # The killed chunk's retry took its job from the ledger: the same job, still uploaded once.
    assert next(c for c in chunks if c["chunk"] == chunk)["job_id"] == job_id
    assert (jobs[job_id]["state"], jobs[job_id]["uploads"]) == ("JobComplete", 1)
    # And no chunk got a second job or a second upload.
    with_rows = [c for c in chunks if c["ready"] - c["load_rejected"] > 0]
    assert sorted(jobs) == sorted(c["job_id"] for c in with_rows)
    assert all(j["uploads"] == 1 for j in jobs.values()), jobs
