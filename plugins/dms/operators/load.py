"""Load (mapped per chunk): Bulk API 2.0 ingest with a ledger, so a retry never loads a chunk twice."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from airflow.sdk import Context

from dms.errors import FatalError, ReconcileError
from dms.operators.base import DmsOperator, tune_memory
from dms.staging import ChunkKey

REJECT_COLUMNS = ["row", "key", "field", "reason", "code"]
# Pause before re-sending rows that failed with UNABLE_TO_LOCK_ROW, times the attempt number.
LOCK_PAUSE_SECONDS = 0.5
# New jobs for the rows a Failed Bulk job left unprocessed, before they count as failed.
UNPROCESSED_RETRIES = 2
# A Failed job's errorMessage that blames the upload itself: sending the same rows again cannot help.
_INPUT_FAULTS = ("InvalidBatch", "ClientInputError")
# Operations that a second send does not simply repeat: an insert creates the records again, a
# delete fails the rows whose records it deleted the first time. A re-run after Redis lost the
# ledger takes their results from the chunk's final audit record instead (`_loaded_before`).
_UNREPEATABLE = frozenset({"insert", "delete", "hardDelete"})

ROW = "__row"


class LoadOperator(DmsOperator):
    """Load one staged chunk through Bulk API 2.0 and keep every row's result.

    Lookup columns (`Account.Legacy_Id__c`) are checked first: a row whose parent is neither
    loaded by this run nor already in Salesforce is rejected as MISSING_PARENT instead of
    failing in Salesforce with a less helpful error. Lookups that `MigrationSpec.load_plan`
    defers (a self-lookup, a cycle) are left out here and set by `RelinkOperator`.
    """

    template_fields = ("chunk",)
    # Staged result kinds, and the key set of this object's loaded external ids.
    kind = ""
    # Per try: the audit store, and the chunks' ledger mirrors read from it (see `_mirror_entries`).
    _ledger_audit: Any = None
    _mirrors: dict[tuple[str, str, str, int], dict[str, dict[str, str]]] | None = None

    def __init__(
        self, *, chunk: dict[str, Any], poll_seconds: float = 1.0, deferrable: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.chunk = chunk
        self.poll_seconds = poll_seconds
        # Bulk jobs are waited for in the triggerer (dms.triggers.bulk2), not in a worker slot.
        self.deferrable = deferrable

    def _prepared(self, context: Context) -> tuple[Any, Any, Any, Any, list[str], dict[str, Any]]:
        """The chunk's key, stage, Salesforce session, the rows to load and their columns, the XCom so far.

        Run again when the task resumes from the trigger: the missing-parent and duplicate
        verdict is staged, so the rows are exactly those of the upload.
        """
        obj = self.obj
        key = self.chunk_key(context, int(self.chunk["chunk"]))
        out: dict[str, Any] = {**self.chunk, "loaded": 0, "failed": 0, "created": 0, "load_rejected": 0}
        out["job_id"] = None
        stage = self.stage()
        frame = stage.get_table(key, "ready").to_pandas()
        # A try reads the audit store's mirror afresh, through a client of its own.
        self._mirrors = self._ledger_audit = None
        out["epoch"] = self.load_epoch(stage, key)
        deferred = self.spec.load_plan()[1][obj.name]
        columns = [c for c in frame.columns if c != ROW and c not in deferred]
        sf = self.salesforce()
        frame, rejects = self.check_parents(stage, sf, context, key, frame, [c for c in columns if "." in c])
        out["load_rejected"] = len(rejects)
        return key, stage, sf, frame, columns, out

    def execute(self, context: Context) -> dict[str, Any]:
        tune_memory(pad_heap=False)
        obj = self.obj
        started = time.time()
        key, stage, sf, frame, columns, out = self._prepared(context)
        deferred = self.spec.load_plan()[1][obj.name]
        if self.param(context, "dry_run", False):
            return self._audited(key, self._preview(stage, sf, context, frame, out), [], started, "none")
        if frame.empty:
            return self._audited(key, out, [], started)
        earlier = self._loaded_before(stage, key, frame)
        if earlier is not None:
            out["from_audit_record"] = True
            return self._finish(context, stage, key, frame, columns, earlier, out, started)
        if obj.operation in ("update", "upsert") and self.spec.before_images:
            self.capture_before_images(stage, sf, key, frame, [*columns, *sorted(deferred)])
        if self._small(frame):
            result = self._via_collections(stage, key, sf, frame, columns)
        else:
            job_id = start_bulk_job(self, stage, key, sf, obj.sobject, obj.operation, obj.external_id, frame, columns)
            if self.deferrable:
                from dms.triggers.bulk2 import Bulk2JobTrigger

                self.defer(
                    trigger=Bulk2JobTrigger(job_id, self.spec.connections.salesforce, self.poll_seconds),
                    method_name="execute_complete",
                    kwargs={"started": started},
                )
            result = finish_bulk_job(self, stage, key, sf, job_id, frame, columns, self.poll_seconds)
        return self._finish(context, stage, key, frame, columns, result, out, started)

    def execute_complete(self, context: Context, event: dict[str, Any], started: float | None = None) -> dict:
        """Resume after the trigger saw the Bulk job end: fetch its results."""
        tune_memory(pad_heap=False)
        if event.get("status") != "done":
            raise FatalError(f"Bulk API job {event.get('job_id')}: {event.get('message', 'the trigger failed')}")
        key, stage, sf, frame, columns, out = self._prepared(context)
        result = finish_bulk_job(self, stage, key, sf, event["job_id"], frame, columns, self.poll_seconds)
        result.deferred = True
        return self._finish(context, stage, key, frame, columns, result, out, started or time.time())

    def _small(self, frame: Any) -> bool:
        """Whether the rows go through sObject Collections: a small chunk is done sooner in a few
        REST calls than as a Bulk job (hardDelete exists in Bulk API 2.0 only)."""
        return len(frame) < self.spec.bulk_threshold and self.obj.operation != "hardDelete"

    def _via_collections(self, stage: Any, key: Any, sf: Any, frame: Any, columns: list[str]) -> JobResult:
        describe = stage.get_json(f"{key.dag_id}:{key.run_id}:{self.obj.name}:describe") or {}
        types = {name: info.get("type", "string") for name, info in describe.items()}
        return run_collections(self, stage, key, sf, self.obj.operation, frame, columns, types)

    def _finish(
        self,
        context: Context,
        stage: Any,
        key: Any,
        frame: Any,
        columns: list[str],
        result: JobResult,
        out: dict[str, Any],
        started: float,
    ) -> dict[str, Any]:
        result = self._retry_unprocessed_rows(stage, key, frame, columns, result)
        result = self._retry_locked_rows(stage, key, frame, columns, result)
        self._created_by_this_run(stage, key, result)
        self.stage_results(stage, key, frame, result)
        self.register_keys(stage, context, frame, result.loaded)
        out.update(result.counts())
        return self._audited(key, out, result.failures, started, result.api)

    def _created_by_this_run(self, stage: Any, key: Any, result: JobResult) -> None:
        """Count as created the upserted records that did not exist before the chunk's first upload.

        An upsert sent again after its answer was lost (dms.salesforce.http) is told "updated"
        for the records the lost call created. The before-images, captured before anything was
        sent, tell those apart, so that a rollback deletes them instead of leaving them behind.
        """
        from dms.staging import StageMissingError

        if self.obj.operation != "upsert" or not self.spec.before_images:
            return
        try:
            existed = {str(i)[:15] for i in stage.get_table(key, "before").column("Id").to_pylist()}
        except StageMissingError:
            return
        for row in result.loaded:
            if not row["created"] and row["id"] and str(row["id"])[:15] not in existed:
                row["created"] = True

    def _retry_unprocessed_rows(
        self, stage: Any, key: Any, frame: Any, columns: list[str], result: JobResult
    ) -> JobResult:
        """Send the rows a Failed Bulk job never processed again, in a new job, a bounded number of times.

        Salesforce keeps what a Failed job processed: those rows stay loaded or failed as its
        results say, and are never sent again. Only its unprocessed rows are, each attempt in a
        job with its own ledger (`<object>~unprocessed<n>`), so a retried task neither repeats
        an attempt that completed nor loses one that did not. Rows still unprocessed after the
        last attempt, or when the job failed on its input (InvalidBatch, ClientInputError: the
        same rows would fail the same way), stay failed with the job's errorMessage.
        """
        obj = self.obj
        # A result taken from the audit record has had its retries already.
        attempt = result.unprocessed_retries
        while attempt < UNPROCESSED_RETRIES:
            pending = [f for f in result.failures if f["code"] == "UNPROCESSED"]
            if not pending or any(f["message"].startswith(_INPUT_FAULTS) for f in pending):
                break
            attempt += 1
            rows = {f["row"] for f in pending}
            subset = frame[frame[ROW].astype(int).isin(rows)].reset_index(drop=True)
            again = self._send_again(stage, key, f"unprocessed{attempt}", subset, columns, result)
            self.log.warning(
                "chunk %s of %s: %s rows a Failed job left unprocessed (%s) sent again in a new job, attempt %s: "
                "%s loaded",
                key.chunk,
                obj.name,
                len(subset),
                pending[0]["message"][:200],
                attempt,
                len(again.loaded),
            )
        result.unprocessed_retries = attempt
        return result

    def _send_again(
        self, stage: Any, key: Any, attempt: str, subset: Any, columns: list[str], result: JobResult
    ) -> JobResult:
        """Load `subset` (rows that did not load) under the ledger `<object>~<attempt>`; their new
        results replace their old ones in `result`. Its own ledger lets a retried task resume the
        attempt instead of repeating or losing it."""
        obj = self.obj
        retry_key = ChunkKey(key.dag_id, key.run_id, f"{key.object_name}~{attempt}", key.chunk)
        sf = self.salesforce()
        if self._small(subset):
            again = self._via_collections(stage, retry_key, sf, subset, columns)
        else:
            again = run_bulk_job(
                self, stage, retry_key, sf, obj.sobject, obj.operation, obj.external_id, subset, columns, 1.0
            )
        sent = set(subset[ROW].astype(int).tolist())
        result.loaded += again.loaded
        result.failures = [f for f in result.failures if f["row"] not in sent] + again.failures
        return again

    def _retry_locked_rows(self, stage: Any, key: Any, frame: Any, columns: list[str], result: JobResult) -> JobResult:
        """Send again only the rows that failed with UNABLE_TO_LOCK_ROW, a few times, with a pause.

        Salesforce fails a row when another transaction holds its record or its parent; the
        other rows of the job are done and stay done. The retried rows are ordered by their
        parent lookups, so the rows of one parent travel together instead of contending for
        it from several batches. Each attempt has its own ledger (`<object>~lock<n>`), so a
        retried task neither repeats an attempt that completed nor loses one that did not.
        """
        obj = self.obj
        attempt = result.lock_retries
        while attempt < self.spec.lock_retries:
            locked = {f["row"] for f in result.failures if f["code"] == "UNABLE_TO_LOCK_ROW"}
            if not locked:
                break
            attempt += 1
            time.sleep(min(LOCK_PAUSE_SECONDS * attempt, 10.0))
            parents = [c for c in columns if "." in c]
            subset = frame[frame[ROW].astype(int).isin(locked)].sort_values([*parents, ROW], kind="stable")
            subset = subset.reset_index(drop=True)
            again = self._send_again(stage, key, f"lock{attempt}", subset, columns, result)
            self.log.info(
                "chunk %s of %s: lock retry %s: %s rows again, %s loaded",
                key.chunk,
                obj.name,
                attempt,
                len(subset),
                len(again.loaded),
            )
        result.lock_retries = attempt
        return result

    def capture_before_images(self, stage: Any, sf: Any, key: Any, frame: Any, columns: list[str]) -> None:
        """The current values of the fields this chunk writes, for its records that already exist.

        A rollback restores them. Captured once, before the first upload: a retry keeps the
        first capture, which still shows the records as they were before this run.
        """
        import pyarrow as pa

        from dms.staging import StageMissingError

        try:
            stage.get_table(key, "before")
            return
        except StageMissingError:
            pass
        obj = self.obj
        describe = stage.get_json(f"{key.dag_id}:{key.run_id}:{obj.name}:describe") or {}
        match_field = obj.external_id or "Id"
        fields: list[str] = []
        for column in columns:
            if column.lower() == "id" or column == obj.external_id or obj.fields[column].sensitive:
                continue  # the key itself does not change; sensitive values never reach the audit
            if "." in column:
                relationship = column.split(".", 1)[0].lower()
                column = next(
                    (n for n, i in describe.items() if (i.get("relationshipName") or "").lower() == relationship),
                    column,
                )
            fields.append(column)
        wanted = sorted({str(v) for v in frame[match_field if match_field in frame else "Id"] if v})
        records: list[dict[str, str]] = []
        select = ", ".join(dict.fromkeys(["Id", match_field, *fields]))
        for start in range(0, len(wanted), _IN_BATCH):
            literals = ", ".join(soql_literal(v) for v in wanted[start : start + _IN_BATCH])
            soql = f"SELECT {select} FROM {obj.sobject} WHERE {match_field} IN ({literals})"
            for record in sf.query_all_iter(soql):
                records.append({f: _soql_text(record.get(f)) for f in ["Id", *fields]})
        table = pa.Table.from_pylist(records, schema=pa.schema([(f, pa.string()) for f in ["Id", *fields]]))
        stage.put_table(key, "before", table)

    def _preview(self, stage: Any, sf: Any, context: Context, frame: Any, out: dict[str, Any]) -> dict[str, Any]:
        """A dry run: what this chunk would insert, update or delete, without writing anything.

        For an upsert the external ids are looked up in Salesforce (existing ones would be
        updated). The rows that would load are registered like loaded ones, so that the
        children's dry run finds their parents among them.
        """
        obj = self.obj
        out["dry_run"] = True
        would = {"would_insert": 0, "would_update": 0, "would_delete": 0}
        if obj.operation == "insert":
            would["would_insert"] = len(frame)
        elif obj.operation == "upsert" and obj.external_id:
            values = frame[obj.external_id].astype(str)
            existing = existing_keys(sf, obj.sobject, obj.external_id, {v.lower() for v in values if v})
            would["would_update"] = int(values.str.lower().isin(existing).sum())
            would["would_insert"] = len(frame) - would["would_update"]
        elif obj.operation == "update":
            would["would_update"] = len(frame)
        else:
            would["would_delete"] = len(frame)
        out.update(would)
        self.register_keys(stage, context, frame, [{"row": int(r)} for r in frame[ROW]])
        self.log.info("dry run: chunk %s of %s would %s", out["chunk"], obj.name, would)
        return out

    def salesforce(self) -> Any:
        from dms.hooks.salesforce import DmsSalesforceHook

        return DmsSalesforceHook(salesforce_conn_id=self.spec.connections.salesforce).get_conn()

    def check_parents(
        self, stage: Any, sf: Any, context: Context, key: Any, frame: Any, lookup_columns: list[str]
    ) -> tuple[Any, Any]:
        """Reject the rows whose lookup names a parent that is not loaded and not in Salesforce.

        The verdict is staged before any job starts, so a retry of this chunk rejects exactly
        the same rows and uploads exactly what the first try did.
        """
        import pandas as pd
        import pyarrow as pa

        from dms.staging import StageMissingError

        rejects_kind = f"{self.kind}load_rejects"
        try:
            rejects = stage.get_table(key, rejects_kind).to_pandas()
        except StageMissingError:
            duplicates = self._cross_chunk_duplicates(stage, key, frame) if not self.kind else None
            if duplicates is not None and len(duplicates):
                frame = frame[~frame[ROW].astype(int).isin(set(duplicates["row"]))].reset_index(drop=True)
            rejects = self._missing_parents(stage, sf, context, frame, lookup_columns)
            if duplicates is not None and len(duplicates):
                rejects = pd.concat([duplicates, rejects], ignore_index=True)
            stage.put_table(key, rejects_kind, pa.Table.from_pandas(rejects, preserve_index=False))
        if len(rejects):
            gone = set(rejects["row"].astype(int))
            frame = frame[~frame[ROW].astype(int).isin(gone)].reset_index(drop=True)
            self.log.warning("chunk %s of %s: %s rows rejected before loading", key.chunk, self.object_name, len(gone))
        return frame, rejects if len(rejects) else pd.DataFrame(columns=REJECT_COLUMNS)

    def _cross_chunk_duplicates(self, stage: Any, key: Any, frame: Any) -> Any:
        """Rows whose external id (or Id) another chunk of this run already holds.

        The transform rejects keys repeated within a chunk; this catches the ones repeated
        across chunks. Each key is claimed in a run-wide Redis hash by the first chunk that
        gets here (atomically, in a script); a later row with the same key is rejected, naming
        the row that holds it, rather than updating the same record twice in an order nobody
        chose. A retry claims its own keys again, which is no conflict.
        """
        import pandas as pd

        obj = self.obj
        column = obj.external_id or next((c for c in frame.columns if c.lower() == "id"), None)
        if column is None or frame.empty:
            return None
        # Python lists first: stepping through an Arrow-backed Series costs a call per value.
        values = frame[column].astype(str)
        normal = (values if not obj.external_id else values.str.lower()).tolist()
        rows = frame[ROW].astype(int).tolist()
        claims = [(k, f"{key.chunk}:{r}") for k, r in zip(normal, rows, strict=True) if k]
        name = f"dms:keys-claimed:{key.dag_id}:{key.run_id}:{key.object_name}"
        found: list[dict[str, Any]] = []
        by_key = dict(zip(normal, values.tolist(), strict=True))
        for start in range(0, len(claims), _CLAIM_BATCH):
            part = claims[start : start + _CLAIM_BATCH]
            args = [stage.ttl, *(x for pair in part for x in pair)]
            conflicts = stage.client.eval(_CLAIM_SCRIPT, 1, name, *args)
            for index, owner in zip(conflicts[::2], conflicts[1::2], strict=True):
                claim, mine = part[int(index)]
                holder = owner.decode() if isinstance(owner, bytes) else str(owner)
                found.append(
                    {
                        "row": int(mine.split(":")[1]),
                        "key": by_key[claim],
                        "field": column,
                        "reason": f"{column} {by_key[claim]!r} is also in row {holder.split(':')[1]} of the input, "
                        "which takes it; Salesforce cannot tell the two apart",
                        "code": "DUPLICATE_KEY",
                    }
                )
        return pd.DataFrame(found, columns=REJECT_COLUMNS).astype({"row": "int64"})

    def _missing_parents(self, stage: Any, sf: Any, context: Context, frame: Any, lookup_columns: list[str]) -> Any:
        import pandas as pd

        dag_id, run_id = self.run_ids(context)
        describe = stage.get_json(f"{dag_id}:{run_id}:{self.object_name}:describe") or {}
        parents = self.spec.dependencies()[self.object_name]
        found_rows: list[dict[str, Any]] = []
        rejected: set[int] = set()
        for column in lookup_columns:
            relationship, ext_id = column.split(".", 1)
            parent_obj = parents.get(column)
            if parent_obj:
                sobject = self.spec.object(parent_obj).sobject
            else:
                sobject = _referenced_sobject(describe, relationship)
            values = frame[column].astype(str).tolist()
            wanted = {v.lower() for v in values if v}
            known: set[str] = set()
            if parent_obj and wanted:
                known = loaded_keys(stage, dag_id, run_id, parent_obj, wanted)
            if wanted - known:
                known |= existing_keys(sf, sobject, ext_id, wanted - known)
            for row, value in zip(frame[ROW].astype(int).tolist(), values, strict=True):
                if value and value.lower() not in known and row not in rejected:
                    rejected.add(row)
                    found_rows.append(
                        {
                            "row": row,
                            "key": self.row_key(frame, row),
                            "field": column,
                            "reason": f"missing parent: no {sobject} with {ext_id} {value!r} was loaded by this run "
                            "or exists in Salesforce",
                            "code": "MISSING_PARENT",
                        }
                    )
        return pd.DataFrame(found_rows, columns=REJECT_COLUMNS).astype({"row": "int64"})

    def row_key(self, frame: Any, row: int) -> str:
        if not self.obj.external_id:
            return ""
        match = frame.loc[frame[ROW].astype(int) == row, self.obj.external_id]
        return str(match.iloc[0]) if len(match) else ""

    def stage_results(self, stage: Any, key: Any, frame: Any, result: JobResult) -> None:
        """Every row's result: the row number and key map to the Salesforce Id or the error."""
        import pyarrow as pa

        # The external id is the key people recognise in a report; without one, the record Id.
        key_column = self.obj.external_id or next((c for c in frame.columns if c.lower() == "id"), None)
        key_values = frame[key_column].tolist() if key_column in frame else [""] * len(frame)
        keys = dict(zip(frame[ROW].astype(int).tolist(), key_values, strict=True))
        loaded = result.loaded
        # Column by column, all text (as the reports and the retry read them): a chunk has 100k rows.
        successes = {
            "row": [str(r["row"]) for r in loaded],
            "key": [str(keys.get(r["row"], "")) for r in loaded],
            "id": [str(r["id"]) for r in loaded],
            "created": [str(r["created"]) for r in loaded],
        }
        stage.put_table(key, "failures", _failure_table(result.failures, keys))
        stage.put_table(key, "successes", pa.table({k: pa.array(v, pa.large_string()) for k, v in successes.items()}))

    def register_keys(self, stage: Any, context: Context, frame: Any, loaded: list[dict[str, Any]]) -> None:
        """Remember this run's loaded external ids, so children find their parents without a query."""
        ext_id = self.obj.external_id
        if not ext_id or not loaded:
            return
        dag_id, run_id = self.run_ids(context)
        by_row = dict(zip(frame[ROW].astype(int).tolist(), frame[ext_id].astype(str).tolist(), strict=True))
        add_loaded_keys(stage, dag_id, run_id, self.object_name or "", [by_row[r["row"]] for r in loaded])

    def _audited(
        self, key: Any, out: dict[str, Any], failures: list[dict[str, Any]], started: float, api: str = "none"
    ) -> dict:
        """Write the chunk's audit record (a retry overwrites its own) and return the XCom value."""
        from dms.audit import AuditUnavailable
        from dms.row_results import chunk_attachments

        codes = Counter(f["code"] for f in failures)
        kinds = ["relink_failures"] if self.kind else ["rejects", "load_rejects", "failures", "successes"]
        try:
            self._ledger_store().write_chunk(
                key.dag_id,
                key.run_id,
                key.object_name + (f".{self.kind.rstrip('_')}" if self.kind else ""),
                key.chunk,
                {
                    **out,
                    "api": api,
                    "error_codes": dict(codes),
                    "load_seconds": round(time.time() - started, 3),
                },
                # Every row's result, so the audit explains the run after the stage has expired.
                attachments=chunk_attachments(self.stage(), key, self.obj, kinds),
            )
        except AuditUnavailable as exc:
            # Retriable: the results are staged and the ledger knows the job, so Airflow's retry of
            # this task writes the record without sending a row to Salesforce again.
            raise AuditUnavailable(
                f"chunk {key.chunk} of {key.object_name} in run {key.run_id}: the audit record could not be "
                f"written: {exc}. The results are kept in the stage: a retry of this task writes the record and "
                "sends nothing to Salesforce again.",
                attempts=exc.attempts,
            ) from exc
        return out

    # ------------------------------------------------------------ the ledger's durable mirror

    def load_epoch(self, stage: Any, key: Any) -> str:
        """The object's load epoch in the run: staged by the extract; else read from the audit store."""
        name = key.object_name.split("~", 1)[0]
        epoch = stage.epoch(key.dag_id, key.run_id, name)
        if epoch is None:
            epoch = self._ledger_store().get_epoch(key.dag_id, key.run_id, name)
            stage.put_epoch(key.dag_id, key.run_id, name, epoch)
        return epoch

    def _ledger_store(self) -> Any:
        # One client per try: each new Audit checks the database and its indexes on its first write.
        if self._ledger_audit is None:
            self._ledger_audit = self.audit()
        return self._ledger_audit

    def _mirror_entries(self, stage: Any, key: Any) -> dict[str, dict[str, str]]:
        """The chunk's ledger mirror in the audit store, this epoch's entries only; read once per try."""
        name = key.object_name.split("~", 1)[0]
        ident = (key.dag_id, key.run_id, name, key.chunk)
        if self._mirrors is None:
            self._mirrors = {}
        if ident not in self._mirrors:
            doc = self._ledger_store().get_ledger(*ident)
            epoch = self.load_epoch(stage, key)
            self._mirrors[ident] = dict(doc.get("ledgers") or {}) if doc and doc.get("epoch") == epoch else {}
        return self._mirrors[ident]

    def mirrored(self, stage: Any, ledger_key: Any) -> dict[str, str]:
        """What the audit store's mirror holds for one ledger (a chunk's, or a retry's `<object>~lock1`)."""
        return self._mirror_entries(stage, ledger_key).get(ledger_key.object_name, {})

    def mirror(self, stage: Any, ledger_key: Any, **fields: str) -> None:
        """Write ledger fields to the audit store too, before the rows they stand for are sent."""
        name = ledger_key.object_name.split("~", 1)[0]
        ident = (ledger_key.dag_id, ledger_key.run_id, name, ledger_key.chunk)
        entries = self._ledger_store().write_ledger(
            *ident, self.load_epoch(stage, ledger_key), ledger_key.object_name, fields
        )
        if self._mirrors is None:
            self._mirrors = {}
        self._mirrors[ident] = entries

    def _loaded_before(self, stage: Any, key: Any, frame: Any) -> JobResult | None:
        """The chunk's results from its final audit record, when it was loaded before Redis lost the stage.

        Only for operations a second send would not simply repeat (`_UNREPEATABLE`), only when
        the Redis ledger knows nothing of the chunk (a first load, or one whose ledger was
        lost), and only when the audit store's mirror of this epoch says rows were sent: a
        first load costs one read. The re-derived rows must be the rows of the record, else
        the chunk fails with a ReconcileError and nothing is sent.
        """
        from dms.row_results import MASK, read_attachment

        if self.obj.operation not in _UNREPEATABLE or stage.ledger(_ledger_key(self, key)):
            return None
        if not self._mirror_entries(stage, key):
            return None
        audit = self._ledger_store()
        doc = audit.get_chunk(key.dag_id, key.run_id, key.object_name, key.chunk)
        final = (
            doc is not None
            and doc.get("epoch") == self.load_epoch(stage, key)
            and doc.get("api") in ("bulk2", "collections")
            and not doc.get("dry_run")
        )
        if not final:
            return None  # sent but never finished: the mirror resumes a Bulk job, Collections say UNKNOWN_OUTCOME
        successes = read_attachment(audit.get_attachment(doc["_id"], "successes.csv.gz"))
        failures = read_attachment(audit.get_attachment(doc["_id"], "failures.csv.gz"))
        key_column = self.obj.external_id or next((c for c in frame.columns if c.lower() == "id"), None)
        # As `stage_results` wrote the keys into the record.
        values = [str(v) for v in frame[key_column].tolist()] if key_column in frame else [""] * len(frame)
        expected = dict(zip(frame[ROW].astype(int).tolist(), values, strict=True))
        recorded = {int(r["row"]): r["key"] for r in [*successes, *failures]}
        differ = sorted(
            r
            for r in expected.keys() | recorded.keys()
            if r not in expected or r not in recorded or recorded[r] not in (MASK, expected[r])
        )
        if differ or len(recorded) != len(successes) + len(failures):
            raise ReconcileError(
                f"chunk {key.chunk} of {key.object_name} in run {key.run_id}: its audit record says it was loaded "
                f"({doc['api']}) before Redis lost the stage and ledger, but the rows staged again differ from the "
                f"rows it loaded (source rows {differ[:10]}): the source, chunk_rows or the rejected rows changed. "
                "Nothing was sent again. Restore the source as it was, or trigger the run with full_refresh to "
                "load every row again (an insert then creates the rows it loaded before a second time)."
            )
        self.log.warning(
            "chunk %s of %s: loaded before Redis lost its ledger (audit record %s): its %s loaded and %s failed "
            "rows are taken from the record, nothing is sent again",
            key.chunk,
            key.object_name,
            doc["_id"],
            len(successes),
            len(failures),
        )
        return JobResult(
            str(doc.get("job_id") or ""),
            str(doc.get("job_state") or ""),
            [{"row": int(r["row"]), "id": r["id"], "created": r["created"] == "True"} for r in successes],
            [
                {"row": int(r["row"]), "id": r["id"], "field": r["field"], "code": r["code"], "message": r["message"]}
                for r in failures
            ],
            str(doc["api"]),
            lock_retries=int(doc.get("lock_retries") or 0),
            unprocessed_retries=int(doc.get("unprocessed_retries") or 0),
        )

    def _resume(self, client: Any, ledger: dict[str, str]) -> dict[str, Any] | None:
        """The job a previous try of this chunk started, if it can still deliver results."""
        from dms.salesforce.bulk2 import Bulk2Error

        job_id = ledger.get("job_id")
        if not job_id:
            return None
        try:
            job = client.get_job(job_id)
        except Bulk2Error:
            self.log.warning("ledger job %s is gone; loading the chunk in a new job", job_id)
            return None
        if job["state"] == "Open":
            # The upload may have been cut short; Salesforce processes nothing of an Open job.
            client.set_state(job_id, "Aborted")
            return None
        if job["state"] == "Aborted":
            return None
        self.log.info("resuming job %s (%s) from the ledger instead of uploading again", job_id, job["state"])
        return job


class RelinkOperator(LoadOperator):
    """Second pass of a self-lookup or a cycle: set the deferred lookups of the chunk's loaded records.

    Runs once every object of the group is loaded, so every parent that this run loads
    exists. It updates by the Salesforce Id that the first pass got for each row; rows whose
    first pass failed have nothing to link. A row whose link fails stays in Salesforce
    without it and is counted as failed, with the reason, in the object's error report.
    """

    kind = "relink_"

    def execute(self, context: Context) -> dict[str, Any]:
        import pandas as pd

        obj = self.obj
        key = self.chunk_key(context, int(self.chunk["chunk"]))
        out: dict[str, Any] = {"object": obj.name, "chunk": key.chunk, "linked": 0, "failed": 0, "job_id": None}
        started = time.time()
        deferred = sorted(self.spec.load_plan()[1][obj.name])
        if self.param(context, "dry_run", False) or not deferred:
            return self._audited(key, out, [], started)
        stage = self.stage()
        from dms.staging import StageMissingError

        try:
            successes = stage.get_table(key, "successes").to_pandas()
        except StageMissingError:
            return self._audited(key, out, [], started)  # nothing of this chunk was loaded
        frame = stage.get_table(key, "ready").to_pandas()
        ids = dict(zip(successes["row"].astype(int), successes["id"], strict=True))
        frame = frame[frame[ROW].astype(int).isin(ids)]
        frame = frame[(frame[deferred] != "").any(axis=1)].reset_index(drop=True)
        if frame.empty:
            return self._audited(key, out, [], started)
        frame = pd.DataFrame(
            {ROW: frame[ROW], "Id": frame[ROW].astype(int).map(ids), **{c: frame[c] for c in deferred}}
        )
        if obj.external_id:
            frame[obj.external_id] = self._external_ids(stage, key, frame)
        sf = self.salesforce()
        keys = dict(zip(frame[ROW].astype(int), frame[obj.external_id], strict=True)) if obj.external_id else {}
        frame, rejects = self.check_parents(stage, sf, context, key, frame, deferred)
        failures = [
            {
                "row": int(r["row"]),
                "id": ids.get(int(r["row"]), ""),
                "field": r["field"],
                "code": r["code"],
                "message": r["reason"],
            }
            for r in rejects.to_dict("records")
        ]
        if not frame.empty:
            result = run_bulk_job(
                self, stage, key, sf, obj.sobject, "update", None, frame, ["Id", *deferred], self.poll_seconds
            )
            failures += result.failures
            out["linked"] = len(result.loaded)
            out["job_id"] = result.job_id
        out["failed"] = len(failures)
        stage.put_table(key, "relink_failures", _failure_table(failures, keys))
        return self._audited(key, out, failures, started)

    def _external_ids(self, stage: Any, key: Any, frame: Any) -> Any:
        ready = stage.get_table(key, "ready").to_pandas()
        by_row = dict(zip(ready[ROW].astype(int), ready[self.obj.external_id].astype(str), strict=True))
        return frame[ROW].astype(int).map(by_row)


@dataclass
class JobResult:
    job_id: str
    state: str
    loaded: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    api: str
    deferred: bool = False  # the job was waited for in the triggerer
    lock_retries: int = 0  # attempts that re-sent rows failing with UNABLE_TO_LOCK_ROW
    unprocessed_retries: int = 0  # new jobs for the rows a Failed job left unprocessed

    def counts(self) -> dict[str, Any]:
        return {
            "loaded": len(self.loaded),
            "failed": len(self.failures),
            "created": sum(1 for r in self.loaded if r["created"]),
            "job_id": self.job_id,
            "job_state": self.state,
            "deferred": self.deferred,
            "lock_retries": self.lock_retries,
            "unprocessed_retries": self.unprocessed_retries,
        }


def run_bulk_job(
    op: LoadOperator,
    stage: Any,
    key: Any,
    sf: Any,
    sobject: str,
    operation: str,
    external_id: str | None,
    frame: Any,
    columns: list[str],
    poll_seconds: float,
) -> JobResult:
    """One Bulk API 2.0 job for `frame[columns]`, waited for in this task, with every row's result."""
    job_id = start_bulk_job(op, stage, key, sf, sobject, operation, external_id, frame, columns)
    return finish_bulk_job(op, stage, key, sf, job_id, frame, columns, poll_seconds)


def _ledger_key(op: LoadOperator, key: Any) -> ChunkKey:
    return ChunkKey(key.dag_id, key.run_id, key.object_name + (f"~{op.kind}" if op.kind else ""), key.chunk)


def start_bulk_job(
    op: LoadOperator,
    stage: Any,
    key: Any,
    sf: Any,
    sobject: str,
    operation: str,
    external_id: str | None,
    frame: Any,
    columns: list[str],
) -> str:
    """Create and fill the chunk's Bulk API 2.0 job, or find the one a previous try started; its id.

    The ledger knows the job before any row leaves: a task killed during the upload finds
    the job on retry and aborts it (an Open job has processed nothing); one killed later
    resumes the job instead of uploading again. The job id is mirrored in the audit store
    before the upload too, so a re-run after Redis lost the ledger finds the job as well.
    """
    from dms.salesforce.bulk2 import Bulk2Client
    from dms.salesforce.bulk_csv import to_bulk_csv

    client = Bulk2Client(sf)
    ledger_key = _ledger_key(op, key)
    ledger = stage.ledger(ledger_key)
    if not ledger.get("job_id"):
        # Redis may have lost the ledger (restarted without its data, failed over, evicted it):
        # the audit store's mirror still knows the job, so the re-run resumes it too.
        ledger = op.mirrored(stage, ledger_key)
        if ledger.get("job_id"):
            op.log.warning(
                "chunk %s of %s: Redis has no ledger; the audit store's mirror has its job %s",
                key.chunk,
                ledger_key.object_name,
                ledger["job_id"],
            )
            stage.record(ledger_key, job_id=ledger["job_id"])
    job = op._resume(client, ledger)
    if job is None:
        job = client.create_job(sobject, operation, external_id)
        stage.record(ledger_key, job_id=job["id"], state="Open")
        op.mirror(stage, ledger_key, job_id=job["id"])
        client.upload(job["id"], to_bulk_csv(frame, columns))
        client.set_state(job["id"], "UploadComplete")
        stage.record(ledger_key, state="UploadComplete")
    return job["id"]


def finish_bulk_job(
    op: LoadOperator, stage: Any, key: Any, sf: Any, job_id: str, frame: Any, columns: list[str], poll_seconds: float
) -> JobResult:
    """Wait for the job (at once, when the trigger already saw it end) and pair its results with the rows."""
    from dms.salesforce.bulk2 import Bulk2Client
    from dms.salesforce.bulk_csv import match_results, read_results

    client = Bulk2Client(sf)
    ledger_key = _ledger_key(op, key)
    job = client.wait(job_id, poll_seconds)
    operation = job.get("operation", "")
    stage.record(ledger_key, state=job["state"])
    # Each result file parsed as it arrives, so its bytes are gone before the next one comes.
    loaded, failures = match_results(
        frame,
        columns,
        read_results(client.results(job["id"], "successfulResults")),
        read_results(client.results(job["id"], "failedResults")),
        read_results(client.results(job["id"], "unprocessedrecords")),
        job.get("errorMessage", ""),
    )
    if len(loaded) + len(failures) != len(frame):
        raise ReconcileError(
            f"chunk {key.chunk} of {key.object_name}: job {job['id']} reported {len(loaded)} loaded and "
            f"{len(failures)} failed for {len(frame)} uploaded rows"
        )
    op.log.info(
        "chunk %s of %s: %s job %s %s, %s loaded, %s failed",
        key.chunk,
        key.object_name,
        operation,
        job["id"],
        job["state"],
        len(loaded),
        len(failures),
    )
    return JobResult(job["id"], job["state"], loaded, failures, "bulk2")


def run_collections(
    op: LoadOperator,
    stage: Any,
    key: Any,
    sf: Any,
    operation: str,
    frame: Any,
    columns: list[str],
    types: dict[str, str],
) -> JobResult:
    """Send the chunk through sObject Collections, 200 rows a call, each call's results kept in the ledger.

    A retry skips the calls whose results the ledger has. A call that was sent but whose
    answer never arrived is sent again for update, upsert and delete (doing them twice is
    harmless); for an insert the records may exist already, so those rows fail with
    UNKNOWN_OUTCOME and the reason instead of being created a second time. For an insert or
    a delete the audit store's mirror notes that the chunk's calls began, before the first:
    when Redis has lost the ledger and the chunk has no final record, every call counts as
    sent without an answer.
    """
    from dms.salesforce.collections import CollectionsClient, json_record, result_outcome

    client = CollectionsClient(sf)
    obj = op.obj
    ledger_key = ChunkKey(key.dag_id, key.run_id, key.object_name + (f"~{op.kind}" if op.kind else ""), key.chunk)
    ledger = stage.ledger(ledger_key)
    rows = frame[ROW].astype(int).tolist()
    values = frame[columns].itertuples(index=False, name=None)
    records = [json_record(obj.sobject, columns, [str(v) for v in row], types) for row in values]
    if not ledger and operation in _UNREPEATABLE:
        if op.mirrored(stage, ledger_key).get("collections"):
            # Sent before Redis lost the ledger, and no final record: which calls went through is
            # unknown, so every call counts as sent without an answer (as below, per call).
            ledger = {f"coll_sent:{start}": "1" for start in range(0, len(records), 200)}
        else:
            # Redis first: a retry that finds this knows that Redis kept the ledger, and sends
            # what it shows unsent, instead of taking the mirror's word for the whole chunk.
            stage.record(ledger_key, coll_started="1")
            op.mirror(stage, ledger_key, collections="sent")
    loaded: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for start in range(0, len(records), 200):
        part = records[start : start + 200]
        done = ledger.get(f"coll:{start}")
        if done is not None:
            results = json.loads(done)
        elif ledger.get(f"coll_sent:{start}") and operation == "insert":
            results = [
                {
                    "success": False,
                    "errors": [
                        {
                            "statusCode": "UNKNOWN_OUTCOME",
                            "message": "the task stopped while Salesforce was creating this record; "
                            "check whether it exists before loading it again",
                        }
                    ],
                }
                for _ in part
            ]
        else:
            stage.record(ledger_key, **{f"coll_sent:{start}": "1"})
            results = client.send(operation, obj.sobject, obj.external_id, part)
            if len(results) != len(part):
                raise ReconcileError(f"sObject Collections answered {len(results)} results for {len(part)} records")
            stage.record(ledger_key, **{f"coll:{start}": json.dumps(results)})
        for row, result in zip(rows[start : start + 200], results, strict=True):
            ok, record_id, created, code, message, fields = result_outcome(operation, result)
            if ok:
                loaded.append({"row": row, "id": record_id, "created": created})
            else:
                failures.append({"row": row, "id": record_id, "field": fields, "code": code, "message": message})
    op.log.info(
        "chunk %s of %s: %s through sObject Collections, %s loaded, %s failed",
        key.chunk,
        key.object_name,
        operation,
        len(loaded),
        len(failures),
    )
    return JobResult("", "Collections", loaded, failures, "collections")


def pd_frame(records: list[dict[str, Any]], columns: list[str]) -> Any:
    import pandas as pd

    return pd.DataFrame(records, columns=columns)


def _failure_table(failures: list[dict[str, Any]], keys: dict[int, str]) -> Any:
    import pyarrow as pa

    table = pd_frame(
        [
            {
                "row": f["row"],
                "key": keys.get(f["row"], ""),
                "id": f["id"],
                "field": f.get("field", ""),
                "code": f["code"],
                "message": f["message"],
            }
            for f in failures
        ],
        ["row", "key", "id", "field", "code", "message"],
    )
    return pa.Table.from_pandas(table.astype(str), preserve_index=False)


def _referenced_sobject(describe: dict[str, dict[str, Any]], relationship: str) -> str:
    for info in describe.values():
        if (info.get("relationshipName") or "").lower() == relationship.lower() and info.get("referenceTo"):
            return info["referenceTo"][0]
    raise FatalError(f"no lookup relationship named {relationship!r} in the describe")


def _loaded_set(dag_id: str, run_id: str, object_name: str) -> str:
    return f"dms:keys:{dag_id}:{run_id}:{object_name}"


def add_loaded_keys(stage: Any, dag_id: str, run_id: str, object_name: str, values: list[str]) -> None:
    """Add external ids to the run's set for the object (idempotent: a retry adds the same ones)."""
    name = _loaded_set(dag_id, run_id, object_name)
    values = [v.lower() for v in values if v]
    for start in range(0, len(values), 10_000):
        stage.client.sadd(name, *values[start : start + 10_000])
    stage.client.expire(name, stage.ttl)


def loaded_keys(stage: Any, dag_id: str, run_id: str, object_name: str, wanted: set[str]) -> set[str]:
    """Those of `wanted` (lower-cased external ids) that this run loaded for the object."""
    name = _loaded_set(dag_id, run_id, object_name)
    values = sorted(wanted)
    found: set[str] = set()
    for start in range(0, len(values), 10_000):
        part = values[start : start + 10_000]
        found.update(v for v, hit in zip(part, stage.client.smismember(name, part), strict=True) if hit)
    return found


# Claims a chunk's keys in the run's hash; returns [index, owner, ...] for keys another row holds.
_CLAIM_SCRIPT = """
local conflicts = {}
for i = 2, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 0 then
    local owner = redis.call('HGET', KEYS[1], ARGV[i])
    if owner ~= ARGV[i + 1] then
      table.insert(conflicts, (i - 2) / 2)
      table.insert(conflicts, owner)
    end
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return conflicts
"""
_CLAIM_BATCH = 20_000

# Values per SOQL IN list: Salesforce caps a query's text at 100,000 characters.
_IN_BATCH = 200


def existing_keys(sf: Any, sobject: str, field: str, wanted: set[str]) -> set[str]:
    """Those of `wanted` (lower-cased) that some `sobject` record has in `field` (SOQL compares case-insensitively)."""
    values = sorted(wanted)
    found: set[str] = set()
    for start in range(0, len(values), _IN_BATCH):
        literals = ", ".join(soql_literal(v) for v in values[start : start + _IN_BATCH])
        for record in sf.query_all_iter(f"SELECT {field} FROM {sobject} WHERE {field} IN ({literals})"):
            if record.get(field) is not None:
                found.add(str(record[field]).lower())
    return found


def _soql_text(value: Any) -> str:
    """A field value from a query as Bulk CSV text ("" for null; the rollback writes #N/A for it)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def soql_literal(value: str) -> str:
    """A SOQL string literal: backslash and quote escaped, so a value can never change the query."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
    return f"'{escaped}'"
