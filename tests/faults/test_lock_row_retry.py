"""UNABLE_TO_LOCK_ROW on a share of rows: only those rows are sent again, nothing is loaded twice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scripts.services import EmulatorProcess
from tests.conftest import ROOT

DAG_ID = "dms_legacy_crm_accounts"

pytestmark = pytest.mark.usefixtures("airflow_db")


def _run(conf: dict[str, Any]) -> Any:
    from dms.dag_factory import build_dags

    return build_dags(ROOT / "include" / "migrations")[DAG_ID].test(run_conf=conf)


def _counts(env: dict[str, str], run_id: str) -> dict[str, Any]:
    safe = run_id.replace(":", "_").replace("+", "_")
    return json.loads((Path(env["DMS_RESULTS_DIR"]) / DAG_ID / safe / "summary.json").read_text())["objects"][
        "accounts"
    ]


def _chunks(run_id: str) -> list[dict[str, Any]]:
    from dms.audit import Audit
    from dms.hooks.cloudant import DmsCloudantHook

    return Audit(DmsCloudantHook().get_conn()).get_chunks(DAG_ID, run_id, "accounts")


def test_locked_rows_are_retried_alone_and_no_record_is_loaded_twice(
    emulator: EmulatorProcess, dms_connections: dict[str, str]
) -> None:
    # Seeded: the same rows lock on every run of this test, so what it asserts never depends on luck.
    emulator.admin("/__emulator/faults", "PUT", {"lock_row_rate": 0.5, "seed": 20261127})
    run = _run({"max_error_rate": 1.0})
    assert run.state == "success"
    counts = _counts(dms_connections, run.run_id)
    assert counts["source"] == counts["loaded"] + counts["rejected"] + counts["failed"] == 12
    accounts = emulator.admin("/__emulator/export/Account")["records"]
    keys = [a["Legacy_Id__c"] for a in accounts]
    # Every record once: the retries re-sent only the locked rows, never the loaded ones.
    assert len(keys) == len(set(keys)) == counts["loaded"]
    chunks = [c for c in _chunks(run.run_id) if c["ready"]]
    # Some rows locked and were sent again, and the retries got rows through that the first try did not.
    assert any(c["lock_retries"] >= 1 for c in chunks)
    assert counts["loaded"] > sum(c["ready"] for c in chunks) // 2


def test_rows_still_locked_after_every_retry_fail_with_salesforces_error(
    emulator: EmulatorProcess, dms_connections: dict[str, str]
) -> None:
    emulator.admin("/__emulator/faults", "PUT", {"lock_row_rate": 1.0})
    run = _run({"max_error_rate": 1.0})
    assert run.state == "success"
    counts = _counts(dms_connections, run.run_id)
    assert (counts["loaded"], counts["failed"], counts["rejected"]) == (0, 8, 4)
    chunks = [c for c in _chunks(run.run_id) if c["ready"]]
    assert chunks and all(
        c["lock_retries"] == 3 and c["error_codes"] == {"UNABLE_TO_LOCK_ROW": c["ready"]} for c in chunks
    )
    assert emulator.admin("/__emulator/export/Account")["records"] == []
