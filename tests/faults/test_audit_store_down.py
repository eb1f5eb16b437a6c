"""The audit store (CouchDB-compatible) down during a run: its writes are retried and nothing is lost.

Each test runs its own pouchdb-server on disk, stopped right before the first load and started
again on the same port and data directory: the session's audit server is never touched.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scripts.audit_server import AuditServer, start_audit_server
from scripts.services import EmulatorProcess
from tests.faults.checks import assert_each_key_once, assert_reconciled, spec_copy, task_errors

SPEC_NAME = "fault_audit_down"
DAG_ID = f"dms_{SPEC_NAME}"
SOURCE_ROWS = 12

pytestmark = pytest.mark.usefixtures("airflow_db")


@dataclass
class Store:
    """The test's audit server, which the test stops and starts again on the same port and data."""

    server: AuditServer

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server = start_audit_server(port=self.server.port, data_dir=self.server.data_dir)


@pytest.fixture
def store(tmp_path: Path, dms_connections: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """A private audit store behind `cloudant_default`, and the spec copy its DAG runs (no Airflow retries:
    dag.test() would wait out the 30 s retry delay; the tests re-run the same run id instead)."""
    holder = Store(start_audit_server(data_dir=tmp_path / "audit"))
    _connect(holder, monkeypatch, retry_seconds=120)
    monkeypatch.setenv("DMS_SPEC_PATH", str(spec_copy(tmp_path / "specs", SPEC_NAME, retries=0)))
    yield holder
    holder.stop()


def _connect(store: Store, monkeypatch: pytest.MonkeyPatch, retry_seconds: float) -> None:
    """Point `cloudant_default` at the store, with this retry window for the tasks' audit writes."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLOUDANT_DEFAULT",
        json.dumps({"conn_type": "cloudant", "host": store.server.url, "extra": {"retry_seconds": retry_seconds}}),
    )


def _dag() -> Any:
    from dms.dag_factory import build_dags

    return build_dags(Path(os.environ["DMS_SPEC_PATH"]))[DAG_ID]


def _stop_before_the_first_load(dag: Any, store: Store) -> list[int]:
    """Stop the store right before the first load task runs; the chunk it runs for is recorded."""
    stopped: list[int] = []

    def stop(context: Any) -> None:
        if not stopped:
            store.stop()
            stopped.append(context["ti"].map_index)

    dag.get_task("accounts.load").on_execute_callback = [stop]
    return stopped


class _FailedAttempts(logging.Handler):
    """Counts the audit module's warnings about failed attempts (the tasks run in this process)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        # Called once, at the failed attempt numbered `act_at`.
        self.action: Callable[[], None] | None = None
        self.act_at = 1
        self.error: BaseException | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if not record.getMessage().startswith("audit store: could not"):
            return
        self.count += 1
        if self.count == self.act_at and self.action is not None:
            try:
                self.action()
            except BaseException as exc:  # noqa: BLE001 - logging would swallow it; the test reports it
                self.error = exc


@pytest.fixture
def failed_attempts() -> Iterator[_FailedAttempts]:
    handler = _FailedAttempts()
    logger = logging.getLogger("dms.audit")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def _assert_audit_complete(run_id: str, counts: dict[str, Any]) -> None:
    """The run document and one document per chunk, whose attachments hold every row's result."""
    from dms.audit import Audit
    from dms.hooks.cloudant import DmsCloudantHook
    from dms.row_results import read_attachment

    audit = Audit(DmsCloudantHook().get_conn())
    run_doc = audit.get_run(DAG_ID, run_id)
    assert run_doc is not None and run_doc["status"] == "success"
    chunks = audit.get_chunks(DAG_ID, run_id, "accounts")
    assert [c["chunk"] for c in chunks] == list(range(counts["chunks"]))
    rows = {"successes.csv.gz": 0, "rejects.csv.gz": 0, "failures.csv.gz": 0}
    for doc in chunks:
        for name in doc.get("_attachments") or {}:
            # before.csv.gz (values an update overwrote) is empty here: every record is new.
            rows[name] = rows.get(name, 0) + len(read_attachment(audit.get_attachment(doc["_id"], name)))
    assert rows == {
        "successes.csv.gz": counts["loaded"],
        "rejects.csv.gz": counts["rejected"],
        "failures.csv.gz": counts["failed"],
        "before.csv.gz": 0,
    }


def test_audit_writes_wait_for_a_store_that_comes_back(
    emulator: EmulatorProcess,
    store: Store,
    failed_attempts: _FailedAttempts,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _connect(store, monkeypatch, retry_seconds=30)
    dag = _dag()
    stopped = _stop_before_the_first_load(dag, store)
    # Not a timer: the store comes back once writes have really failed against it, while the
    # task retries; after the fifth failure, more than a fixed four attempts would have allowed.
    # Started from the thread that logs the failure, not from a helper thread: the server is
    # started with PR_SET_PDEATHSIG, which would stop it when that thread ended.
    failed_attempts.action, failed_attempts.act_at = store.start, 5
    run = dag.test()

    assert failed_attempts.error is None, failed_attempts.error
    assert stopped and failed_attempts.count >= 5, "the store was never down during a write"
    assert store.server.is_running()
    assert run.state == "success"
    counts = assert_reconciled(DAG_ID, run.run_id, SOURCE_ROWS)
    assert (counts["loaded"], counts["rejected"], counts["failed"]) == (8, 4, 0)
    assert_each_key_once(emulator, counts["loaded"])
    _assert_audit_complete(run.run_id, counts)


def test_store_down_past_the_retry_window_fails_the_load_and_a_rerun_writes_the_records(
    emulator: EmulatorProcess,
    store: Store,
    failed_attempts: _FailedAttempts,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    import pendulum

    _connect(store, monkeypatch, retry_seconds=1)
    logical_date = pendulum.datetime(2026, 3, 2, tz="UTC")
    dag = _dag()
    stopped = _stop_before_the_first_load(dag, store)
    run = dag.test(logical_date=logical_date, run_after=logical_date)

    assert stopped and failed_attempts.count >= 1
    assert run.state == "failed"
    loads = {ti.map_index: ti.state for ti in run.get_task_instances() if ti.task_id == "accounts.load"}
    assert loads and set(loads.values()) == {"failed"}, loads
    # The loads did their Salesforce part; only their audit records are missing.
    before = assert_each_key_once(emulator, 8)
    message = task_errors(capfd)
    assert f"chunk {stopped[0]} of accounts in run {run.run_id}: the audit record could not be written" in message
    assert f"audit store {store.server.url} unavailable" in message
    assert "a retry of this task writes the record and sends nothing to Salesforce again" in message

    # The store is back: the same run again (what Airflow's retry of the loads does) writes every record.
    store.start()
    _connect(store, monkeypatch, retry_seconds=120)
    again = _dag().test(logical_date=logical_date, run_after=logical_date)
    assert again.run_id == run.run_id and again.state == "success"
    counts = assert_reconciled(DAG_ID, again.run_id, SOURCE_ROWS)
    assert (counts["loaded"], counts["rejected"], counts["failed"]) == (8, 4, 0)
    # Nothing was sent to Salesforce again: every record is exactly as the first try left it.
    assert assert_each_key_once(emulator, counts["loaded"]) == before
    _assert_audit_complete(again.run_id, counts)


@pytest.mark.parametrize("value", ["soon", -1, None])
def test_a_retry_window_that_is_not_a_number_of_seconds_is_refused_by_name(
    value: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dms.errors import FatalError
    from dms.hooks.cloudant import DmsCloudantHook

    monkeypatch.setenv(
        "AIRFLOW_CONN_AUDIT_BAD_WINDOW",
        json.dumps({"conn_type": "cloudant", "host": "http://127.0.0.1:9", "extra": {"retry_seconds": value}}),
    )
    with pytest.raises(FatalError, match="'audit_bad_window': extra 'retry_seconds' must be a number of seconds"):
        _ = DmsCloudantHook("audit_bad_window").retry_seconds
