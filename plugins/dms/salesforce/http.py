"""Salesforce over HTTP: the session every DMS client shares, its retry policy, and one call with DMS's errors.

The retry policy lives in the session (`SalesforceAdapter`), so simple_salesforce's own calls
(describe, SOQL) follow it as well as DMS's Bulk API 2.0 and Collections clients:

- 429 or 503: Salesforce did not take the request on; any request is sent again.
- A connection that could not be opened: the request never left; sent again.
- A timeout, a cut connection, 500, 502 or 504: the request may have taken effect or not.
  It is sent again only if repeating it is harmless: GET and HEAD, and the calls a client
  marks repeatable (an upsert by external id, creating or closing a Bulk job). Anything else raises
  `OutcomeUnknownError`, and the caller's ledger decides (see `run_collections` and
  `start_bulk_job` in dms.operators.load).
- Bounded: at most `max_retries` repeats, with exponential backoff and jitter; a Retry-After
  header (seconds) is honoured, up to a cap.
- REQUEST_LIMIT_EXCEEDED raises `ApiLimitError` at once: it is the org's rolling 24-hour
  limit, so retrying within seconds or minutes cannot succeed and would only spend what is left.
"""

from __future__ import annotations

import contextlib
import contextvars
import random
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from dms.errors import FatalError, RetriableError

if TYPE_CHECKING:
    from simple_salesforce import Salesforce

_TRANSIENT = (429, 500, 502, 503, 504)
# Answers that say Salesforce did not start on the request, so repeating it cannot do anything twice.
_NOT_TAKEN_ON = (429, 503)
DEFAULT_TIMEOUT = 120.0
DEFAULT_MAX_RETRIES = 4
BACKOFF_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
RETRY_AFTER_MAX_SECONDS = 120.0

_repeatable: contextvars.ContextVar[bool] = contextvars.ContextVar("dms_salesforce_repeatable", default=False)


class ApiLimitError(FatalError):
    """The org's API request limit is used up (REQUEST_LIMIT_EXCEEDED); only time restores it."""


class OutcomeUnknownError(RetriableError):
    """A request that is not safe to repeat got no usable answer: it may or may not have taken effect."""


def limit_message(detail: str) -> str:
    """What a user reads when the org's API limit stops a task: the limit, and what to do."""
    return (
        f"Salesforce refused the call: REQUEST_LIMIT_EXCEEDED ({detail.strip() or 'TotalRequests Limit exceeded.'}). "
        "The org's API request limit (a rolling 24-hour allowance, see Setup > Company Information or "
        "/limits DailyApiRequests) is used up; retrying now cannot succeed. Once the org has requests "
        "left, clear this run's failed tasks: the chunks it loaded already are not sent again."
    )


@contextlib.contextmanager
def repeatable(flag: bool = True) -> Iterator[None]:
    """Mark the requests sent inside the block as safe to repeat after an unknown outcome."""
    token = _repeatable.set(flag)
    try:
        yield
    finally:
        _repeatable.reset(token)


class SalesforceAdapter(HTTPAdapter):
    """A requests adapter with a default timeout and DMS's retry policy for Salesforce calls."""

    def __init__(
        self,
        timeout: float = DEFAULT_TIMEOUT,
        repeats: int = DEFAULT_MAX_RETRIES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        self.timeout = timeout
        self.repeats = repeats
        self.sleep = sleep

    def send(self, request: Any, stream: bool = False, timeout: Any = None, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        timeout = self.timeout if timeout is None else timeout
        method = (request.method or "GET").upper()
        safe = method in ("GET", "HEAD") or _repeatable.get()
        attempt = 0
        while True:
            try:
                resp = super().send(request, stream=stream, timeout=timeout, **kwargs)
                if not stream:
                    # Read the body here: a connection cut mid-answer is no answer, and may be repeated.
                    _ = resp.content
            except requests.exceptions.SSLError:
                raise  # a certificate the client does not trust stays untrusted
            except requests.RequestException as exc:
                if attempt >= self.repeats or not (safe or never_sent(exc)):
                    raise
                delay = _backoff(attempt)
            else:
                if resp.status_code == 403 and not stream and _is_limit(resp):
                    raise ApiLimitError(limit_message(_error_message(resp)))
                retry = resp.status_code in _NOT_TAKEN_ON or (resp.status_code in _TRANSIENT and safe)
                if not retry or attempt >= self.repeats:
                    return resp
                delay = _retry_after(resp) or _backoff(attempt)
                resp.close()
            attempt += 1
            self.sleep(delay)


def salesforce_session(timeout: float = DEFAULT_TIMEOUT, max_retries: int = DEFAULT_MAX_RETRIES) -> requests.Session:
    """A requests session for Salesforce: every call gets `timeout` (seconds) and the retry policy."""
    session = requests.Session()
    session.mount("https://", SalesforceAdapter(timeout, max_retries))
    session.mount("http://", SalesforceAdapter(timeout, max_retries))
    return session


def never_sent(exc: Exception) -> bool:
    """Whether the connection failed before the request could leave (so it cannot have taken effect)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(reason, NewConnectionError | ConnectTimeoutError)


def _backoff(attempt: int) -> float:
    # Jitter spreads the repeats of parallel tasks that met the same outage.
    return min(BACKOFF_SECONDS * 2**attempt, BACKOFF_MAX_SECONDS) * random.uniform(0.5, 1.0)  # noqa: S311


def _retry_after(resp: Any) -> float | None:
    value = resp.headers.get("Retry-After", "")
    try:
        return min(max(float(value), 0.0), RETRY_AFTER_MAX_SECONDS)
    except ValueError:
        return None  # absent, or an HTTP date: the usual backoff applies


def _is_limit(resp: Any) -> bool:
    # REST answers [{"errorCode": "REQUEST_LIMIT_EXCEEDED"}]; Bulk API 1.0 {"exceptionCode": "ExceededQuota"}.
    text = resp.text[:2000]
    return "REQUEST_LIMIT_EXCEEDED" in text or "ExceededQuota" in text


def _error_message(resp: Any) -> str:
    try:
        detail = resp.json()
    except ValueError:
        return resp.text[:300]
    detail = detail[0] if isinstance(detail, list) and detail else detail
    if not isinstance(detail, dict):
        return str(detail)[:300]
    return str(detail.get("message") or detail.get("exceptionMessage") or "")[:300]


def call(
    sf: Salesforce,
    api: str,
    method: str,
    url: str,
    *,
    timeout: float | None = None,
    refused: type[FatalError] = FatalError,
    headers: dict[str, str] | None = None,
    repeatable_call: bool = False,
    **kwargs: Any,
) -> requests.Response:
    """Send the request with the session's auth headers; raise RetriableError or `refused` on failure.

    `repeatable_call` says that sending the request twice does no harm (the session then repeats
    it after a timeout too). `timeout` None takes the session's (the connection's extra `timeout`).
    """
    if timeout is None and not isinstance(sf.session.get_adapter(url), SalesforceAdapter):
        timeout = DEFAULT_TIMEOUT
    where = "/".join(url.rsplit("/", 2)[-2:])
    try:
        with repeatable(repeatable_call):
            resp = sf.session.request(method, url, headers={**sf.headers, **(headers or {})}, timeout=timeout, **kwargs)
    except requests.RequestException as exc:
        if repeatable_call or method.upper() in ("GET", "HEAD") or never_sent(exc):
            raise RetriableError(f"{api} {method} {where} failed: {type(exc).__name__}") from None
        raise OutcomeUnknownError(
            f"{api} {method} {where}: no answer ({type(exc).__name__}); it may or may not have taken effect"
        ) from None
    if resp.status_code in _TRANSIENT:
        if resp.status_code in _NOT_TAKEN_ON or repeatable_call or method.upper() in ("GET", "HEAD"):
            raise RetriableError(f"{api} answered {resp.status_code}: {resp.text[:300]}")
        raise OutcomeUnknownError(
            f"{api} {method} {where} answered {resp.status_code}; it may or may not have taken effect"
        )
    if resp.status_code >= 400:
        try:
            detail = resp.json()
            detail = detail[0] if isinstance(detail, list) and detail else detail
            code, message = detail.get("errorCode", resp.status_code), detail.get("message", "")
        except (ValueError, AttributeError):
            code, message = resp.status_code, resp.text[:300]
        if code == "REQUEST_LIMIT_EXCEEDED":
            raise ApiLimitError(limit_message(message))
        raise refused(f"{api} {method} refused: {code}: {message}")
    return resp
