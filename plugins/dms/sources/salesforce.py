"""Records of a Salesforce org, read with a Bulk API 2.0 query job, in chunks of text.

The SOQL runs as a query job (Salesforce's way to read many records: asynchronous, and
counted as one API call per page instead of one per 2,000 records). Its results are read a
page of `page_records` records at a time, following the Sforce-Locator header, so memory is
bounded by the page and the chunk. Each page is a CSV in which every value is text and a
null is empty, which is what the transform reads; row numbers are 1-based positions in the
result.

With `change_column` and a data interval, the SOQL gets the condition
``change_column >= start AND change_column < end`` (datetime literals, UTC), added to its
WHERE clause or as one.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import re
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.csv as pa_csv

from dms.errors import DmsError, FatalError, SourceError
from dms.salesforce.bulk2 import Bulk2Client, Bulk2Error
from dms.sources.base import SourceChunk, rechunk
from dms.spec import SalesforceSource

log = logging.getLogger(__name__)

# A page is held in memory while it is parsed; Salesforce's own default page is much larger.
MIN_PAGE_RECORDS = 10_000
# A field name, or a relationship path to one (Owner.LastModifiedDate).
_FIELD_PATH = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)*\Z")
# Clauses that may follow WHERE in a SOQL statement, with the word that must come next
# (None: any), so that an sObject or field that happens to be called "Order" is not one.
_AFTER_WHERE = {
    "WITH": None,
    "GROUP": {"BY"},
    "ORDER": {"BY"},
    "LIMIT": None,
    "OFFSET": None,
    "FOR": {"VIEW", "UPDATE", "REFERENCE"},
    "UPDATE": {"TRACKING", "VIEWSTAT"},
}


def iter_salesforce_chunks(
    source: SalesforceSource,
    chunk_rows: int,
    conn_id: str,
    interval_start: dt.datetime | None,
    interval_end: dt.datetime | None,
    *,
    page_records: int | None = None,
    poll_seconds: float = 1.0,
) -> Iterator[SourceChunk]:
    """Stream the records `source.soql` selects as `SourceChunk`s of `chunk_rows` rows.

    `page_records` is the most records fetched per results request (default: the chunk
    size, at least `MIN_PAGE_RECORDS`). Nothing is asked of Salesforce until the first chunk
    is. A query Salesforce refuses or a job that fails raises `SourceError` with
    Salesforce's reason; a passing fault (network, 5xx, API limit) stays `RetriableError`.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
    label = f"Salesforce source (connection {conn_id!r}, SOQL {_short(source.soql)!r})"
    try:
        soql = soql_with_interval(source.soql, source.change_column, interval_start, interval_end)
    except ValueError as exc:
        raise SourceError(f"{label}: {exc}") from None
    page = page_records or max(chunk_rows, MIN_PAGE_RECORDS)
    yield from rechunk(_pages(soql, conn_id, label, page, poll_seconds), chunk_rows)


# ---------------------------------------------------------------- SOQL


def soql_with_interval(soql: str, change_column: str | None, start: dt.datetime | None, end: dt.datetime | None) -> str:
    """`soql` narrowed to records whose `change_column` lies in [start, end); unchanged without either.

    The condition goes into the top-level WHERE (whose own condition is parenthesised, so an
    OR in it cannot swallow ours) or becomes the WHERE, before any ORDER BY, LIMIT and the like.
    """
    soql = soql.strip()
    if not change_column or (start is None and end is None):
        return soql
    if not _FIELD_PATH.match(change_column):
        raise ValueError(f"change_column {change_column!r} is not a SOQL field name")
    terms = []
    if start is not None:
        terms.append(f"{change_column} >= {soql_datetime(start)}")
    if end is not None:
        terms.append(f"{change_column} < {soql_datetime(end)}")
    condition = " AND ".join(terms)
    words = _top_level_words(soql)
    after_from = next((i for i, (_, word) in enumerate(words) if word == "FROM"), None)
    if after_from is None:
        raise ValueError("the SOQL has no FROM")
    # The word right after FROM is the sObject, whatever it is called.
    clauses = words[after_from + 2 :]
    where = next((pos for pos, word in clauses if word == "WHERE"), None)
    following = [
        pos
        for k, (pos, word) in enumerate(clauses)
        if word in _AFTER_WHERE
        and pos > (where if where is not None else -1)
        and (_AFTER_WHERE[word] is None or (k + 1 < len(clauses) and clauses[k + 1][1] in _AFTER_WHERE[word]))
    ]
    end_of_where = following[0] if following else len(soql)
    head, tail = soql[:end_of_where].rstrip(), soql[end_of_where:]
    if where is None:
        body = f"{head} WHERE {condition}"
    else:
        existing = soql[where + len("WHERE") : end_of_where].strip()
        body = f"{soql[:where]}WHERE ({existing}) AND {condition}"
    return f"{body} {tail}".rstrip()


def soql_datetime(value: dt.datetime) -> str:
    """A SOQL datetime literal in UTC (unquoted), to the millisecond Salesforce keeps.

    A naive datetime is taken as UTC. A fraction of a millisecond rounds up: records carry
    whole milliseconds, so ">= x" and "< x" then select the same records as the exact bound.
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    value = dt.datetime.fromisoformat(value.isoformat()).astimezone(dt.UTC)
    if value.microsecond % 1000:
        value += dt.timedelta(microseconds=1000 - value.microsecond % 1000)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond // 1000:03d}"
    return text + "Z"


def _top_level_words(soql: str) -> list[tuple[int, str]]:
    """(position, upper-cased word) of each word outside string literals and parentheses."""
    words: list[tuple[int, str]] = []
    depth = 0
    i = 0
    while i < len(soql):
        char = soql[i]
        if char == "'":
            i += 1
            while i < len(soql) and soql[i] != "'":
                i += 2 if soql[i] == "\\" else 1
            i += 1
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char.isalpha() or char == "_":
            start = i
            while i < len(soql) and (soql[i].isalnum() or soql[i] in "_.:"):
                i += 1
            if depth == 0:
                words.append((start, soql[start:i].upper()))
            continue
        i += 1
    return words


# ---------------------------------------------------------------- reading


def _pages(soql: str, conn_id: str, label: str, page_records: int, poll_seconds: float) -> Iterator[pa.RecordBatch]:
    client = Bulk2Client(_connect(conn_id, label))
    try:
        job = client.create_query_job(soql)
    except Bulk2Error as exc:
        raise SourceError(f"{label}: Salesforce refused the query: {_reason(exc)}") from None
    job_id = job["id"]
    log.info("Bulk API 2.0 query job %s for %s", job_id, label)
    state = job.get("state", "")
    try:
        info = client.wait_query(job_id, poll_seconds=poll_seconds)
        state = info["state"]
        if state != "JobComplete":
            raise SourceError(
                f"{label}: query job {job_id} ended {state}: {info.get('errorMessage') or 'Salesforce gave no reason'}"
            )
        locator: str | None = None
        page = 0
        while True:
            page += 1
            try:
                content, locator = client.query_results(job_id, locator=locator, max_records=page_records)
            except Bulk2Error as exc:
                raise SourceError(f"{label}: reading page {page} of query job {job_id}: {_reason(exc)}") from None
            yield from _parse_page(content, f"{label}: page {page} of query job {job_id}")
            if locator is None:
                break
    finally:
        _tidy(client, job_id, state)


def _connect(conn_id: str, label: str):
    from dms.hooks.salesforce import DmsSalesforceHook

    try:
        return DmsSalesforceHook(salesforce_conn_id=conn_id).get_conn()
    except DmsError as exc:
        if isinstance(exc, FatalError):
            raise SourceError(f"{label}: {exc}") from None
        raise  # RetriableError: the task may try again
    except Exception as exc:
        # Unknown connection (AirflowNotFoundException) or a login simple_salesforce refused;
        # the type and message name the problem, never the password.
        raise SourceError(f"{label}: cannot log in: {type(exc).__name__}: {_short(str(exc), 300)}") from None


def _parse_page(content: bytes, where: str) -> Iterator[pa.RecordBatch]:
    """The records of one results page, every column a string ("" for null)."""
    if not content.strip():
        return
    first_line = content.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", errors="replace")
    names = next(csv.reader(io.StringIO(first_line)))
    try:
        table = pa_csv.read_csv(
            pa.BufferReader(content),
            # The whole page as one block: a record (with long text areas) always fits.
            read_options=pa_csv.ReadOptions(block_size=max(1 << 20, len(content) + 1)),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(
                column_types={name: pa.string() for name in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise SourceError(f"{where}: the results are not the CSV expected: {exc}") from None
    yield from table.to_batches()


def _tidy(client: Bulk2Client, job_id: str, state: str) -> None:
    """Delete the finished job (abort one still running): it is of no use once read, or abandoned."""
    try:
        if state in ("JobComplete", "Failed", "Aborted"):
            client.delete_query_job(job_id)
        else:
            client.abort_query_job(job_id)
    except DmsError as exc:
        # Salesforce deletes query jobs itself after 7 days; the read is what matters.
        log.warning("could not tidy up query job %s: %s", job_id, exc)


def _reason(exc: Bulk2Error) -> str:
    return str(exc).removeprefix("Bulk API POST refused: ").removeprefix("Bulk API GET refused: ")


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"
