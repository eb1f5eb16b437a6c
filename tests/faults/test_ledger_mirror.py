"""The load ledger's mirror in the audit store: what a load finds when Redis lost the ledger mid-chunk.

Redis losing its data is what `flushdb()` on the test's own staging database leaves; the chunk
is staged again, as the re-run's transform would. The chunk's load then runs as a new try
(a new operator), against the real emulator and the session's audit store.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pytest

from dms.staging import ChunkKey
from scripts.services import EmulatorProcess

DAG_ID = "dms_mirror_contacts"
SPEC = """
name: mirror_contacts
bulk_threshold: {threshold}
objects:
  - name: contacts
    sobject: Contact
    operation: insert
    source: {{path: contacts.csv}}
    fields:
      LastName: {{source: last}}
      Email: {{source: email}}
"""
READY = {"__row": [2, 3, 4], "LastName": ["Li", "Wang", "Zhang"], "Email": ["a@x.cn", "b@x.cn", "c@x.cn"]}


def _operator(tmp_path: Path, threshold: int, *, deferrable: bool = False) -> Any:
    from dms.operators.load import LoadOperator

    spec_file = tmp_path / f"mirror_contacts_{threshold}.yaml"
    spec_file.write_text(SPEC.format(threshold=threshold))
    return LoadOperator(
        task_id="load",
        spec_file=str(spec_file),
        object_name="contacts",
        chunk={"object": "contacts", "chunk": 0, "rows": 3, "ready": 3, "rejected": 0},
        poll_seconds=0.1,
        deferrable=deferrable,
    )


def _staged(operator: Any, run_id: str, ready: dict[str, list[Any]] = READY) -> ChunkKey:
    key = ChunkKey(DAG_ID, run_id, "contacts", 0)
    operator.stage().put_table(key, "ready", pa.table(ready))
    return key


def _lose_the_stage(operator: Any) -> None:
    """What a Redis restarted without persistence holds: nothing (this session's staging db only)."""
    operator.stage().client.flushdb()


def _context(run_id: str) -> dict[str, Any]:
    return {"ti": SimpleNamespace(dag_id=DAG_ID, run_id=run_id), "params": {}}


def _audit() -> Any:
    from dms.audit import Audit
    from dms.hooks.cloudant import DmsCloudantHook

    return Audit(DmsCloudantHook().get_conn())


def _contacts(emulator: EmulatorProcess) -> list[str]:
    return sorted(c["LastName"] for c in emulator.admin("/__emulator/export/Contact")["records"])


def test_bulk_job_in_flight_when_redis_lost_the_ledger_is_resumed_from_the_audit_store(
    tmp_path: Path, dms_connections: dict[str, str], emulator: EmulatorProcess
) -> None:
    from airflow.sdk.exceptions import TaskDeferred

    run_id = "mirror-bulk-in-flight"
    first = _operator(tmp_path, 0, deferrable=True)
    _staged(first, run_id)
    # The chunk is uploaded and its job closed; the task waits for it in the triggerer.
    with pytest.raises(TaskDeferred) as deferred:
        first.execute(_context(run_id))
    job_id = deferred.value.trigger.job_id
    assert _audit().get_ledger(DAG_ID, run_id, "contacts", 0)["ledgers"] == {"contacts": {"job_id": job_id}}

    _lose_the_stage(first)
    again = _operator(tmp_path, 0)
    _staged(again, run_id)
    out = again.execute(_context(run_id))

    assert (out["job_id"], out["loaded"], out["failed"]) == (job_id, 3, 0)
    jobs = emulator.admin("/__emulator/bulk2/ingest")["jobs"]
    assert [(j["id"], j["state"], j["uploads"]) for j in jobs] == [(job_id, "JobComplete", 1)]
    assert _contacts(emulator) == ["Li", "Wang", "Zhang"]


def test_collections_insert_sent_before_redis_lost_the_ledger_fails_as_unknown_outcome_not_twice(
    tmp_path: Path, dms_connections: dict[str, str], emulator: EmulatorProcess
) -> None:
    run_id = "mirror-collections-in-flight"
    first = _operator(tmp_path, 10_000)
    key = _staged(first, run_id)
    assert first.execute(_context(run_id))["loaded"] == 3
    # What a task that died after its calls and before writing its record leaves: no final record.
    audit = _audit()
    record = audit.get_chunk(DAG_ID, run_id, "contacts", 0)
    audit.client.delete_document(db=audit.database, doc_id=record["_id"], rev=record["_rev"])

    _lose_the_stage(first)
    again = _operator(tmp_path, 10_000)
    _staged(again, run_id)
    out = again.execute(_context(run_id))

    assert (out["loaded"], out["failed"]) == (0, 3)
    failures = again.stage().get_table(key, "failures").to_pylist()
    assert {f["code"] for f in failures} == {"UNKNOWN_OUTCOME"} and len(failures) == 3
    assert _contacts(emulator) == ["Li", "Wang", "Zhang"]


def test_collections_insert_killed_before_its_first_call_is_sent_on_retry_while_redis_kept_the_ledger(
    tmp_path: Path, dms_connections: dict[str, str], emulator: EmulatorProcess
) -> None:
    """The mirror's "sent" counts only when Redis lost the ledger: with Redis intact, its ledger decides."""
    run_id = "mirror-collections-killed-early"
    operator = _operator(tmp_path, 10_000)
    key = _staged(operator, run_id)
    # What a task killed right after noting, in Redis and then in the mirror, that its calls begin leaves.
    operator.stage().record(key, coll_started="1")
    _audit().write_ledger(DAG_ID, run_id, "contacts", 0, "", "contacts", {"collections": "sent"})

    out = _operator(tmp_path, 10_000).execute(_context(run_id))

    assert (out["loaded"], out["failed"]) == (3, 0)
    assert _contacts(emulator) == ["Li", "Wang", "Zhang"]


def test_rows_staged_again_that_differ_from_the_chunk_record_fail_it_and_send_nothing(
    tmp_path: Path, dms_connections: dict[str, str], emulator: EmulatorProcess
) -> None:
    from dms.errors import ReconcileError

    run_id = "mirror-rows-differ"
    first = _operator(tmp_path, 0)
    _staged(first, run_id)
    assert first.execute(_context(run_id))["loaded"] == 3

    _lose_the_stage(first)
    again = _operator(tmp_path, 0)
    # The source changed between the runs: the chunk now holds other source rows.
    _staged(again, run_id, {**READY, "__row": [2, 3, 5]})
    with pytest.raises(ReconcileError, match=r"chunk 0 of contacts .* differ .*source rows \[4, 5\]"):
        again.execute(_context(run_id))

    assert len(emulator.admin("/__emulator/bulk2/ingest")["jobs"]) == 1
    assert _contacts(emulator) == ["Li", "Wang", "Zhang"]


def test_ledger_mirror_merges_entries_and_forgets_those_of_an_older_epoch(dms_connections: dict[str, str]) -> None:
    audit = _audit()
    run_id = "mirror-epochs"
    audit.write_ledger(DAG_ID, run_id, "contacts", 7, "", "contacts", {"job_id": "750A"})
    entries = audit.write_ledger(DAG_ID, run_id, "contacts", 7, "", "contacts~lock1", {"collections": "sent"})
    assert entries == {"contacts": {"job_id": "750A"}, "contacts~lock1": {"collections": "sent"}}
    assert audit.get_epoch(DAG_ID, run_id, "contacts") == ""

    epoch = audit.new_epoch(DAG_ID, run_id, "contacts")
    assert epoch and audit.get_epoch(DAG_ID, run_id, "contacts") == epoch
    entries = audit.write_ledger(DAG_ID, run_id, "contacts", 7, epoch, "contacts", {"job_id": "750B"})
    assert entries == {"contacts": {"job_id": "750B"}}
    assert audit.get_ledger(DAG_ID, run_id, "contacts", 7)["epoch"] == epoch
