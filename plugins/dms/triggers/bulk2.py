"""Wait in the triggerer for a Bulk API 2.0 ingest job to end (JobComplete, Failed or Aborted).

A job of 100,000 rows takes Salesforce seconds to minutes; a load task polling it would hold
a Celery slot all that time. The load uploads, hands the job id to this trigger and gives its
slot back; the triggerer polls (backing off to 10 s) and the task resumes to fetch the results.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from dms.errors import FatalError, RetriableError

TERMINAL_STATES = ("JobComplete", "Failed", "Aborted")


class Bulk2JobTrigger(BaseTrigger):
    """Fires once with {"status": "done", "job": {...}} or {"status": "error", "message": ...}."""

    def __init__(self, job_id: str, salesforce_conn_id: str, poll_seconds: float = 1.0, max_poll_errors: int = 10):
        super().__init__()
        self.job_id = job_id
        self.salesforce_conn_id = salesforce_conn_id
        self.poll_seconds = poll_seconds
        self.max_poll_errors = max_poll_errors

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "dms.triggers.bulk2.Bulk2JobTrigger",
            {
                "job_id": self.job_id,
                "salesforce_conn_id": self.salesforce_conn_id,
                "poll_seconds": self.poll_seconds,
                "max_poll_errors": self.max_poll_errors,
            },
        )

    def _client(self) -> Any:
        from dms.hooks.salesforce import DmsSalesforceHook
        from dms.salesforce.bulk2 import Bulk2Client

        return Bulk2Client(DmsSalesforceHook(salesforce_conn_id=self.salesforce_conn_id).get_conn())

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # The Salesforce client is synchronous (requests): each call runs in a thread, so the
        # triggerer's event loop keeps serving every other trigger meanwhile.
        try:
            client = await asyncio.to_thread(self._client)
        except FatalError as exc:
            yield TriggerEvent({"status": "error", "job_id": self.job_id, "message": str(exc)})
            return
        delay, errors = self.poll_seconds, 0
        while True:
            try:
                job = await asyncio.to_thread(client.get_job, self.job_id)
            except RetriableError as exc:
                # A passing fault (503, a timeout): poll again, but not forever.
                errors += 1
                if errors >= self.max_poll_errors:
                    yield TriggerEvent({"status": "error", "job_id": self.job_id, "message": str(exc)})
                    return
                self.log.warning("job %s: poll failed (%s), trying again", self.job_id, exc)
            except FatalError as exc:
                yield TriggerEvent({"status": "error", "job_id": self.job_id, "message": str(exc)})
                return
            else:
                errors = 0
                if job.get("state") in TERMINAL_STATES:
                    yield TriggerEvent({"status": "done", "job_id": self.job_id, "state": job["state"]})
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 10.0)
