"""What every process-fault test ends with, and the spec copies these tests run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from scripts.services import EmulatorProcess
from tests.conftest import ROOT

SAMPLE_SPEC = ROOT / "include" / "migrations" / "legacy_crm_accounts.yaml"


def spec_copy(directory: Path, name: str, **settings: Any) -> Path:
    """The sample accounts spec under another name, with top-level settings added; returns its directory.

    A spec named like the sample would be refused as a second DAG with the same id, hence the name.
    The directory goes into DMS_SPEC_PATH, so that dag.test() finds the DAG in the bundle it syncs.
    """
    directory.mkdir(parents=True, exist_ok=True)
    text = SAMPLE_SPEC.read_text(encoding="utf-8")
    old = "name: legacy_crm_accounts\n"
    assert old in text, f"{SAMPLE_SPEC} changed: no {old!r} to rename"
    extra = "".join(f"{key}: {json.dumps(value)}\n" for key, value in settings.items())
    (directory / f"{name}.yaml").write_text(text.replace(old, f"name: {name}\n{extra}"), encoding="utf-8")
    return directory


def summary(dag_id: str, run_id: str) -> dict[str, Any]:
    """The run's summary.json, as reconcile wrote it."""
    safe = run_id.replace(":", "_").replace("+", "_")
    return json.loads((Path(os.environ["DMS_RESULTS_DIR"]) / dag_id / safe / "summary.json").read_text())


def assert_reconciled(dag_id: str, run_id: str, source_rows: int) -> dict[str, Any]:
    """Every source row of the run ended loaded, rejected or failed; the object's counts."""
    counts = summary(dag_id, run_id)["objects"]["accounts"]
    assert counts["source"] == source_rows
    assert counts["source"] == counts["loaded"] + counts["rejected"] + counts["failed"], counts
    return counts


def assert_each_key_once(emulator: EmulatorProcess, loaded: int) -> list[dict[str, Any]]:
    """Salesforce holds one record per loaded external id: nothing was loaded twice."""
    records = emulator.admin("/__emulator/export/Account")["records"]
    keys = [r["Legacy_Id__c"] for r in records]
    assert len(keys) == len(set(keys)) == loaded, sorted(keys)
    return records


def task_errors(captured: pytest.CaptureFixture[str]) -> str:
    """What the tasks of a dag.test() run printed so far: they run in this process and log to its stdout."""
    out, err = captured.readouterr()
    return out + err
