"""DMS's Salesforce retry policy as pure logic: which answers are repeated, how long it waits, what it refuses.

The transport under the adapter is replaced by canned answers (the adapter is the thing under
test); tests/emulator/test_salesforce_errors.py runs the same policy against the emulator.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, NewConnectionError

from dms.errors import FatalError
from dms.salesforce.http import RETRY_AFTER_MAX_SECONDS, ApiLimitError, SalesforceAdapter, never_sent, repeatable


def _answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = json.dumps(body).encode() if body is not None else b""
    resp._content_consumed = True
    resp.headers.update(headers or {})
    return resp


@pytest.fixture
def canned(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Answers (or exceptions) the transport gives, in order; each request takes the next one."""
    answers: list[Any] = []

    def send(self: HTTPAdapter, request: Any, **kwargs: Any) -> requests.Response:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(HTTPAdapter, "send", send)
    yield answers
    assert answers == [], "the adapter stopped before using every canned answer"


def _session(slept: list[float], repeats: int = 3) -> requests.Session:
    session = requests.Session()
    session.mount("https://", SalesforceAdapter(10.0, repeats, sleep=slept.append))
    return session


def test_retry_after_is_honoured_up_to_a_cap(canned: list[Any]) -> None:
    slept: list[float] = []
    canned += [_answer(503, headers={"Retry-After": "7"}), _answer(429, headers={"Retry-After": "86400"}), _answer(200)]
    assert _session(slept).get("https://org.example/services/data/").status_code == 200
    assert slept == [7.0, RETRY_AFTER_MAX_SECONDS]


def test_backoff_grows_and_the_last_answer_is_returned_when_repeats_run_out(canned: list[Any]) -> None:
    slept: list[float] = []
    canned += [_answer(500) for _ in range(4)]
    assert _session(slept, repeats=3).get("https://org.example/x").status_code == 500
    assert len(slept) == 3 and slept[0] <= 0.5 and slept[2] >= 1.0 and slept == sorted(slept)


def test_a_write_with_an_unknown_outcome_is_not_repeated_unless_marked_repeatable(canned: list[Any]) -> None:
    slept: list[float] = []
    canned += [_answer(502)]
    assert _session(slept).post("https://org.example/x", json={}).status_code == 502
    assert slept == []
    canned += [requests.exceptions.ChunkedEncodingError("cut"), _answer(200)]
    with repeatable():
        assert _session(slept).patch("https://org.example/x", json={}).status_code == 200
    assert len(slept) == 1


def test_a_write_refused_with_503_or_429_is_repeated(canned: list[Any]) -> None:
    slept: list[float] = []
    canned += [_answer(503), _answer(429), _answer(201)]
    assert _session(slept).post("https://org.example/x", json={}).status_code == 201
    assert len(slept) == 2


def test_request_limit_raises_at_once(canned: list[Any]) -> None:
    slept: list[float] = []
    canned += [_answer(403, [{"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}])]
    with pytest.raises(ApiLimitError, match=r"REQUEST_LIMIT_EXCEEDED \(TotalRequests Limit exceeded\.\)"):
        _session(slept).get("https://org.example/x")
    assert slept == []
    # Any other 403 is Salesforce's answer to the caller, not the adapter's business.
    canned += [_answer(403, [{"errorCode": "INSUFFICIENT_ACCESS", "message": "no"}])]
    assert _session(slept).get("https://org.example/x").status_code == 403


def test_only_a_connection_never_opened_counts_as_never_sent() -> None:
    refused = NewConnectionError(None, "Connection refused")  # type: ignore[arg-type]
    assert never_sent(requests.ConnectionError(MaxRetryError(None, "/x", refused)))  # type: ignore[arg-type]
    assert never_sent(requests.ConnectTimeout("connect timed out"))
    assert not never_sent(requests.ReadTimeout("read timed out"))
    assert not never_sent(requests.exceptions.ChunkedEncodingError("cut"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"timeout": "soon"}, "'timeout' must be a number"),
        ({"timeout": 0}, "'timeout' must be more than 0"),
        ({"max_retries": -1}, "'max_retries' must be 0 or more"),
    ],
)
def test_bad_retry_settings_in_the_connection_are_named(
    extra: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dms.hooks.salesforce import DmsSalesforceHook

    conn = {"conn_type": "salesforce", "extra": {"instance_url": "https://org.example", **extra}}
    monkeypatch.setenv("AIRFLOW_CONN_SF_BAD", json.dumps(conn))
    with pytest.raises(FatalError, match=f"connection 'sf_bad': the extra {message}"):
        DmsSalesforceHook(salesforce_conn_id="sf_bad", session_id="token").get_conn()
