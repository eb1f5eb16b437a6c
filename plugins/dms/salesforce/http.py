"""One Salesforce REST call over simple_salesforce's session, with DMS's error classes.

Both load APIs (Bulk API 2.0 and sObject Collections) classify answers the same way: a
network error, 429, 5xx or REQUEST_LIMIT_EXCEEDED may pass (RetriableError, so Airflow
retries the task); any other refusal is final, with Salesforce's errorCode and message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dms.errors import FatalError, RetriableError

if TYPE_CHECKING:
    import requests
    from simple_salesforce import Salesforce

_TRANSIENT = (429, 500, 502, 503, 504)


def call(
    sf: Salesforce,
    api: str,
    method: str,
    url: str,
    *,
    timeout: float,
    refused: type[FatalError] = FatalError,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> requests.Response:
    """Send the request with the session's auth headers; raise RetriableError or `refused` on failure."""
    import requests

    try:
        resp = sf.session.request(method, url, headers={**sf.headers, **(headers or {})}, timeout=timeout, **kwargs)
    except requests.RequestException as exc:
        raise RetriableError(f"{api} {method} {url.rsplit('/', 2)[-2:]} failed: {type(exc).__name__}") from None
    if resp.status_code in _TRANSIENT:
        raise RetriableError(f"{api} answered {resp.status_code}: {resp.text[:300]}")
    if resp.status_code >= 400:
        try:
            detail = resp.json()
            detail = detail[0] if isinstance(detail, list) and detail else detail
            code, message = detail.get("errorCode", resp.status_code), detail.get("message", "")
        except ValueError:
            code, message = resp.status_code, resp.text[:300]
        if code == "REQUEST_LIMIT_EXCEEDED":
            raise RetriableError(f"Salesforce API limit reached: {message}")
        raise refused(f"{api} {method} refused: {code}: {message}")
    return resp
