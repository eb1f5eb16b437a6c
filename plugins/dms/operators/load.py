"""Load (mapped per chunk): Bulk API 2.0 ingest with a ledger, so a retry never loads a chunk twice."""

from __future__ import annotations

import csv
import io
import time
from collections import Counter, defaultdict, deque
from typing import Any

from airflow.sdk import Context

from dms.errors import ReconcileError
from dms.operators.base import DmsOperator

ROW = "__row"


def to_bulk_csv(frame: Any, columns: list[str]) -> bytes:
    """The ready rows as the CSV Bulk API 2.0 takes: UTF-8, LF, every cell quoted."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(frame[columns].itertuples(index=False, name=None))
    return buffer.getvalue().encode("utf-8")


def _parse_results(payload: bytes) -> tuple[list[str], list[list[str]]]:
    reader = csv.reader(io.StringIO(payload.decode("utf-8-sig")))
    header = next(reader, [])
    return header, list(reader)


def match_results(
    frame: Any, columns: list[str], success: bytes, failed: bytes, unprocessed: bytes, job_error: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Pair each result line with its source row by the uploaded values.

    Salesforce processes a job's rows in parallel and does not promise result order, but it
    echoes every uploaded column, so the values identify the row (identical rows are
    interchangeable, and are matched one to one).
    """
    pending: dict[tuple[str, ...], deque[int]] = defaultdict(deque)
    for values in frame[[ROW, *columns]].itertuples(index=False, name=None):
        pending[tuple(str(v) for v in values[1:])].append(int(values[0]))

    def take(values: list[str]) -> int:
        queue = pending.get(tuple(values))
        if not queue:
            raise ReconcileError(f"Salesforce returned a result for a row that was not uploaded: {values[:3]}")
        return queue.popleft()

    loaded: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    header, rows = _parse_results(success)
    for line in rows:
        loaded.append({"row": take(line[2:]), "id": line[0], "created": line[1] == "true"})
    header, rows = _parse_results(failed)
    for line in rows:
        code, _, message = line[1].partition(":")
        failures.append({"row": take(line[2:]), "id": line[0], "code": code, "message": message.rstrip(" -")})
    header, rows = _parse_results(unprocessed)
    for line in rows:
        failures.append({"row": take(line), "id": "", "code": "UNPROCESSED", "message": job_error or "not processed"})
    return loaded, failures


class LoadOperator(DmsOperator):
    """Load one staged chunk through Bulk API 2.0 and keep every row's result."""

    template_fields = ("chunk",)

    def __init__(self, *, chunk: dict[str, Any], poll_seconds: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.chunk = chunk
        self.poll_seconds = poll_seconds

    def execute(self, context: Context) -> dict[str, Any]:
        import pandas as pd
        import pyarrow as pa

        from dms.hooks.salesforce import DmsSalesforceHook
        from dms.salesforce.bulk2 import Bulk2Client

        obj = self.obj
        key = self.chunk_key(context, int(self.chunk["chunk"]))
        out: dict[str, Any] = {**self.chunk, "loaded": 0, "failed": 0, "created": 0, "job_id": None}
        started = time.time()
        if self.param(context, "dry_run", False):
            out["dry_run"] = True
            self.log.info("dry run: chunk %s of %s not loaded (%s ready)", key.chunk, obj.name, out.get("ready"))
            return self._audited(key, out, [], started)
        stage = self.stage()
        frame = stage.get_table(key, "ready").to_pandas()
        if frame.empty:
            return self._audited(key, out, [], started)
        columns = [c for c in frame.columns if c != ROW]
        client = Bulk2Client(DmsSalesforceHook(salesforce_conn_id=self.spec.connections.salesforce).get_conn())

        job = self._resume(client, stage.ledger(key))
        if job is None:
            job = client.create_job(obj.sobject, obj.operation, obj.external_id)
            # The ledger knows the job before any row leaves: a task killed during the upload
            # finds the job on retry and aborts it (an Open job has processed nothing).
            stage.record(key, job_id=job["id"], state="Open")
            client.upload(job["id"], to_bulk_csv(frame, columns))
            client.set_state(job["id"], "UploadComplete")
            stage.record(key, state="UploadComplete")
        job = client.wait(job["id"], self.poll_seconds)
        stage.record(key, state=job["state"])
        loaded, failures = match_results(
            frame,
            columns,
            client.results(job["id"], "successfulResults"),
            client.results(job["id"], "failedResults"),
            client.results(job["id"], "unprocessedrecords"),
            job.get("errorMessage", ""),
        )
        if len(loaded) + len(failures) != len(frame):
            raise ReconcileError(
                f"chunk {key.chunk} of {obj.name}: job {job['id']} reported {len(loaded)} loaded and "
                f"{len(failures)} failed for {len(frame)} uploaded rows"
            )
        # The external id is the key people recognise in an error report.
        ext_values = frame[obj.external_id] if obj.external_id else [""] * len(frame)
        keys = dict(zip(frame[ROW].astype(int), ext_values, strict=True))
        failure_table = pd.DataFrame(
            [
                {
                    "row": f["row"],
                    "key": keys.get(f["row"], ""),
                    "id": f["id"],
                    "code": f["code"],
                    "message": f["message"],
                }
                for f in failures
            ],
            columns=["row", "key", "id", "code", "message"],
        )
        success_table = pd.DataFrame(
            [{"row": r["row"], "key": keys.get(r["row"], ""), "id": r["id"], "created": r["created"]} for r in loaded],
            columns=["row", "key", "id", "created"],
        )
        # Every row's result is kept: the row number and key map to the Salesforce Id or error.
        stage.put_table(key, "failures", pa.Table.from_pandas(failure_table.astype(str), preserve_index=False))
        stage.put_table(key, "successes", pa.Table.from_pandas(success_table.astype(str), preserve_index=False))
        out.update(
            loaded=len(loaded),
            failed=len(failures),
            created=sum(1 for r in loaded if r["created"]),
            job_id=job["id"],
            job_state=job["state"],
        )
        self.log.info(
            "chunk %s of %s: job %s %s, %s loaded, %s failed",
            key.chunk,
            obj.name,
            job["id"],
            job["state"],
            out["loaded"],
            out["failed"],
        )
        return self._audited(key, out, failures, started)

    def _audited(self, key: Any, out: dict[str, Any], failures: list[dict[str, Any]], started: float) -> dict:
        """Write the chunk's audit record (a retry overwrites its own) and return the XCom value."""
        codes = Counter(f["code"] for f in failures)
        self.audit().write_chunk(
            key.dag_id,
            key.run_id,
            key.object_name,
            key.chunk,
            {
                **out,
                "api": "bulk2",
                "error_codes": dict(codes),
                "load_seconds": round(time.time() - started, 3),
            },
        )
        return out

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
