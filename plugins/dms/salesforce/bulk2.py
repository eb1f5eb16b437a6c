"""Bulk API 2.0 ingest and query, step by step, so the job id can be written to the ledger before uploading.

simple_salesforce's high-level bulk2 calls hide the job id until the job is done; a task
killed mid-upload could then never find its job again. This client uses the same session
(simple_salesforce's requests session and headers) for each documented step. Query jobs
(for Salesforce sources) are read a page at a time, so a large result never sits in memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from dms.errors import FatalError

if TYPE_CHECKING:
    from simple_salesforce import Salesforce

TERMINAL_STATES = {"JobComplete", "Failed", "Aborted"}
ResultKind = Literal["successfulResults", "failedResults", "unprocessedrecords"]


class Bulk2Error(FatalError):
    """Salesforce refused a Bulk API 2.0 request."""


class Bulk2Client:
    """The documented Bulk API 2.0 ingest and query resources, over an authenticated simple_salesforce session."""

    def __init__(self, sf: Salesforce, timeout: float | None = None) -> None:
        # None: the session's timeout (the Salesforce connection's extra `timeout`).
        self.sf = sf
        self.base = sf.bulk2_url + "ingest"
        self.query_base = sf.bulk2_url + "query"
        self.timeout = timeout

    def _call(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        csv: bool = False,
        params: dict[str, str] | None = None,
        repeatable: bool = False,
    ) -> Any:
        from dms.salesforce.http import call

        headers: dict[str, str] = {}
        if data is not None:
            headers["Content-Type"] = "text/csv"
        if csv:
            headers["Accept"] = "text/csv"
        return call(
            self.sf,
            "Bulk API",
            method,
            url,
            timeout=self.timeout,
            refused=Bulk2Error,
            headers=headers,
            json=json,
            data=data,
            params=params,
            repeatable_call=repeatable,
        )

    def create_job(self, sobject: str, operation: str, external_id: str | None = None) -> dict[str, Any]:
        """Create an Open ingest job.

        Repeated after a lost answer: the job the lost answer named, if Salesforce made it, has
        no data and is never closed, so it processes nothing (it only shows in the job list).
        """
        body: dict[str, Any] = {"object": sobject, "operation": operation, "contentType": "CSV", "lineEnding": "LF"}
        if external_id:
            body["externalIdFieldName"] = external_id
        return self._call("POST", self.base, json=body, repeatable=True).json()

    def upload(self, job_id: str, csv_bytes: bytes) -> None:
        """The job's one upload. Never repeated after a lost answer (OutcomeUnknownError instead).

        Salesforce takes one upload per job and refuses a second; whether a lost one arrived
        whole is not something its documented API tells. The caller aborts the Open job
        instead (nothing of an Open job is processed) and loads the rows in a new one.
        """
        self._call("PUT", f"{self.base}/{job_id}/batches", data=csv_bytes)

    def set_state(self, job_id: str, state: Literal["UploadComplete", "Aborted"]) -> dict[str, Any]:
        """Close or abort the job; a repeat after a lost answer that finds the job there already is success."""
        try:
            return self._call("PATCH", f"{self.base}/{job_id}", json={"state": state}, repeatable=True).json()
        except Bulk2Error as exc:
            if "INVALIDJOBSTATE" not in str(exc):
                raise
            job = self.get_job(job_id)
            reached = job["state"] == "Aborted" if state == "Aborted" else job["state"] not in ("Open", "Aborted")
            if not reached:
                raise
            return job

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"{self.base}/{job_id}").json()

    def wait(self, job_id: str, poll_seconds: float = 1.0, sleep: Callable[[float], None] = time.sleep) -> dict:
        """Poll until the job is JobComplete, Failed or Aborted, backing off to 10 s between polls."""
        return _poll(self.get_job, job_id, poll_seconds, sleep)

    def results(self, job_id: str, kind: ResultKind) -> bytes:
        return self._call("GET", f"{self.base}/{job_id}/{kind}", csv=True).content

    # ------------------------------------------------------------ query jobs

    def create_query_job(self, soql: str, *, include_deleted: bool = False) -> dict[str, Any]:
        """Start a query job; Salesforce runs it asynchronously (poll with `wait_query`)."""
        body = {
            "operation": "queryAll" if include_deleted else "query",
            "query": soql,
            "contentType": "CSV",
            # Stated rather than left to the org's defaults: the reader parses exactly this.
            "columnDelimiter": "COMMA",
            "lineEnding": "LF",
        }
        # Repeatable: a query job changes no data; one orphaned by a lost answer only reads.
        return self._call("POST", self.query_base, json=body, repeatable=True).json()

    def get_query_job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"{self.query_base}/{job_id}").json()

    def wait_query(
        self, job_id: str, poll_seconds: float = 1.0, sleep: Callable[[float], None] = time.sleep
    ) -> dict[str, Any]:
        """Poll a query job until it is JobComplete, Failed or Aborted, backing off to 10 s between polls."""
        return _poll(self.get_query_job, job_id, poll_seconds, sleep)

    def query_results(
        self, job_id: str, *, locator: str | None = None, max_records: int | None = None
    ) -> tuple[bytes, str | None]:
        """One page of a completed query job's results (a CSV with its header) and the next page's locator.

        The locator is None after the last page (Salesforce sends the text "null").
        """
        params: dict[str, str] = {}
        if locator:
            params["locator"] = locator
        if max_records:
            params["maxRecords"] = str(max_records)
        resp = self._call("GET", f"{self.query_base}/{job_id}/results", csv=True, params=params or None)
        following = resp.headers.get("Sforce-Locator")
        return resp.content, None if following in (None, "", "null") else following

    def abort_query_job(self, job_id: str) -> dict[str, Any]:
        return self._call("PATCH", f"{self.query_base}/{job_id}", json={"state": "Aborted"}, repeatable=True).json()

    def delete_query_job(self, job_id: str) -> None:
        self._call("DELETE", f"{self.query_base}/{job_id}", repeatable=True)


def _poll(get: Callable[[str], dict[str, Any]], job_id: str, poll_seconds: float, sleep: Callable[[float], None]):
    delay = poll_seconds
    while True:
        job = get(job_id)
        if job["state"] in TERMINAL_STATES:
            return job
        sleep(delay)
        delay = min(delay * 1.5, 10.0)
