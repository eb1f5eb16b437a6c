"""Rollback of a run: delete the records it created, restore the fields it changed.

Everything comes from the run's audit records: each chunk's `successes.csv.gz` (which rows
created which records) and `before.csv.gz` (the values the load overwrote, captured before
it wrote them). Objects are undone children first, so no parent is deleted under a child.
Fields marked `sensitive` are not in the audit and cannot be restored; the rollback says so.
"""

from __future__ import annotations

import time
from typing import Any

from airflow.sdk import Context

from dms.errors import FatalError, ReconcileError
from dms.operators.load import LoadOperator, run_bulk_job
from dms.staging import ChunkKey


class RollbackOperator(LoadOperator):
    """Undo one object of the run named by the `run_id` Param."""

    kind = "rollback_"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(chunk={}, **kwargs)

    def execute(self, context: Context) -> dict[str, Any]:
        import pandas as pd

        from dms.row_results import BEFORE, read_attachment

        obj = self.obj
        target_dag = self.spec.dag_id
        run_id = str(self.param(context, "run_id", "") or "").strip()
        if not run_id:
            raise FatalError("rollback: give the run_id of the run to undo")
        audit = self.audit()
        run_doc = audit.get_run(target_dag, run_id)
        if run_doc is None:
            raise FatalError(f"rollback: no run {run_id!r} of {target_dag} in the audit store")
        created: list[str] = []
        before: list[dict[str, str]] = []
        for doc in audit.find_chunks(target_dag, run_id, [obj.name]):
            names = doc.get("_attachments") or {}
            if "successes.csv.gz" in names:
                rows = read_attachment(audit.get_attachment(doc["_id"], "successes.csv.gz"))
                created += [r["id"] for r in rows if r["created"] == "True" and r["id"]]
            if BEFORE in names:
                before += read_attachment(audit.get_attachment(doc["_id"], BEFORE))
        dag_id, own_run = self.run_ids(context)
        key = ChunkKey(dag_id, own_run, obj.name, 0)
        stage, sf = self.stage(), self.salesforce()
        out: dict[str, Any] = {"object": obj.name, "rolls_back": run_id, "deleted": 0, "restored": 0, "failed": 0}
        failures: list[dict[str, Any]] = []
        started = time.time()
        if created:
            frame = pd.DataFrame({"__row": range(1, len(created) + 1), "Id": created})
            result = run_bulk_job(self, stage, key, sf, obj.sobject, "delete", None, frame, ["Id"], self.poll_seconds)
            out["deleted"] = len(result.loaded)
            failures += result.failures
        if before:
            fields = [c for c in before[0] if c != "Id"]
            # An empty before-value was null: Bulk API 2.0 writes null only for #N/A (empty = unchanged).
            frame = pd.DataFrame(before).replace("", "#N/A")
            frame.insert(0, "__row", range(1, len(frame) + 1))
            restore_key = ChunkKey(dag_id, own_run, f"{obj.name}~restore", 0)
            result = run_bulk_job(
                self, stage, restore_key, sf, obj.sobject, "update", None, frame, ["Id", *fields], self.poll_seconds
            )
            out["restored"] = len(result.loaded)
            failures += result.failures
        out["failed"] = len(failures)
        out["seconds"] = round(time.time() - started, 3)
        out["not_restored"] = sorted(n for n, f in obj.fields.items() if f.sensitive)
        audit.write_chunk(
            target_dag, run_id, f"{obj.name}.rollback", 0, {**out, "rollback_run": own_run, "errors": failures[:100]}
        )
        self.log.info("rollback of %s in %s: %s", obj.name, run_id, out)
        if failures:
            raise ReconcileError(
                f"rollback of {obj.name}: {len(failures)} records could not be undone, e.g. "
                f"{failures[0]['id']}: {failures[0]['code']} {failures[0]['message']}"
            )
        return out
