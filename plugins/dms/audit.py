"""The audit store: one Cloudant/CouchDB document per run and per chunk, with deterministic ids.

A document's ``_id`` is derived from (dag_id, run_id, object, chunk), so a retried task
overwrites its own record instead of adding a second one, and a run's chunks are read back
in order with one ``_all_docs`` key range (pouchdb-server's ``_find`` has no bookmark, and
a key range is cheaper than a query on CouchDB too).

Failures are classified for the caller: :class:`AuditUnavailable` (connection refused,
timeouts, 429 and 5xx, still failing after bounded retries, or a document that stays
contended) is retriable; :class:`AuditRefused` (any other refusal) is fatal.

Retries are bounded by a number of attempts, or, with ``retry_seconds``, by time: the
operators give a restarting store a minute (the connection extra ``retry_seconds``) before
their task fails, and Airflow's retry of the task writes the same records again.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from dms.errors import FatalError, RetriableError

if TYPE_CHECKING:
    from ibm_cloud_sdk_core import DetailedResponse
    from ibmcloudant import CloudantV1

log = logging.getLogger(__name__)

DEFAULT_DATABASE = "dms_audit"
# Fields every audit document carries, and the Mango indexes that serve queries on them.
INDEXED_FIELDS = ("type", "dag_id", "run_id", "object")
# IBM Cloudant refuses documents over 1 MB (CouchDB's default limit is 8 MB); failing here
# names the document instead of surfacing a 413 from the server.
MAX_DOCUMENT_BYTES = 1_000_000
# Cloudant takes requests up to 11 MB; attachments are base64 in the request (gzip first).
MAX_ATTACHMENT_BYTES = 10_000_000
# Zero-padded so that chunk ids sort in chunk order; the padding bounds the index.
MAX_CHUNK_INDEX = 999_999
_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
# Characters kept as they are in an id part; everything else, notably ':' (the separator),
# '/' and '%', is percent-encoded, so that distinct parts never give the same id or prefix.
_ID_SAFE = "-._~+=,;!$&'()*@"
# Key fragments that mark a secret, matched on the key lowercased without '_' and '-'.
_SECRET_KEY_MARKERS = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "session",
    "apikey",
    "authorization",
    "credential",
    "privatekey",
    "cookie",
)
# user:password@ in a URL inside a value (a DSN in a driver's error message, say).
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/:@]+):[^\s/@]+@")


class AuditUnavailable(RetriableError):
    """The audit store did not answer usably after bounded retries; retrying the task may help."""

    def __init__(self, message: str, *, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class AuditRefused(FatalError):
    """The audit store (or this module, before sending) refused the request; retrying will not help."""

    def __init__(self, message: str, *, status_code: int | None = None, error: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error = error


def _id_part(name: str, value: str) -> str:
    if not isinstance(value, str) or not value:
        raise AuditRefused(f"audit id part {name!r} must be a non-empty string, got {value!r}")
    return quote(value, safe=_ID_SAFE)


def _chunk_part(chunk_index: int) -> str:
    if isinstance(chunk_index, bool) or not isinstance(chunk_index, int) or not 0 <= chunk_index <= MAX_CHUNK_INDEX:
        raise AuditRefused(f"chunk index must be an int from 0 to {MAX_CHUNK_INDEX}, got {chunk_index!r}")
    return f"{chunk_index:06d}"


def run_doc_id(dag_id: str, run_id: str) -> str:
    """The id of a run's audit document: ``run:{dag_id}:{run_id}``, parts percent-encoded."""
    return f"run:{_id_part('dag_id', dag_id)}:{_id_part('run_id', run_id)}"


def run_doc_prefix(dag_id: str | None = None) -> str:
    """The id prefix shared by the run documents (of one DAG, if given)."""
    return "run:" if dag_id is None else f"run:{_id_part('dag_id', dag_id)}:"


def chunk_doc_id(dag_id: str, run_id: str, object_name: str, chunk_index: int) -> str:
    """The id of a chunk's audit document: ``chunk:{dag_id}:{run_id}:{object}:{chunk:06d}``."""
    return f"{chunk_doc_prefix(dag_id, run_id, object_name)}{_chunk_part(chunk_index)}"


def chunk_doc_prefix(dag_id: str, run_id: str, object_name: str | None = None) -> str:
    """The id prefix shared by a run's chunk documents (of one object, if given)."""
    prefix = f"chunk:{_id_part('dag_id', dag_id)}:{_id_part('run_id', run_id)}:"
    return prefix if object_name is None else f"{prefix}{_id_part('object', object_name)}:"


def ledger_doc_id(dag_id: str, run_id: str, object_name: str, chunk_index: int) -> str:
    """The id of a chunk's load ledger mirror: ``ledger:{dag_id}:{run_id}:{object}:{chunk:06d}``."""
    return (
        f"ledger:{_id_part('dag_id', dag_id)}:{_id_part('run_id', run_id)}:{_id_part('object', object_name)}:"
        f"{_chunk_part(chunk_index)}"
    )


def epoch_doc_id(dag_id: str, run_id: str, object_name: str) -> str:
    """The id of an object's load epoch in a run: ``epoch:{dag_id}:{run_id}:{object}``."""
    return f"epoch:{_id_part('dag_id', dag_id)}:{_id_part('run_id', run_id)}:{_id_part('object', object_name)}"


def _is_secret_key(key: str) -> bool:
    normalized = key.lower().replace("_", "").replace("-", "")
    return any(marker in normalized for marker in _SECRET_KEY_MARKERS)


def scrub_secrets(value: Any, path: str = "") -> tuple[Any, list[str]]:
    """A copy of ``value`` without secret-looking keys at any depth, and the paths removed.

    URL passwords inside strings are masked too. The input is never modified.
    """
    removed: list[str] = []
    if isinstance(value, dict):
        clean: dict[str, Any] = {}
        for key, item in value.items():
            key_path = f"{path}.{key}" if path else str(key)
            if _is_secret_key(str(key)):
                removed.append(key_path)
                continue
            clean[key], inner = scrub_secrets(item, key_path)
            removed.extend(inner)
        return clean, removed
    if isinstance(value, list | tuple):
        items = []
        for index, item in enumerate(value):
            clean_item, inner = scrub_secrets(item, f"{path}[{index}]")
            items.append(clean_item)
            removed.extend(inner)
        return items, removed
    if isinstance(value, str) and "@" in value:
        masked = _URL_PASSWORD.sub(r"\1:***@", value)
        if masked != value:
            removed.append(f"{path} (URL password)")
        return masked, removed
    return value, removed


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Audit:
    """Run and chunk records of DMS migrations in one Cloudant/CouchDB database.

    Built from the client that :class:`dms.hooks.cloudant.DmsCloudantHook` returns::

        audit = Audit(DmsCloudantHook("cloudant_default").get_conn())
        audit.write_chunk(dag_id, run_id, "Account", 3, {"rows": 5000, "loaded": 4998})

    Every write scrubs secret-looking keys, creates the database and its indexes on first
    use, and upserts: the same ids give the same document, at its newest content.
    """

    #: transient failures are retried this many times in all, with exponential backoff
    max_attempts: int = 4
    backoff_seconds: float = 0.25
    backoff_max_seconds: float = 4.0
    #: a document others keep updating is re-read and re-written at most this many times
    max_conflict_attempts: int = 10
    #: when set, transient failures are retried for this many seconds instead of max_attempts times
    retry_seconds: float | None = None

    def __init__(
        self,
        client: CloudantV1,
        database: str = DEFAULT_DATABASE,
        *,
        max_attempts: int | None = None,
        backoff_seconds: float | None = None,
        retry_seconds: float | None = None,
    ) -> None:
        self.client = client
        self.database = database
        if max_attempts is not None:
            if max_attempts < 1:
                raise ValueError("max_attempts must be at least 1")
            self.max_attempts = max_attempts
        if backoff_seconds is not None:
            self.backoff_seconds = backoff_seconds
        if retry_seconds is not None:
            if retry_seconds < 0:
                raise ValueError("retry_seconds must not be negative")
            self.retry_seconds = retry_seconds
        self._ensured = False

    @classmethod
    def from_conn_id(cls, cloudant_conn_id: str = "cloudant_default", database: str = DEFAULT_DATABASE) -> Audit:
        """An Audit on the client of a DmsCloudantHook for this connection."""
        from dms.hooks.cloudant import DmsCloudantHook

        return cls(DmsCloudantHook(cloudant_conn_id=cloudant_conn_id).get_conn(), database)

    # -- the database -------------------------------------------------------------------

    def ensure_database(self) -> None:
        """Create the database and its Mango indexes if missing; safe to call any number of times."""
        try:
            self._call("check the database", lambda: self.client.head_database(db=self.database))
        except AuditRefused as exc:
            if exc.status_code != 404:
                raise
            try:
                self._call("create the database", lambda: self.client.put_database(db=self.database))
            except AuditRefused as exc_put:
                # Another worker created it between our HEAD and PUT.
                if exc_put.status_code != 412:
                    raise
        for field in INDEXED_FIELDS:
            self._ensure_index(field)
        self._ensured = True

    def _ensure_index(self, field: str) -> None:
        from ibmcloudant.cloudant_v1 import IndexDefinition, IndexField

        # One design document per index: workers creating indexes at the same time then
        # never contend for the same design document.
        index = IndexDefinition(fields=[IndexField.from_dict({field: "asc"})])
        try:
            self._call(
                f"create the index on {field}",
                lambda: self.client.post_index(
                    db=self.database, index=index, ddoc=f"dms-audit-{field}", name=f"by-{field}", type="json"
                ),
            )
        except AuditRefused as exc:
            if exc.status_code != 409:  # created concurrently by another worker
                raise

    def _ensure_once(self) -> None:
        if not self._ensured:
            self.ensure_database()

    # -- writing ------------------------------------------------------------------------

    def write_run(self, dag_id: str, run_id: str, body: dict[str, Any]) -> str:
        """Write (or overwrite) a run's record; return its new revision."""
        meta = {"type": "run", "dag_id": dag_id, "run_id": run_id}
        return self.upsert(run_doc_id(dag_id, run_id), {**body, **meta, "updated_at": _now()})

    def write_chunk(
        self,
        dag_id: str,
        run_id: str,
        object_name: str,
        chunk_index: int,
        body: dict[str, Any],
        attachments: dict[str, bytes] | None = None,
    ) -> str:
        """Write (or overwrite) a chunk's record, with its attachments; return its new revision."""
        doc_id = chunk_doc_id(dag_id, run_id, object_name, chunk_index)
        meta = {"type": "chunk", "dag_id": dag_id, "run_id": run_id, "object": object_name, "chunk": chunk_index}
        return self.upsert(doc_id, {**body, **meta, "updated_at": _now()}, attachments)

    # -- the load ledger's durable mirror -------------------------------------------------
    #
    # The ledger that keeps a retried load from sending a chunk twice lives in Redis, with the
    # stage. These documents keep what a re-run needs when Redis has lost it: the Bulk jobs a
    # chunk's load created, and whether its Collections calls were sent. Each belongs to an
    # epoch of the object's load in the run; a full refresh starts a new epoch, so what an
    # earlier epoch recorded (mirrors and final chunk records alike) no longer counts.

    def get_epoch(self, dag_id: str, run_id: str, object_name: str) -> str:
        """The object's load epoch in the run: "" until a full refresh starts a new one."""
        doc = self._get(epoch_doc_id(dag_id, run_id, object_name))
        return str(doc.get("epoch") or "") if doc else ""

    def new_epoch(self, dag_id: str, run_id: str, object_name: str) -> str:
        """Start a new load epoch for the object in the run (a full refresh); return it."""
        epoch = uuid.uuid4().hex
        meta = {"type": "epoch", "dag_id": dag_id, "run_id": run_id, "object": object_name}
        self.upsert(epoch_doc_id(dag_id, run_id, object_name), {**meta, "epoch": epoch, "updated_at": _now()})
        return epoch

    def get_ledger(self, dag_id: str, run_id: str, object_name: str, chunk_index: int) -> dict[str, Any] | None:
        """A chunk's ledger mirror (``epoch`` and ``ledgers``: ledger name -> fields), or None."""
        return self._get(ledger_doc_id(dag_id, run_id, object_name, chunk_index))

    def write_ledger(
        self,
        dag_id: str,
        run_id: str,
        object_name: str,
        chunk_index: int,
        epoch: str,
        ledger: str,
        fields: dict[str, str],
    ) -> dict[str, dict[str, str]]:
        """Merge ``fields`` into the entry ``ledger`` of the chunk's mirror; return the mirror's entries.

        Entries of another epoch are dropped. Merged on the stored revision, so a concurrent
        writer's entries (a relink's next to the load's) are kept.
        """
        meta = {"type": "ledger", "dag_id": dag_id, "run_id": run_id, "object": object_name, "chunk": chunk_index}
        merged: dict[str, dict[str, str]] = {}

        def body(current: dict[str, Any] | None) -> dict[str, Any]:
            entries = dict(current.get("ledgers") or {}) if current and current.get("epoch") == epoch else {}
            entries[ledger] = {**entries.get(ledger, {}), **fields}
            merged.clear()
            merged.update(entries)
            return {**meta, "epoch": epoch, "ledgers": entries, "updated_at": _now()}

        self._put(ledger_doc_id(dag_id, run_id, object_name, chunk_index), body)
        return merged

    def get_attachment(self, doc_id: str, name: str) -> bytes | None:
        """An attachment's bytes, or None when the document or the attachment does not exist."""
        try:
            stream = self._call(
                f"read {doc_id}/{name}",
                lambda: self.client.get_attachment(db=self.database, doc_id=doc_id, attachment_name=name),
            )
        except AuditRefused as exc:
            if exc.status_code == 404:
                return None
            raise
        # The SDK hands binary bodies over as the requests Response (or a file-like object).
        if hasattr(stream, "content"):
            return stream.content
        return stream.read() if hasattr(stream, "read") else bytes(stream)

    def upsert(self, doc_id: str, body: dict[str, Any], attachments: dict[str, bytes] | None = None) -> str:
        """Replace the document ``doc_id`` with ``body`` (secrets scrubbed); return the new revision.

        ``attachments`` (name -> bytes; ``.gz`` names are stored as gzip, others as CSV) are
        written inline in the same request and replace the previous ones, so a document and
        its attachments always come from the same write.

        Reads the current revision and writes on top of it; when another writer got there
        first (409) it reads again, so concurrent writers never fail and the last one wins.
        """
        if not doc_id or doc_id.startswith("_"):
            raise AuditRefused(f"audit document id {doc_id!r} is empty or starts with '_' (reserved by CouchDB)")
        reserved = sorted(key for key in body if str(key).startswith("_"))
        if reserved:
            raise AuditRefused(f"audit document {doc_id!r}: body keys {reserved} are reserved by CouchDB")
        document, removed = scrub_secrets(body)
        if removed:
            log.warning("audit document %s: left out secret-looking fields %s", doc_id, removed)
        size = len(json.dumps(document, default=str).encode())
        if size > MAX_DOCUMENT_BYTES:
            raise AuditRefused(
                f"audit document {doc_id!r} is {size} bytes, over the {MAX_DOCUMENT_BYTES}-byte limit; "
                "keep row-level detail out of the audit record"
            )
        inline: dict[str, Any] = {}
        for name, data in (attachments or {}).items():
            kind = "application/gzip" if name.endswith(".gz") else "text/csv"
            inline[name] = {"content_type": kind, "data": base64.b64encode(data).decode("ascii")}
        attached = sum(len(a["data"]) for a in inline.values())
        if attached > MAX_ATTACHMENT_BYTES:
            raise AuditRefused(
                f"audit document {doc_id!r}: attachments of {attached} bytes are over the {MAX_ATTACHMENT_BYTES}-byte "
                "limit; use a smaller chunk_rows"
            )
        return self._put(doc_id, lambda _current: {**document, **({"_attachments": inline} if inline else {})})

    def _put(self, doc_id: str, body: Callable[[dict[str, Any] | None], dict[str, Any]]) -> str:
        """Write ``body(current document)`` over the current revision, again on a conflict; the new revision."""
        self._ensure_once()
        for attempt in range(1, self.max_conflict_attempts + 1):
            current = self._get(doc_id)
            payload = {**body(current), "_id": doc_id}
            if current is not None:
                payload["_rev"] = current["_rev"]
            try:
                result = self._call(
                    f"write {doc_id}",
                    lambda payload=payload: self.client.put_document(db=self.database, doc_id=doc_id, document=payload),
                )
                return result["rev"]
            except AuditRefused as exc:
                if exc.status_code != 409:
                    raise
            # Full-jitter exponential backoff spreads the contenders out, so that each round
            # has a winner and the losers retry against a quieter document.
            time.sleep(random.uniform(0, min(1.0, 0.01 * 2**attempt)))
        raise AuditUnavailable(
            f"audit document {doc_id!r} kept changing under {self.max_conflict_attempts} write attempts",
            attempts=self.max_conflict_attempts,
        )

    # -- reading ------------------------------------------------------------------------

    def get(self, doc_id: str) -> dict[str, Any] | None:
        """The document ``doc_id`` as stored (with ``_id`` and ``_rev``), or None."""
        return self._get(doc_id)

    def get_run(self, dag_id: str, run_id: str) -> dict[str, Any] | None:
        """A run's record, or None if it was never written."""
        return self._get(run_doc_id(dag_id, run_id))

    def get_chunk(self, dag_id: str, run_id: str, object_name: str, chunk_index: int) -> dict[str, Any] | None:
        """A chunk's record, or None if it was never written."""
        return self._get(chunk_doc_id(dag_id, run_id, object_name, chunk_index))

    def get_chunks(
        self, dag_id: str, run_id: str, object_name: str | None = None, *, page_size: int = 500
    ) -> list[dict[str, Any]]:
        """Every chunk record of a run (or of one object), ordered by object then chunk index."""
        prefix = chunk_doc_prefix(dag_id, run_id, object_name)
        return list(self._docs_with_prefix(prefix, page_size))

    def list_runs(
        self, dag_id: str | None = None, *, limit: int | None = None, page_size: int = 200
    ) -> list[dict[str, Any]]:
        """Run records (of one DAG, if given), the most recently written first.

        A Mango query on ``type`` (and ``dag_id``), served by their indexes. Run records are
        small and few next to chunk records, so they are sorted here, after reading them all.
        """
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        selector: dict[str, Any] = {"type": "run"}
        if dag_id is not None:
            selector["dag_id"] = dag_id
        runs = self.find(selector, page_size=page_size)
        runs.sort(key=lambda doc: (str(doc.get("updated_at") or ""), doc["_id"]), reverse=True)
        return runs if limit is None else runs[:limit]

    def find_chunks(self, dag_id: str, run_id: str, objects: list[str]) -> list[dict[str, Any]]:
        """The chunk records of a run for these objects (a Mango query served by the run_id index)."""
        selector = {"type": "chunk", "dag_id": dag_id, "run_id": run_id, "object": {"$in": objects}}
        docs = self.find(selector)
        return sorted(docs, key=lambda d: (objects.index(d["object"]), int(d.get("chunk", 0))))

    def find(
        self, selector: dict[str, Any], *, fields: list[str] | None = None, page_size: int = 200
    ) -> list[dict[str, Any]]:
        """Every document matching a Mango selector (served by the indexes on INDEXED_FIELDS).

        CouchDB pages with a bookmark; pouchdb-server returns none, so then skip is used.
        """
        docs: list[dict[str, Any]] = []
        bookmark: str | None = None
        while True:
            page_args: dict[str, Any] = {"bookmark": bookmark} if bookmark else {"skip": len(docs)}
            try:
                result = self._call(
                    "find documents",
                    lambda page_args=page_args: self.client.post_find(
                        db=self.database, selector=selector, fields=fields, limit=page_size, **page_args
                    ),
                )
            except AuditRefused as exc:
                if exc.status_code == 404:  # no database yet: nothing was ever written
                    return docs
                raise
            page = result.get("docs", [])
            docs.extend(page)
            if len(page) < page_size:
                return docs
            bookmark = result.get("bookmark")

    def _docs_with_prefix(self, prefix: str, page_size: int) -> Iterable[dict[str, Any]]:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        # '\ufff0' sorts after every character an encoded id part can hold.
        end_key = prefix + "\ufff0"
        start_key = prefix
        while True:
            # One row more than a page: its id is where the next page starts, so no skip.
            try:
                result = self._call(
                    f"list documents {prefix}*",
                    lambda start_key=start_key: self.client.post_all_docs(
                        db=self.database, include_docs=True, start_key=start_key, end_key=end_key, limit=page_size + 1
                    ),
                )
            except AuditRefused as exc:
                if exc.status_code == 404:  # no database yet: nothing was ever written
                    return
                raise
            rows = result.get("rows", [])
            for row in rows[:page_size]:
                if row.get("doc") is not None:
                    yield row["doc"]
            if len(rows) <= page_size:
                return
            start_key = rows[page_size]["id"]

    def _get(self, doc_id: str) -> dict[str, Any] | None:
        try:
            return self._call(f"read {doc_id}", lambda: self.client.get_document(db=self.database, doc_id=doc_id))
        except AuditRefused as exc:
            if exc.status_code == 404:
                return None
            raise

    # -- transport ----------------------------------------------------------------------

    def _call(self, what: str, request: Callable[[], DetailedResponse]) -> Any:
        """Send a request, retrying transient failures; classify what is left."""
        import requests
        from ibm_cloud_sdk_core import ApiException

        last: BaseException | None = None
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            retry_after = 0.0
            try:
                return request().get_result()
            except ApiException as exc:
                if exc.status_code not in _TRANSIENT_STATUS:
                    raise AuditRefused(
                        f"audit store refused to {what} in {self.database!r}: {exc.status_code} {exc.message}",
                        status_code=exc.status_code,
                        error=_error_code(exc),
                    ) from exc
                last = exc
                retry_after = _retry_after(exc)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                last = exc
            backoff = min(self.backoff_max_seconds, self.backoff_seconds * 2 ** (attempt - 1))
            delay = max(retry_after, backoff * random.uniform(0.5, 1.0))
            if self.retry_seconds is None:
                again, budget = attempt < self.max_attempts, f"attempt {attempt} of {self.max_attempts}"
            else:
                # A time budget rather than a count: a store that restarts takes seconds to tens of
                # seconds, whatever the backoff; the last wait is cut to end with the budget.
                left = self.retry_seconds - (time.monotonic() - started)
                delay = min(delay, max(left, 0.0))
                again = left > 0
                budget = f"attempt {attempt}, {max(left, 0.0):.0f} s of {self.retry_seconds:.0f} s left"
            if not again:
                break
            log.warning("audit store: could not %s (%s), %s; retrying in %.2f s", what, _describe(last), budget, delay)
            time.sleep(delay)
        waited = time.monotonic() - started
        raise AuditUnavailable(
            f"audit store {self._url()} unavailable: could not {what} in {self.database!r} after {attempt} "
            f"attempts in {waited:.0f} s ({_describe(last)})",
            attempts=attempt,
        ) from last

    def _url(self) -> str:
        # The service URL never holds credentials (DmsCloudantHook refuses them there).
        return str(getattr(self.client, "service_url", "") or "(no URL)")


def _describe(exc: BaseException | None) -> str:
    status = getattr(exc, "status_code", None)
    # Connection errors carry the URL only (credentials never sit in it: the hook refuses that).
    return f"{type(exc).__name__} {status}" if status else f"{type(exc).__name__}: {str(exc)[:200]}"


def _error_code(exc: Any) -> str | None:
    try:
        return exc.http_response.json().get("error")
    except Exception:  # noqa: BLE001 - a body that is not JSON has no error code
        return None


def _retry_after(exc: Any) -> float:
    # Honour a server's Retry-After on 429/503, but never wait unboundedly on its say-so.
    try:
        return min(30.0, float(exc.http_response.headers.get("Retry-After", 0)))
    except (AttributeError, TypeError, ValueError):
        return 0.0
