"""The emulator's shared state: org schema, record store, sessions, faults and counters."""

from __future__ import annotations

import secrets
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

from starlette.responses import JSONResponse

from .schema import OrgSchema
from .store import Store

# Salesforce lets one Bulk API 2.0 upload be at most 150 MB.
MAX_UPLOAD_BYTES = 150 * 1024 * 1024
ORG_ID = "00D5g00000EMUL8EAA"
USER_ID = "0055g00000EMUL8AAA"


@dataclass
class Credentials:
    """The one integration user the emulator knows, and its connected app."""

    username: str = "dms@example.com"
    password: str = "dms-password"
    security_token: str = ""
    client_id: str = "dms-local-client"
    client_secret: str = "dms-local-secret"


@dataclass
class Faults:
    """Faults injected for reliability tests; all off by default."""

    latency_ms: float = 0.0
    error_503_rate: float = 0.0
    # Share of API calls whose answer is lost: the call takes effect, then the connection drops
    # before the body arrives, as a client sees it when its read times out.
    timeout_rate: float = 0.0
    # After this many API calls every further call fails with REQUEST_LIMIT_EXCEEDED.
    request_limit: int | None = None
    lock_row_rate: float = 0.0
    # The next N bulk ingest jobs end in state Failed.
    fail_next_bulk_jobs: int = 0
    # A job failed by fail_next_bulk_jobs first processes this many of its rows (Salesforce keeps
    # the results of what a Failed job processed; the rest is in unprocessedrecords).
    fail_after_rows: int = 0
    # Bulk API 2.0 jobs stay queued (UploadComplete) until this is set back to false, so that a
    # test can act while a job is in flight (kill the task that waits for it) without timing it.
    hold_bulk_jobs: bool = False
    # Re-seeds the random draws of the rate faults, so that a test sees the same faults every run.
    seed: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Emulator:
    """Everything the routes share."""

    schema: OrgSchema
    store: Store
    credentials: Credentials = field(default_factory=Credentials)
    faults: Faults = field(default_factory=Faults)
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    daily_api_limit: int = 15000000
    sessions: dict[str, str] = field(default_factory=dict)
    api_calls: int = 0
    # Calls that were slowed by the latency fault, so tests can see it without timing anything.
    delayed_calls: int = 0
    # Calls answered 503 and calls whose answer the timeout fault dropped, for the same reason.
    unavailable_calls: int = 0
    lost_answers: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Subsystems register their own state here (bulk jobs, query cursors).
    extensions: dict[str, Any] = field(default_factory=dict)

    @property
    def api_version(self) -> str:
        return self.schema.api_version

    def new_session(self, username: str) -> str:
        token = f"{ORG_ID[:15]}!{secrets.token_urlsafe(48)}"
        with self.lock:
            self.sessions[token] = username
        return token

    def count_call(self) -> int:
        with self.lock:
            self.api_calls += 1
            return self.api_calls

    def set_faults(self, **changes: Any) -> None:
        for key, value in changes.items():
            if not hasattr(self.faults, key):
                raise KeyError(key)
            setattr(self.faults, key, value)
        self.store.lock_row_rate = self.faults.lock_row_rate
        if changes.get("seed") is not None:
            self.store.rng.seed(int(changes["seed"]))


def sf_error(status: int, error_code: str, message: str, fields: list[str] | None = None) -> JSONResponse:
    """A REST error in Salesforce's shape: a JSON array of {message, errorCode[, fields]}."""
    body: dict[str, Any] = {"message": message, "errorCode": error_code}
    if fields is not None:
        body["fields"] = fields
    return JSONResponse([body], status_code=status)
