"""Bulk API 1.0 with JSON content: jobs, batches processed by a background worker, results.

Resources under ``/services/async/{version}``:

* ``POST job`` create, ``GET job/{id}`` info, ``POST job/{id}`` close or abort;
* ``POST job/{id}/batch`` add a batch, ``GET job/{id}/batch`` list, ``GET .../batch/{bid}`` info;
* ``GET .../batch/{bid}/request`` the uploaded batch, ``GET .../batch/{bid}/result`` its results;
* ``GET .../batch/{bid}/result/{rid}`` one file of query results.

As in Salesforce, a batch is queued when it is added (even while its job is still Open) and
a worker thread takes it through Queued -> InProgress -> Completed/Failed. Row results come
back in input order. All writes go through `Store.write`, so a row fails with the same status
code here as through REST or Bulk API 2.0. Errors have Bulk 1.0's shape
``{"exceptionCode", "exceptionMessage"}``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .ids import make_id, to_18
from .rest import flatten_record
from .schema import ObjectDef
from .soql import CompiledQuery, SoqlError, compile_query, record_json
from .state import USER_ID, Emulator
from .store import Operation, RequestError, RowResult
from .values import now_stamp

log = logging.getLogger(__name__)

# Salesforce's Bulk API 1.0 limits for one batch of data.
MAX_BATCH_RECORDS = 10_000
MAX_BATCH_BYTES = 10_000_000
# Salesforce splits large query results into several result files; the emulator does so
# at this many records, so that clients' loops over result ids are exercised.
QUERY_RESULT_CHUNK = 100_000
# How long a batch-status request may wait for an unfinished batch before it answers. The
# answer is still a true snapshot; waiting briefly only spares clients such as
# simple_salesforce, which sleeps 5 s between polls, a needless round of sleeping.
STATUS_WAIT_SECONDS = 2.0

INGEST_OPERATIONS = ("insert", "update", "upsert", "delete", "hardDelete")
QUERY_OPERATIONS = ("query", "queryAll")
# simple_salesforce sends concurrencyMode as 0/1; Salesforce's JSON binding maps those to the enum.
_CONCURRENCY = {"Parallel": "Parallel", "Serial": "Serial", 0: "Parallel", 1: "Serial"}
# JobInfo fields a client may send when it creates a job; the others are Salesforce's to set.
_CREATE_FIELDS = {
    "operation",
    "object",
    "contentType",
    "concurrencyMode",
    "externalIdFieldName",
    "assignmentRuleId",
    "state",
}
_FINISHED = ("Completed", "Failed", "NotProcessed")


def bulk_error(status: int, code: str, message: str) -> JSONResponse:
    """A Bulk API 1.0 error: ``{"exceptionCode", "exceptionMessage"}``."""
    return JSONResponse({"exceptionCode": code, "exceptionMessage": message}, status_code=status)


def _epoch_millis(value: Any, kind: str) -> Any:
    """Bulk 1.0 JSON query results carry date and datetime values as epoch milliseconds."""
    if not isinstance(value, str):
        return value
    try:
        if kind == "datetime":
            moment = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z")
        else:
            moment = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return value
    return int(moment.timestamp() * 1000)


@dataclass
class Job:
    id: str
    operation: str
    sobject: ObjectDef
    external_id: str | None
    concurrency_mode: str
    api_version: str
    created_date: str
    system_modstamp: str
    state: str = "Open"
    batches: list[Batch] = field(default_factory=list)
    # Set when the emulator's fail_next_bulk_jobs fault picked this job: every batch fails.
    injected_failure: bool = False

    @property
    def is_query(self) -> bool:
        return self.operation in QUERY_OPERATIONS


@dataclass
class Batch:
    id: str
    job: Job
    created_date: str
    system_modstamp: str
    body: bytes
    records: list[dict[str, Any]] | None = None
    soql: str | None = None
    state: str = "Queued"
    state_message: str | None = None
    processed: int = 0
    failed: int = 0
    processing_ms: int = 0
    results: list[dict[str, Any]] | None = None
    # Query batches: the compiled query, its rows, and one result id per file of rows.
    query: CompiledQuery | None = None
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    result_ids: list[str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


class Bulk1:
    """All Bulk API 1.0 jobs of the emulator, and the worker thread that processes their batches."""

    def __init__(self, emu: Emulator, *, start_worker: bool = True) -> None:
        self.emu = emu
        self.lock = threading.RLock()
        self.jobs: dict[str, Job] = {}
        self.status_wait = STATUS_WAIT_SECONDS
        self.query_chunk = QUERY_RESULT_CHUNK
        # Ids are never reused, not even across resets, so a stale id cannot hit a new job.
        self._serial = itertools.count(1)
        self._queue: queue.Queue[Batch] = queue.Queue()
        # Held while a batch is processed, so that reset() returns only once no write is in flight.
        self._processing = threading.Lock()
        self._start_worker = start_worker
        self._worker: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def reset(self) -> None:
        """Forget every job; queued batches are dropped and an in-flight batch is waited for."""
        with self._processing, self.lock:
            for job in self.jobs.values():
                for batch in job.batches:
                    if batch.state == "Queued":
                        batch.state = "NotProcessed"
                    batch.done.set()
            self.jobs.clear()
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break

    def _ensure_worker(self) -> None:
        # Started on first use, so an emulator that never sees Bulk 1.0 runs no extra thread.
        if not self._start_worker or (self._worker is not None and self._worker.is_alive()):
            return
        self._worker = threading.Thread(target=self._run, name="bulk1-worker", daemon=True)
        self._worker.start()

    def _run(self) -> None:
        while True:
            self.process_next(block=True)

    def process_next(self, *, block: bool = False) -> bool:
        """Process the next queued batch; False when none was waiting (only when not blocking)."""
        try:
            batch = self._queue.get(block=block)
        except queue.Empty:
            return False
        with self._processing:
            with self.lock:
                # An abort or a reset may have overtaken the batch while it sat in the queue.
                if batch.state != "Queued":
                    batch.done.set()
                    return True
                batch.state = "InProgress"
                batch.system_modstamp = now_stamp()
            started = time.monotonic()
            try:
                if batch.job.is_query:
                    self._process_query(batch)
                else:
                    self._process_ingest(batch)
            except Exception as exc:  # a bug must fail the batch, not kill the worker
                log.exception("bulk 1.0 batch %s failed unexpectedly", batch.id)
                self._fail(batch, f"InternalServerError : {type(exc).__name__}: {exc}")
            finally:
                with self.lock:
                    batch.processing_ms = int((time.monotonic() - started) * 1000)
                    batch.system_modstamp = now_stamp()
                    batch.job.system_modstamp = batch.system_modstamp
                    if batch.job.injected_failure and batch.job.state == "Closed":
                        batch.job.state = "Failed"
                batch.done.set()
        return True

    # ------------------------------------------------------------ processing

    def _fail(self, batch: Batch, message: str) -> None:
        with self.lock:
            batch.state = "Failed"
            batch.state_message = message

    def _process_ingest(self, batch: Batch) -> None:
        job = batch.job
        records = batch.records or []
        if len(records) > MAX_BATCH_RECORDS:
            self._fail(
                batch,
                f"InvalidBatch : Exceeded number of records: {len(records)}. "
                f"Number of records should be less than or equal to {MAX_BATCH_RECORDS}",
            )
            return
        if job.injected_failure:
            self._fail(batch, "InternalServerError : batch failed by the emulator's fail_next_bulk_jobs fault")
            return
        rows = [flatten_record(r) for r in records]
        if job.operation not in ("delete", "hardDelete"):
            # A column the object does not have fails the whole batch, as an unknown CSV header does.
            # Relationship columns (Parent.Legacy_Id__c) are checked by the store.
            seen: dict[str, None] = {}
            for row in rows:
                seen.update(dict.fromkeys(row))
            for key in seen:
                if "." not in key and job.sobject.field(key) is None:
                    self._fail(batch, f"InvalidBatch : Field name not found : {key}")
                    return
        try:
            results = self.emu.store.write(
                cast(Operation, job.operation), job.sobject, rows, external_id=job.external_id
            )
        except RequestError as exc:
            self._fail(batch, f"InvalidBatch : {exc.message}")
            return
        with self.lock:
            batch.results = [_row_result(r) for r in results]
            batch.processed = len(results)
            batch.failed = sum(1 for r in results if not r.success)
            batch.state = "Completed"

    def _process_query(self, batch: Batch) -> None:
        job = batch.job
        soql = batch.soql or ""
        try:
            cq = compile_query(soql, self.emu.schema, include_deleted=job.operation == "queryAll")
        except SoqlError as exc:
            self._fail(batch, f"InvalidBatch : Failed to process query: {exc.error_code}: {exc.message}")
            return
        if cq.is_count:
            self._fail(
                batch, "InvalidBatch : Failed to process query: MALFORMED_QUERY: COUNT() is not supported by Bulk API"
            )
            return
        rows = self.emu.store.execute(cq.sql, cq.params)
        chunks = max(1, -(-len(rows) // self.query_chunk))
        with self.lock:
            batch.query = cq
            batch.rows = rows
            batch.result_ids = [self._new_id("752") for _ in range(chunks)]
            batch.processed = len(rows)
            batch.state = "Completed"

    # ------------------------------------------------------------ jobs and batches

    def _new_id(self, prefix: str) -> str:
        return make_id(prefix, next(self._serial))

    def create_job(self, body: dict[str, Any], version: str) -> Job | JSONResponse:
        unknown = sorted(set(body) - _CREATE_FIELDS)
        if unknown:
            return bulk_error(400, "InvalidJob", f"{unknown[0]} cannot be specified when a job is created")
        operation = body.get("operation")
        if operation not in INGEST_OPERATIONS + QUERY_OPERATIONS:
            return bulk_error(400, "InvalidJob", f"Invalid operation: {operation}")
        obj_name = body.get("object")
        obj = self.emu.schema.get(obj_name) if isinstance(obj_name, str) else None
        if obj is None:
            return bulk_error(400, "InvalidEntity", f"Entity '{obj_name}' is not supported by the Bulk API.")
        content_type = body.get("contentType", "CSV")
        if content_type != "JSON":
            # Salesforce defaults to CSV; the emulator serves JSON jobs only and says so.
            return bulk_error(
                400, "InvalidJob", f"contentType {content_type} is not supported by the emulator; use JSON"
            )
        mode = _CONCURRENCY.get(body.get("concurrencyMode", "Parallel"))
        if mode is None:
            return bulk_error(400, "InvalidJob", f"Invalid concurrencyMode: {body.get('concurrencyMode')}")
        if body.get("state", "Open") != "Open":
            return bulk_error(400, "InvalidJobState", f"A new job must be Open, not {body.get('state')}")
        external_id = body.get("externalIdFieldName")
        if operation == "upsert":
            if not external_id:
                return bulk_error(
                    400,
                    "InvalidJob",
                    f"External ID was blank for {obj.name}. An External ID must be specified for upsert.",
                )
            ext = obj.field(str(external_id))
            if ext is None or not (ext.external_id or ext.name == "Id"):
                return bulk_error(
                    400,
                    "InvalidJob",
                    f"Field name provided, {external_id} is not an External ID or indexed field for {obj.name}",
                )
            external_id = ext.name
        else:
            external_id = None
        injected = False
        if operation in INGEST_OPERATIONS:
            with self.emu.lock:
                if self.emu.faults.fail_next_bulk_jobs > 0:
                    self.emu.faults.fail_next_bulk_jobs -= 1
                    injected = True
        stamp = now_stamp()
        job = Job(
            id=self._new_id("750"),
            operation=operation,
            sobject=obj,
            external_id=external_id,
            concurrency_mode=mode,
            api_version=version,
            created_date=stamp,
            system_modstamp=stamp,
            injected_failure=injected,
        )
        with self.lock:
            self.jobs[job.id] = job
        return job

    def get_job(self, job_id: str) -> Job | None:
        norm = to_18(job_id)
        with self.lock:
            return self.jobs.get(norm) if norm else None

    def set_state(self, job: Job, state: Any) -> JSONResponse | None:
        with self.lock:
            if state == "Closed":
                if job.state == "Aborted":
                    return bulk_error(400, "InvalidJobState", "Closing already aborted Job not allowed")
                if job.state == "Open":
                    job.state = "Closed"
                    # An injected failure shows on the job once it is closed and a batch has failed.
                    if job.injected_failure and any(b.state == "Failed" for b in job.batches):
                        job.state = "Failed"
            elif state == "Aborted":
                if job.state == "Aborted":
                    return bulk_error(400, "InvalidJobState", "Aborting already Aborted Job not allowed")
                job.state = "Aborted"
                # Batches still waiting are never processed; one in progress finishes.
                for batch in job.batches:
                    if batch.state == "Queued":
                        batch.state = "NotProcessed"
                        batch.system_modstamp = now_stamp()
                        batch.done.set()
            else:
                return bulk_error(400, "InvalidJobState", f"Invalid state specified: {state}")
            job.system_modstamp = now_stamp()
        return None

    def add_batch(self, job: Job, body: bytes) -> Batch | JSONResponse:
        if len(body) > MAX_BATCH_BYTES:
            return bulk_error(400, "InvalidBatch", f"Exceeded max size limit of {MAX_BATCH_BYTES}")
        records: list[dict[str, Any]] | None = None
        soql: str | None = None
        if job.is_query:
            soql = body.decode("utf-8", "replace").strip()
            if not soql:
                return bulk_error(400, "InvalidBatch", "The batch is empty: a query batch needs a SOQL query")
        else:
            try:
                parsed = json.loads(body or b"null")
            except ValueError as exc:
                return bulk_error(400, "InvalidBatch", f"Failed to parse JSON: {exc}")
            if not isinstance(parsed, list) or not all(isinstance(r, dict) for r in parsed):
                return bulk_error(400, "InvalidBatch", "The batch must be a JSON array of record objects")
            records = parsed
        stamp = now_stamp()
        batch = Batch(
            id=self._new_id("751"),
            job=job,
            created_date=stamp,
            system_modstamp=stamp,
            body=body,
            records=records,
            soql=soql,
        )
        with self.lock:
            # Checked under the lock that close and abort take, so no batch slips into a closed job.
            if job.state != "Open":
                return bulk_error(400, "InvalidJobState", f"Job {job.id} is not open: its state is {job.state}")
            job.batches.append(batch)
            job.system_modstamp = stamp
        self._queue.put(batch)
        self._ensure_worker()
        return batch

    # ------------------------------------------------------------ JSON shapes

    def job_json(self, job: Job) -> dict[str, Any]:
        with self.lock:
            counts = {state: 0 for state in ("Queued", "InProgress", "Completed", "Failed", "NotProcessed")}
            for b in job.batches:
                counts[b.state] += 1
            processed = sum(b.processed for b in job.batches)
            failed = sum(b.failed for b in job.batches)
            elapsed = sum(b.processing_ms for b in job.batches)
            return {
                "apexProcessingTime": 0,
                "apiActiveProcessingTime": elapsed,
                "apiVersion": float(job.api_version),
                "assignmentRuleId": None,
                "concurrencyMode": job.concurrency_mode,
                "contentType": "JSON",
                "createdById": USER_ID,
                "createdDate": job.created_date,
                "externalIdFieldName": job.external_id,
                "fastPathEnabled": False,
                "id": job.id,
                "numberBatchesCompleted": counts["Completed"],
                "numberBatchesFailed": counts["Failed"],
                "numberBatchesInProgress": counts["InProgress"],
                "numberBatchesQueued": counts["Queued"],
                "numberBatchesTotal": len(job.batches),
                "numberRecordsFailed": failed,
                "numberRecordsProcessed": processed,
                "numberRetries": 0,
                "object": job.sobject.name,
                "operation": job.operation,
                "state": job.state,
                "systemModstamp": job.system_modstamp,
                "totalProcessingTime": elapsed,
            }

    def batch_json(self, batch: Batch) -> dict[str, Any]:
        with self.lock:
            body: dict[str, Any] = {
                "apexProcessingTime": 0,
                "apiActiveProcessingTime": batch.processing_ms,
                "createdDate": batch.created_date,
                "id": batch.id,
                "jobId": batch.job.id,
                "numberRecordsFailed": batch.failed,
                "numberRecordsProcessed": batch.processed,
                "state": batch.state,
                "systemModstamp": batch.system_modstamp,
                "totalProcessingTime": batch.processing_ms,
            }
            if batch.state_message is not None:
                body["stateMessage"] = batch.state_message
            return body

    def query_records(self, batch: Batch, result_id: str) -> list[dict[str, Any]] | None:
        with self.lock:
            if result_id not in batch.result_ids or batch.query is None:
                return None
            cq = batch.query
            start = batch.result_ids.index(result_id) * self.query_chunk
            rows = batch.rows[start : start + self.query_chunk]
        version = batch.job.api_version
        dated = [(col.path, col.field.type) for col in cq.columns if col.field.type in ("date", "datetime")]
        out = []
        for row in rows:
            rec = record_json(cq, row, version)
            for path, kind in dated:
                holder: Any = rec
                for rel in path[:-1]:
                    holder = holder.get(rel) if isinstance(holder, dict) else None
                if isinstance(holder, dict) and path[-1] in holder:
                    holder[path[-1]] = _epoch_millis(holder[path[-1]], kind)
            out.append(rec)
        return out


def _row_result(result: RowResult) -> dict[str, Any]:
    return {
        "success": result.success,
        "created": result.created,
        "id": result.id,
        "errors": [e.as_json() for e in result.errors],
    }


# ---------------------------------------------------------------- routes


def routes(emu: Emulator) -> list[Route]:
    bulk = Bulk1(emu)
    emu.extensions["bulk1"] = bulk

    def version_of(request: Request) -> str | None:
        version = request.path_params["version"]
        try:
            float(version)
        except ValueError:
            return None
        return version

    def job_of(request: Request) -> Job | JSONResponse:
        job_id = request.path_params["job_id"]
        job = bulk.get_job(job_id)
        if job is None:
            return bulk_error(400, "InvalidJob", f"Invalid job id: {job_id}")
        return job

    def batch_of(request: Request) -> Batch | JSONResponse:
        job = job_of(request)
        if isinstance(job, JSONResponse):
            return job
        batch_id = to_18(request.path_params["batch_id"]) or ""
        with bulk.lock:
            batch = next((b for b in job.batches if b.id == batch_id), None)
        if batch is None:
            return bulk_error(400, "InvalidBatch", f"Invalid batch id: {request.path_params['batch_id']}")
        return batch

    async def create_job(request: Request) -> Response:
        version = version_of(request)
        if version is None:
            return bulk_error(404, "InvalidUrl", f"Invalid API version: {request.path_params['version']}")
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError as exc:
            return bulk_error(400, "InvalidJob", f"Unable to parse Job: {exc}")
        if not isinstance(body, dict):
            return bulk_error(400, "InvalidJob", "Unable to parse Job: the body must be a JSON object")
        job = bulk.create_job(body, version)
        if isinstance(job, JSONResponse):
            return job
        return JSONResponse(bulk.job_json(job), status_code=201)

    async def job_info(request: Request) -> Response:
        job = job_of(request)
        if isinstance(job, JSONResponse):
            return job
        if request.method == "GET":
            return JSONResponse(bulk.job_json(job))
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError as exc:
            return bulk_error(400, "InvalidJob", f"Unable to parse Job: {exc}")
        if not isinstance(body, dict) or "state" not in body:
            return bulk_error(400, "InvalidJob", "A job update needs a state (Closed or Aborted)")
        # The job's identity may be echoed back; anything else is Salesforce's to set.
        extra = sorted(set(body) - {"state", "id", "object", "operation", "contentType"})
        if extra:
            return bulk_error(400, "InvalidJob", f"{extra[0]} cannot be specified")
        failed = bulk.set_state(job, body["state"])
        return failed or JSONResponse(bulk.job_json(job))

    async def batches(request: Request) -> Response:
        job = job_of(request)
        if isinstance(job, JSONResponse):
            return job
        if request.method == "GET":
            with bulk.lock:
                listed = list(job.batches)
            return JSONResponse({"batchInfo": [bulk.batch_json(b) for b in listed]})
        batch = bulk.add_batch(job, await request.body())
        if isinstance(batch, JSONResponse):
            return batch
        return JSONResponse(bulk.batch_json(batch), status_code=201)

    async def batch_info(request: Request) -> Response:
        batch = batch_of(request)
        if isinstance(batch, JSONResponse):
            return batch
        deadline = time.monotonic() + bulk.status_wait
        while not batch.done.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return JSONResponse(bulk.batch_json(batch))

    async def batch_request(request: Request) -> Response:
        batch = batch_of(request)
        if isinstance(batch, JSONResponse):
            return batch
        if batch.job.is_query:
            return PlainTextResponse(batch.soql or "")
        return Response(batch.body, media_type="application/json")

    async def batch_result(request: Request) -> Response:
        batch = batch_of(request)
        if isinstance(batch, JSONResponse):
            return batch
        with bulk.lock:
            state, message = batch.state, batch.state_message
            results, result_ids = batch.results, list(batch.result_ids)
        if state == "Failed":
            return bulk_error(400, "InvalidBatch", f"Batch {batch.id} failed: {message}")
        if state != "Completed":
            return bulk_error(400, "InvalidBatch", "Batch not completed")
        return JSONResponse(result_ids if batch.job.is_query else results)

    async def query_result(request: Request) -> Response:
        batch = batch_of(request)
        if isinstance(batch, JSONResponse):
            return batch
        if batch.state != "Completed" or not batch.job.is_query:
            return bulk_error(400, "InvalidBatch", "Batch not completed")
        records = bulk.query_records(batch, to_18(request.path_params["result_id"]) or "")
        if records is None:
            return bulk_error(400, "InvalidBatch", f"Invalid result id: {request.path_params['result_id']}")
        return JSONResponse(records)

    base = "/services/async/{version}/job"
    return [
        Route(base, create_job, methods=["POST"]),
        Route(base + "/{job_id}", job_info, methods=["GET", "POST"]),
        Route(base + "/{job_id}/batch", batches, methods=["GET", "POST"]),
        Route(base + "/{job_id}/batch/{batch_id}", batch_info, methods=["GET"]),
        Route(base + "/{job_id}/batch/{batch_id}/request", batch_request, methods=["GET"]),
        Route(base + "/{job_id}/batch/{batch_id}/result", batch_result, methods=["GET"]),
        Route(base + "/{job_id}/batch/{batch_id}/result/{result_id}", query_result, methods=["GET"]),
    ]
