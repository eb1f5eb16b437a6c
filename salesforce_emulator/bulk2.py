"""Bulk API 2.0: ingest jobs (insert, update, upsert, delete, hardDelete) and query jobs.

A job is processed asynchronously by one daemon worker thread per emulator, as Salesforce
queues jobs: closing an ingest job (or creating a query job) answers at once and the client
polls the job until it is JobComplete, Failed or Aborted.

Memory stays bounded for uploads of a million rows: the uploaded CSV is kept in a file in a
per-emulator temporary folder, rows are parsed and written in chunks of 10,000 (handed to
the store column by column, without a dict per row), and each row's outcome is kept
compactly (an 18-character id, one status byte, and the error text of failed rows only).
Result CSVs are rendered when they are downloaded, by re-reading the upload next to those
outcomes, so the values in them are exactly the uploaded ones.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import csv
import gc
import io
import itertools
import json
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
import weakref
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .ids import make_id
from .schema import ObjectDef
from .soql import SoqlError, compile_query, csv_header, csv_row
from .state import USER_ID, Emulator, sf_error
from .store import Columns, RequestError, RowError, WriteResults
from .values import now_stamp

log = logging.getLogger(__name__)

# Rows handed to Store.write at a time: large enough to amortise the per-call cost, small
# enough that a job can be aborted promptly and memory stays flat.
CHUNK_ROWS = 10_000
# Salesforce pages job lists by 1,000.
LIST_PAGE = 1000

INGEST_OPERATIONS = ("insert", "update", "upsert", "delete", "hardDelete")
QUERY_OPERATIONS = ("query", "queryAll")
DELIMITERS = {"BACKQUOTE": "`", "CARET": "^", "COMMA": ",", "PIPE": "|", "SEMICOLON": ";", "TAB": "\t"}
LINE_ENDINGS = {"LF": "\n", "CRLF": "\r\n"}
TERMINAL = ("JobComplete", "Failed", "Aborted")

# Row outcome codes kept per row.
_FAILED, _CREATED, _UPDATED = 0, 1, 2
# bytes(created flags) -> outcome codes: True (1) is _CREATED, False (0) _UPDATED.
_CREATED_CODES = bytes.maketrans(b"\x00\x01", bytes([_UPDATED, _CREATED]))
_NO_ID = " " * 18
# Job ids come from their own serial range so that they never equal a Bulk API 1.0 job id.
_FIRST_SERIAL = 1_000_000

_READ_BLOCK = 1 << 20


# ---------------------------------------------------------------- jobs


@dataclass
class _Outcomes:
    """Per-row results of an ingest job, in upload order, kept compactly."""

    ids: bytearray = field(default_factory=bytearray)  # 18 ASCII bytes per row, blanks when no id
    codes: bytearray = field(default_factory=bytearray)
    errors: dict[int, str] = field(default_factory=dict)  # row index -> sf__Error text
    # One string object per distinct error text: a million rows failing alike share it.
    texts: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.codes)

    def id_at(self, index: int) -> str:
        return self.ids[index * 18 : index * 18 + 18].decode().strip()


@dataclass
class Job:
    id: str
    kind: str  # "ingest" or "query"
    operation: str
    object: str
    created_date: str
    api_version: float
    line_ending: str
    column_delimiter: str
    state: str
    system_modstamp: str = ""
    external_id_field: str | None = None
    query: str | None = None
    error_message: str | None = None
    uploaded: bool = False
    upload_path: str | None = None
    number_processed: int = 0
    number_failed: int = 0
    processing_ms: int = 0
    # Rows of the upload that got an outcome; the rest are "unprocessed" once the job ends.
    outcomes: _Outcomes = field(default_factory=_Outcomes)
    # Query jobs: the rendered result rows (a CSV file) and the byte offset of each row.
    result_path: str | None = None
    result_header: bytes = b""
    row_offsets: array = field(default_factory=lambda: array("q"))
    abort_requested: bool = False
    # PUT .../batches requests received, refused ones included: the admin listing shows it, so a
    # test can prove that a retried load did not upload its chunk a second time.
    uploads: int = 0

    def __post_init__(self) -> None:
        self.system_modstamp = self.system_modstamp or self.created_date

    @property
    def delimiter(self) -> str:
        return DELIMITERS[self.column_delimiter]

    @property
    def newline(self) -> str:
        return LINE_ENDINGS[self.line_ending]

    def touch(self, state: str | None = None) -> None:
        if state is not None:
            self.state = state
        self.system_modstamp = now_stamp()

    def _head(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": USER_ID,
            "createdDate": self.created_date,
            "systemModstamp": self.system_modstamp,
            "state": self.state,
        }

    def created_info(self, version: str) -> dict[str, Any]:
        """The body of the create-job response (Salesforce's doc example: no jobType, a contentUrl)."""
        info = self._head()
        if self.external_id_field is not None:
            info["externalIdFieldName"] = self.external_id_field
        info.update(concurrencyMode="Parallel", contentType="CSV", apiVersion=self.api_version)
        if self.kind == "ingest":
            info["contentUrl"] = f"services/data/v{version}/jobs/ingest/{self.id}/batches"
        info.update(lineEnding=self.line_ending, columnDelimiter=self.column_delimiter)
        return info

    def summary(self) -> dict[str, Any]:
        """A job as the job lists show it."""
        info = self._head()
        if self.external_id_field is not None:
            info["externalIdFieldName"] = self.external_id_field
        info.update(
            concurrencyMode="Parallel",
            contentType="CSV",
            apiVersion=self.api_version,
            jobType="V2Ingest" if self.kind == "ingest" else "V2Query",
            lineEnding=self.line_ending,
            columnDelimiter=self.column_delimiter,
        )
        return info

    def info(self) -> dict[str, Any]:
        """Get Job Info, keys in Salesforce's order."""
        info = self.summary()
        if self.kind == "ingest":
            # The counters appear once data has been uploaded, as on Salesforce.
            if self.uploaded:
                info["numberRecordsProcessed"] = self.number_processed
                info["numberRecordsFailed"] = self.number_failed
            info.update(
                retries=0,
                totalProcessingTime=self.processing_ms,
                apiActiveProcessingTime=self.processing_ms,
                apexProcessingTime=0,
            )
        else:
            info.update(
                numberRecordsProcessed=self.number_processed,
                retries=0,
                totalProcessingTime=self.processing_ms,
                isPkChunkingSupported=False,
            )
        if self.error_message is not None:
            info["errorMessage"] = self.error_message
        return info


_FAULT_MESSAGE = "InternalServerError : job failed by the emulator's fail_next_bulk_jobs fault"


class _JobFailed(Exception):
    """Ends a job in state Failed with `message` as its errorMessage."""


class _Aborted(Exception):
    """The job was aborted, or deleted by a reset, while the worker had it."""


class Bulk2:
    """All Bulk API 2.0 jobs of one emulator, and the worker thread that processes them."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.lock = threading.Lock()
        self.jobs: dict[str, Job] = {}
        self.serial = _FIRST_SERIAL
        self.queue: queue.Queue[Job] = queue.Queue()
        _sweep_stale_folders()
        self.tmpdir = tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-")
        # The folder goes when the emulator does. A process stopped by a signal skips this
        # (uvicorn re-raises SIGTERM after its shutdown), so the next emulator sweeps it.
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.tmpdir, True)
        self._worker: threading.Thread | None = None
        # The job the worker is on, so that a reset can wait for its chunk in flight.
        self._current: Job | None = None
        self._idle = threading.Condition(self.lock)

    # ------------------------------------------------------------ registry

    def new_job(self, kind: str, **attrs: Any) -> Job:
        with self.lock:
            self.serial += 1
            job = Job(id=make_id("750", self.serial), kind=kind, created_date=now_stamp(), **attrs)
            self.jobs[job.id] = job
        return job

    def get(self, job_id: str, kind: str) -> Job | None:
        with self.lock:
            job = self.jobs.get(job_id)
        return job if job is not None and job.kind == kind else None

    def listing(self, kind: str) -> list[Job]:
        with self.lock:
            return [j for j in self.jobs.values() if j.kind == kind]

    def drop(self, job: Job) -> None:
        with self.lock:
            self.jobs.pop(job.id, None)
        job.abort_requested = True
        _remove(job.upload_path)
        _remove(job.result_path)

    def reset(self) -> None:
        """Forget every job and its files (the admin reset).

        A job in progress stops at its next chunk: wait for the worker to let go of it, and if
        it was busy empty the store once more, so that a chunk in flight cannot survive the reset
        whichever order the caller resets the store and the extensions in.
        """
        with self.lock:
            jobs = list(self.jobs.values())
            self.jobs.clear()
            for job in jobs:
                job.abort_requested = True
            busy = self._current is not None
            self._idle.wait_for(lambda: self._current is None, timeout=60)
        for job in jobs:
            _remove(job.upload_path)
            _remove(job.result_path)
        if busy:
            self.emu.store.reset()

    def transition(self, job: Job, allowed: tuple[str, ...], state: str) -> bool:
        """Move `job` to `state` if it is in one of `allowed` states; atomic against other requests."""
        with self.lock:
            if job.state not in allowed:
                return False
            job.touch(state)
            return True

    def path_for(self, job: Job, what: str) -> str:
        return os.path.join(self.tmpdir, f"{job.id}.{what}")

    # ------------------------------------------------------------ worker

    def submit(self, job: Job) -> None:
        with self.lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="bulk2-worker", daemon=True)
                self._worker.start()
        self.queue.put(job)

    def _run(self) -> None:
        while True:
            job = self.queue.get()
            self._hold(job)
            self.run_one(job)

    def _hold(self, job: Job) -> None:
        """Keep `job` queued while the hold_bulk_jobs fault is on (an abort or a reset lets go of it)."""
        while self.emu.faults.hold_bulk_jobs and not job.abort_requested:
            time.sleep(0.05)

    def run_one(self, job: Job) -> None:
        """Process one queued job on the calling thread (the worker's loop body; tests call it directly)."""
        with self.lock:
            # Aborted, deleted or reset while it waited in the queue: nothing to do.
            if self.jobs.get(job.id) is not job or job.state != "UploadComplete":
                return
            job.touch("InProgress")
            self._current = job
        started = time.perf_counter()
        try:
            self._process(job)
        except Exception:  # the worker must survive anything one job does
            log.exception("bulk 2.0 job %s crashed", job.id)
            self._fail(job, "InternalServerError : the emulator failed while processing the job")
        finally:
            job.processing_ms = int((time.perf_counter() - started) * 1000)
            self.transition(job, ("InProgress",), "JobComplete")
            with self.lock:
                self._current = None
                self._idle.notify_all()

    def _process(self, job: Job) -> None:
        try:
            if job.kind == "ingest":
                self._ingest(job)
            else:
                self._query(job)
        except _JobFailed as exc:
            self._fail(job, str(exc))
        except _Aborted:
            pass

    def _fail(self, job: Job, message: str) -> None:
        with self.lock:
            if job.state == "InProgress":
                job.error_message = message
                job.touch("Failed")

    def _take_fault(self) -> bool:
        with self.emu.lock:
            if self.emu.faults.fail_next_bulk_jobs > 0:
                self.emu.faults.fail_next_bulk_jobs -= 1
                return True
        return False

    # ------------------------------------------------------------ ingest

    def _ingest(self, job: Job) -> None:
        failing = self._take_fault()
        # A Failed job keeps what it processed before it failed (in Salesforce, its finished
        # internal batches); the fault can let it get this far.
        fail_at = self.emu.faults.fail_after_rows if failing else None
        if fail_at is not None and fail_at <= 0:
            raise _JobFailed(_FAULT_MESSAGE)
        obj = self.emu.schema.get(job.object)
        assert obj is not None and job.upload_path is not None
        with _open_upload(job.upload_path) as handle, _ingest_gc():
            header = _read_header(handle, job)
            self._check_header(job, obj, header)
            reader = csv.reader(handle, delimiter=job.delimiter)
            width = len(header)
            store = self.emu.store
            outcomes = job.outcomes
            while True:
                take = CHUNK_ROWS if fail_at is None else min(CHUNK_ROWS, fail_at - job.number_processed)
                if take <= 0:
                    raise _JobFailed(_FAULT_MESSAGE)
                try:
                    records = list(itertools.islice(reader, take))
                except csv.Error as exc:
                    raise _JobFailed(f"ClientInputError : {exc}") from exc
                if not records:
                    break
                if job.abort_requested:
                    raise _Aborted
                # A blank line is no record; a record of the wrong width fails on its own.
                records = [r for r in records if r]
                bad: dict[int, str] = {}
                positions: Sequence[int]
                if all(map(width.__eq__, map(len, records))):
                    # The usual case, with the loop kept in C: every record has the header's width.
                    good = records
                    positions = range(len(records))
                else:
                    good, positions = [], []
                    for i, rec in enumerate(records):
                        if len(rec) == width:
                            good.append(rec)
                            positions.append(i)
                        else:
                            bad[i] = _width_error(len(rec), width)
                # The store takes the chunk column by column: no dict per row.
                rows = Columns(header, list(zip(*good, strict=True)), len(good))
                try:
                    results = (
                        store.write(job.operation, obj, rows, external_id=job.external_id_field, csv=True)
                        if rows
                        else WriteResults([], [], {})
                    )
                except RequestError as exc:
                    raise _JobFailed(f"InvalidBatch : {exc.message}") from exc
                base = len(outcomes)
                failed = len(bad)
                texts = outcomes.texts
                for i, text in bad.items():
                    outcomes.errors[base + i] = texts.setdefault(text, text)
                row_ids = results.ids
                if None in row_ids:
                    row_ids = [_NO_ID if rid is None else rid for rid in row_ids]
                row_codes = bytearray(bytes(results.created).translate(_CREATED_CODES))
                for i, error in results.errors.items():
                    text = error.as_bulk()
                    outcomes.errors[base + positions[i]] = texts.setdefault(text, text)
                    row_codes[i] = _FAILED
                failed += len(results.errors)
                if bad:
                    ids = [_NO_ID] * len(records)
                    codes = bytearray(len(records))
                    for pos, rid, code in zip(positions, row_ids, row_codes, strict=True):
                        ids[pos] = rid
                        codes[pos] = code
                else:
                    ids, codes = row_ids, row_codes
                # ids first: a concurrent results download trusts len(codes) rows to have ids.
                outcomes.ids += "".join(ids).encode()
                outcomes.codes += codes
                job.number_processed += len(records)
                job.number_failed += failed
                if job.abort_requested:
                    raise _Aborted
        if fail_at is not None:
            raise _JobFailed(_FAULT_MESSAGE)

    def _check_header(self, job: Job, obj: ObjectDef, header: list[str]) -> None:
        """Fail the job the way Salesforce does for a header it cannot map.

        The store checks columns too, but its RequestError names them REST's way; Bulk API 2.0
        reports "InvalidBatch : Field name not found : X" in the job's errorMessage.
        """
        if not header or header == [""]:
            raise _JobFailed("InvalidBatch : No header found in the uploaded data")
        seen: set[str] = set()
        for name in header:
            if name.lower() in seen:
                raise _JobFailed(f"InvalidBatch : Duplicate field name: {name}")
            seen.add(name.lower())
            if job.operation in ("delete", "hardDelete"):
                continue
            known = obj.relationship(name.split(".", 1)[0]) if "." in name else obj.field(name)
            if known is None:
                raise _JobFailed(f"InvalidBatch : Field name not found : {name}")

    # ------------------------------------------------------------ query

    def _query(self, job: Job) -> None:
        assert job.query is not None
        try:
            cq = compile_query(job.query, self.emu.schema, include_deleted=job.operation == "queryAll")
        except SoqlError as exc:  # checked at creation; the schema cannot change, but be safe
            raise _JobFailed(f"{exc.error_code} : {exc.message}") from exc
        rows = self.emu.store.execute(cq.sql, cq.params)
        if job.abort_requested:
            raise _Aborted
        path = self.path_for(job, "results.csv")
        job.result_header = _quoted_line(csv_header(cq), job.delimiter, job.newline).encode()
        offsets = array("q")
        position = 0
        with open(path, "wb") as out:
            block: list[bytes] = []
            for row in rows:
                line = _quoted_line(csv_row(cq, row), job.delimiter, job.newline).encode()
                offsets.append(position)
                position += len(line)
                block.append(line)
                if len(block) >= CHUNK_ROWS:
                    out.write(b"".join(block))
                    block.clear()
            out.write(b"".join(block))
        offsets.append(position)
        job.result_path = path
        job.row_offsets = offsets
        job.number_processed = len(rows)


# ---------------------------------------------------------------- garbage collection

# An ingest allocates millions of container objects that live for one chunk (csv.reader's
# record lists above all), none of them in reference cycles. With the default gen0 threshold
# of 700 the collector runs a dozen times per chunk, and every record list lives through
# those runs, so it is promoted until full collections walk everything the server holds
# (its modules, routes and schema) every few chunks. While any ingest runs, the objects that
# exist at its start are frozen out of collections (gc.freeze) and gen0 collects every
# 100,000 allocations instead of 700; cycles are still collected, only less often. Both are
# restored when the last ingest ends (tests run several emulators in one process).
_GC_LOCK = threading.Lock()
_gc_ingests = 0
_gc_saved: tuple[int, int, int] = (700, 10, 10)
_GC_INGEST_THRESHOLD = 100_000


@contextlib.contextmanager
def _ingest_gc() -> Iterator[None]:
    global _gc_ingests, _gc_saved
    with _GC_LOCK:
        if _gc_ingests == 0:
            _gc_saved = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(_GC_INGEST_THRESHOLD, *_gc_saved[1:])
        _gc_ingests += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _gc_ingests -= 1
            if _gc_ingests == 0:
                gc.set_threshold(*_gc_saved)
                gc.unfreeze()


# ---------------------------------------------------------------- files


_TMP_PREFIX = "sfemu-bulk2-"


def _sweep_stale_folders() -> None:
    """Remove the job folders of emulator processes that are gone."""
    root = tempfile.gettempdir()
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        pid_text = name[len(_TMP_PREFIX) :].split("-", 1)[0]
        if not name.startswith(_TMP_PREFIX) or not pid_text.isdigit():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        except OSError:
            pass  # alive, under another user


# ---------------------------------------------------------------- CSV helpers


def _remove(path: str | None) -> None:
    if path:
        with contextlib.suppress(OSError):
            os.remove(path)


@contextlib.contextmanager
def _open_upload(path: str) -> Iterator[io.TextIOWrapper]:
    # utf-8-sig drops an optional BOM; newline="" keeps embedded line breaks for the csv module.
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
        yield handle


def _read_header(handle: io.TextIOWrapper, job: Job) -> list[str]:
    """The header record, after checking the upload's line ending against the job's."""
    first = handle.readline()
    if (
        first.endswith("\r\n")
        and job.line_ending == "LF"
        or first.endswith("\n")
        and not first.endswith("\r\n")
        and job.line_ending == "CRLF"
    ):
        raise _JobFailed(
            f"ClientInputError : LineEnding is invalid on user data. Current LineEnding setting is {job.line_ending}"
        )
    try:
        header = next(csv.reader([first], delimiter=job.delimiter), [])
    except csv.Error as exc:
        raise _JobFailed(f"ClientInputError : {exc}") from exc
    return [h.strip() for h in header]


def _width_error(found: int, expected: int) -> str:
    if found > expected:
        return RowError("TooManyColumns", f"Too many columns: found {found}, expected {expected}").as_bulk()
    return RowError("TooFewColumns", f"Too few columns: found {found}, expected {expected}").as_bulk()


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def _quoted_line(values: list[str], delimiter: str, newline: str) -> str:
    return delimiter.join(['"' + v.replace('"', '""') + '"' for v in values]) + newline


def _header_line(prefix: list[str], header: list[str], delimiter: str, newline: str) -> str:
    """Results header: the sf__ columns quoted, the upload's columns as uploaded (quoted only if needed)."""
    names = [_quote(p) for p in prefix]
    for name in header:
        needs = delimiter in name or '"' in name or "\n" in name or "\r" in name
        names.append(_quote(name) if needs else name)
    return delimiter.join(names) + newline


def _result_stream(bulk: Bulk2, job: Job, kind: str) -> Iterator[bytes]:
    """Render successfulResults, failedResults or unprocessedrecords from the upload and the outcomes."""
    d, nl = job.delimiter, job.newline
    prefix = {"success": ["sf__Id", "sf__Created"], "failed": ["sf__Id", "sf__Error"], "unprocessed": []}[kind]
    if job.upload_path is None or not os.path.exists(job.upload_path):
        yield _header_line(prefix, [], d, nl).encode() if prefix else b""
        return
    outcomes = job.outcomes
    done = len(outcomes)
    ended = job.state in ("Failed", "Aborted")
    with _open_upload(job.upload_path) as handle:
        first = handle.readline()
        header = [h.strip() for h in next(csv.reader([first], delimiter=d), [])]
        yield _header_line(prefix, header, d, nl).encode()
        if (kind == "failed" and not outcomes.errors) or (kind == "unprocessed" and not ended):
            return  # no line to render: spare re-reading the whole upload
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=d, lineterminator=nl, quoting=csv.QUOTE_ALL)
        try:
            records = (r for r in csv.reader(handle, delimiter=d) if r)
            for index, rec in enumerate(records):
                if index >= done:
                    if kind != "unprocessed" or not ended:
                        break
                    writer.writerow(rec)
                elif kind == "success":
                    code = outcomes.codes[index]
                    if code != _FAILED:
                        writer.writerow([outcomes.id_at(index), "true" if code == _CREATED else "false", *rec])
                elif kind == "failed":
                    error = outcomes.errors.get(index)
                    if error is not None:
                        writer.writerow([outcomes.id_at(index), error, *rec])
                if buffer.tell() > _READ_BLOCK:
                    yield buffer.getvalue().encode()
                    buffer.seek(0)
                    buffer.truncate()
        except csv.Error:
            pass  # the job failed on the same error; what was rendered so far stands
        yield buffer.getvalue().encode()


# ---------------------------------------------------------------- routes


def _bulk(request: Request) -> Bulk2:
    emu: Emulator = request.app.state.emulator
    return emu.extensions["bulk2"]


def _not_found() -> Response:
    return sf_error(404, "NOT_FOUND", "The requested resource does not exist")


async def _json(request: Request) -> dict[str, Any] | Response:
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except ValueError as exc:
        return sf_error(400, "JSON_PARSER_ERROR", f"Unexpected character: {exc}")
    if not isinstance(body, dict):
        return sf_error(400, "JSON_PARSER_ERROR", "Cannot deserialize instance of job request from a non-object")
    return body


def _enum(body: dict[str, Any], key: str, allowed: tuple[str, ...] | dict[str, str], default: str) -> str | Response:
    value = body.get(key, default)
    if value is None:
        value = default
    if value not in allowed:
        return sf_error(
            400,
            "JSON_PARSER_ERROR",
            f'Cannot deserialize value of type `{key}` from String "{value}": '
            f"value not one of declared Enum instance names: [{', '.join(allowed)}]",
        )
    return value


def _csv_options(body: dict[str, Any]) -> tuple[str, str] | Response:
    content_type = _enum(body, "contentType", ("CSV",), "CSV")
    if isinstance(content_type, Response):
        return content_type
    delimiter = _enum(body, "columnDelimiter", DELIMITERS, "COMMA")
    if isinstance(delimiter, Response):
        return delimiter
    line_ending = _enum(body, "lineEnding", LINE_ENDINGS, "LF")
    if isinstance(line_ending, Response):
        return line_ending
    return delimiter, line_ending


async def create_ingest(request: Request) -> Response:
    bulk = _bulk(request)
    body = await _json(request)
    if isinstance(body, Response):
        return body
    operation = _enum(body, "operation", INGEST_OPERATIONS, "")
    if isinstance(operation, Response):
        return operation
    name = body.get("object")
    if not isinstance(name, str) or not name:
        return sf_error(400, "INVALIDJOB", "Object is required to create a job")
    obj = bulk.emu.schema.get(name)
    if obj is None:
        return sf_error(400, "INVALIDENTITY", f"sObject type '{name}' is not supported.")
    options = _csv_options(body)
    if isinstance(options, Response):
        return options
    external_id = body.get("externalIdFieldName")
    if operation == "upsert":
        if not external_id:
            return sf_error(
                400,
                "INVALIDJOB",
                f"External ID was blank for {obj.name}. An External ID must be specified for upsert.",
            )
        ext_field = obj.field(str(external_id))
        if ext_field is None or not (ext_field.external_id or ext_field.name == "Id"):
            return sf_error(
                400,
                "INVALIDJOB",
                f"Field name provided, {external_id} is not an External ID or indexed field for {obj.name}"
                if ext_field is not None
                else f"InvalidJob : Field name provided, {external_id} does not exist on {obj.name}",
            )
        external_id = ext_field.name
    else:
        external_id = None
    delimiter, line_ending = options
    job = bulk.new_job(
        "ingest",
        operation=operation,
        object=obj.name,
        api_version=float(request.path_params["version"]),
        line_ending=line_ending,
        column_delimiter=delimiter,
        state="Open",
        external_id_field=external_id,
    )
    return JSONResponse(job.created_info(request.path_params["version"]))


async def create_query(request: Request) -> Response:
    bulk = _bulk(request)
    body = await _json(request)
    if isinstance(body, Response):
        return body
    operation = _enum(body, "operation", QUERY_OPERATIONS, "")
    if isinstance(operation, Response):
        return operation
    soql = body.get("query")
    if not isinstance(soql, str) or not soql.strip():
        return sf_error(400, "INVALIDJOB", "Query is required to create a query job")
    options = _csv_options(body)
    if isinstance(options, Response):
        return options
    try:
        cq = compile_query(soql, bulk.emu.schema, include_deleted=operation == "queryAll")
    except SoqlError as exc:
        return sf_error(400, exc.error_code, exc.message)
    if cq.is_count:
        # Bulk API 2.0 query does not support aggregate functions such as COUNT().
        return sf_error(400, "FEATURE_NOT_ENABLED", "Bulk API 2.0 query jobs do not support COUNT()")
    delimiter, line_ending = options
    job = bulk.new_job(
        "query",
        operation=operation,
        object=cq.sobject,
        api_version=float(request.path_params["version"]),
        line_ending=line_ending,
        column_delimiter=delimiter,
        state="UploadComplete",
        query=soql,
    )
    bulk.submit(job)
    return JSONResponse(job.created_info(request.path_params["version"]))


def _list(request: Request, kind: str) -> Response:
    bulk = _bulk(request)
    jobs = bulk.listing(kind)
    job_type = request.query_params.get("jobType")
    if job_type:
        jobs = [j for j in jobs if j.summary()["jobType"] == job_type]
    start = 0
    locator = request.query_params.get("queryLocator")
    if locator:
        start = _decode_locator(locator) or 0
    page = jobs[start : start + LIST_PAGE]
    done = start + LIST_PAGE >= len(jobs)
    version = request.path_params["version"]
    next_url = (
        None if done else f"/services/data/v{version}/jobs/{kind}?queryLocator={_encode_locator(start + LIST_PAGE)}"
    )
    return JSONResponse({"done": done, "records": [j.summary() for j in page], "nextRecordsUrl": next_url})


async def ingest_jobs(request: Request) -> Response:
    if request.method == "POST":
        return await create_ingest(request)
    return _list(request, "ingest")


async def query_jobs(request: Request) -> Response:
    if request.method == "POST":
        return await create_query(request)
    return _list(request, "query")


async def _job_resource(request: Request, kind: str) -> Response:
    bulk = _bulk(request)
    job = bulk.get(request.path_params["job_id"], kind)
    if job is None:
        return _not_found()
    if request.method == "GET":
        return JSONResponse(job.info())
    if request.method == "DELETE":
        deletable = ("UploadComplete", *TERMINAL) if kind == "ingest" else TERMINAL
        if job.state not in deletable:
            return sf_error(400, "INVALIDJOBSTATE", f"Deleting a job in state {job.state} is not allowed")
        bulk.drop(job)
        return Response(status_code=204)
    body = await _json(request)
    if isinstance(body, Response):
        return body
    state = body.get("state")
    if state == "Aborted":
        if not bulk.transition(job, ("Open", "UploadComplete", "InProgress"), "Aborted"):
            return sf_error(400, "INVALIDJOBSTATE", "Aborting already Completed Job not allowed")
        job.abort_requested = True
    elif state == "UploadComplete" and kind == "ingest":
        if not bulk.transition(job, ("Open",), "UploadComplete"):
            return sf_error(400, "INVALIDJOBSTATE", f"Closing a job in state {job.state} is not allowed")
        job.uploaded = True
        if job.upload_path is None:
            # Salesforce accepts the close and then fails the job for want of data.
            job.error_message = "InvalidBatch : No content was uploaded for this job"
            job.touch("Failed")
        else:
            bulk.submit(job)
    else:
        return sf_error(400, "INVALIDJOBSTATE", f"Invalid state transition from {job.state} to {state}")
    return JSONResponse(job.info())


async def ingest_job(request: Request) -> Response:
    return await _job_resource(request, "ingest")


async def query_job(request: Request) -> Response:
    return await _job_resource(request, "query")


async def upload(request: Request) -> Response:
    bulk = _bulk(request)
    job = bulk.get(request.path_params["job_id"], "ingest")
    if job is None:
        return _not_found()
    with bulk.lock:
        job.uploads += 1
    if job.state != "Open":
        return sf_error(400, "INVALIDJOBSTATE", f"Uploading data to a job in state {job.state} is not allowed")
    if job.upload_path is not None:
        # Bulk API 2.0 takes one upload per job (the typo is Salesforce's own).
        return sf_error(
            400,
            "BULK_API_ERROR",
            f"Found multipe contents for job: <{job.id[:15]}>, please 'Close' / 'Abort' / 'Delete' the current Job "
            "then create a new Job and make sure you only do 'PUT' once on a given Job.",
        )
    limit = bulk.emu.max_upload_bytes
    path = bulk.path_for(job, "upload.csv")
    size = 0
    with open(path, "wb") as out:
        # Read the whole body even past the limit: answering mid-upload makes clients see a reset.
        async for part in request.stream():
            size += len(part)
            if size <= limit:
                out.write(part)
    if size > limit:
        _remove(path)
        return sf_error(400, "CLIENTINPUTERROR", f"Failed to read request. Exceeded max size limit of {limit}")
    if size == 0:
        _remove(path)
        return sf_error(400, "CLIENTINPUTERROR", "Content is empty")
    with bulk.lock:
        if job.upload_path is not None or job.state != "Open":  # a concurrent PUT won
            _remove(path)
            return sf_error(400, "INVALIDJOBSTATE", "The job's data was uploaded already")
        job.upload_path = path
        job.uploaded = True
    job.touch()
    return Response(status_code=201)


async def ingest_results(request: Request) -> Response:
    bulk = _bulk(request)
    job = bulk.get(request.path_params["job_id"], "ingest")
    if job is None:
        return _not_found()
    kind = {
        "successfulresults": "success",
        "failedresults": "failed",
        "unprocessedrecords": "unprocessed",
    }.get(request.path_params["result"].lower())
    if kind is None:
        return _not_found()
    return StreamingResponse(_result_stream(bulk, job, kind), media_type="text/csv")


def _encode_locator(index: int) -> str:
    # Salesforce's locators are opaque; base64 of the row offset looks like theirs.
    return base64.b64encode(str(index).encode()).decode().rstrip("=")


def _decode_locator(locator: str) -> int | None:
    try:
        text = base64.b64decode(locator + "=" * (-len(locator) % 4), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return int(text) if text.isdigit() else None


async def query_results(request: Request) -> Response:
    bulk = _bulk(request)
    job = bulk.get(request.path_params["job_id"], "query")
    if job is None:
        return _not_found()
    if job.state != "JobComplete" or job.result_path is None:
        return sf_error(412, "JOB_NOT_COMPLETE", f"The job is not complete: it is {job.state}")
    total = len(job.row_offsets) - 1
    start = 0
    locator = request.query_params.get("locator")
    if locator and locator != "null":
        decoded = _decode_locator(locator)
        if decoded is None or decoded > total:
            return sf_error(400, "INVALIDLOCATOR", f"Invalid locator: {locator}")
        start = decoded
    max_records = request.query_params.get("maxRecords")
    count = total - start
    if max_records:
        if not max_records.isdigit() or int(max_records) < 1:
            return sf_error(400, "INVALIDMAXRECORDS", f"Invalid maxRecords: {max_records}")
        count = min(count, int(max_records))
    end = start + count
    headers = {
        "Sforce-NumberOfRecords": str(count),
        "Sforce-Locator": _encode_locator(end) if end < total else "null",
    }
    page = _byte_range(job.result_path, job.result_header, job.row_offsets[start], job.row_offsets[end])
    return StreamingResponse(page, media_type="text/csv", headers=headers)


def _byte_range(path: str, header: bytes, begin: int, end: int) -> Iterator[bytes]:
    """A page of query results, read in blocks: a page without maxRecords can be every row."""
    yield header
    with open(path, "rb") as handle:
        handle.seek(begin)
        left = end - begin
        while left > 0:
            block = handle.read(min(left, _READ_BLOCK))
            if not block:
                break
            left -= len(block)
            yield block


async def admin_ingest_jobs(request: Request) -> Response:
    """Every ingest job with its state and upload count (an admin endpoint: no session, no faults)."""
    bulk = _bulk(request)
    jobs = [
        {"id": j.id, "object": j.object, "operation": j.operation, "state": j.state, "uploads": j.uploads}
        for j in bulk.listing("ingest")
    ]
    return JSONResponse({"jobs": jobs})


def routes(emu: Emulator) -> list[Route]:
    emu.extensions["bulk2"] = Bulk2(emu)
    base = "/services/data/v{version}/jobs"
    return [
        # Outside /services/data: the gate neither checks a session nor injects faults here.
        Route("/__emulator/bulk2/ingest", admin_ingest_jobs, methods=["GET"]),
        Route(f"{base}/ingest", ingest_jobs, methods=["GET", "POST"]),
        Route(f"{base}/ingest/{{job_id}}", ingest_job, methods=["GET", "PATCH", "DELETE"]),
        Route(f"{base}/ingest/{{job_id}}/batches", upload, methods=["PUT"]),
        Route(f"{base}/ingest/{{job_id}}/{{result}}", ingest_results, methods=["GET"]),
        Route(f"{base}/query", query_jobs, methods=["GET", "POST"]),
        Route(f"{base}/query/{{job_id}}", query_job, methods=["GET", "PATCH", "DELETE"]),
        Route(f"{base}/query/{{job_id}}/results", query_results, methods=["GET"]),
    ]
