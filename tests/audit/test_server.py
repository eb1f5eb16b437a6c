"""The audit server's lifecycle, and what the Audit does when the server fails or goes away."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from ibm_cloud_sdk_core import ApiException

from dms.audit import Audit, AuditRefused, AuditUnavailable
from dms.errors import FatalError, RetriableError
from dms.hooks.cloudant import DmsCloudantHook
from scripts.audit_server import AuditServer, AuditServerError, start_audit_server


def _audit_for(server: AuditServer, monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> Audit:
    monkeypatch.setenv("AIRFLOW_CONN_CLOUDANT_DEFAULT", f'{{"conn_type": "cloudant", "host": "{server.url}"}}')
    return Audit(DmsCloudantHook().get_conn(), **kwargs)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_restarted_server_keeps_documents_on_its_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = start_audit_server(data_dir=tmp_path)
    try:
        _audit_for(first, monkeypatch).write_chunk("dag", "run", "Account", 0, {"loaded": 42})
    finally:
        first.stop()

    second = start_audit_server(data_dir=tmp_path)
    try:
        assert _audit_for(second, monkeypatch).get_chunk("dag", "run", "Account", 0)["loaded"] == 42
    finally:
        second.stop()


def test_stopped_server_gives_audit_unavailable_after_bounded_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    server = start_audit_server()
    audit = _audit_for(server, monkeypatch, max_attempts=3, backoff_seconds=0.05)
    audit.write_run("dag", "run", {"state": "running"})
    server.stop()

    started = time.monotonic()
    with pytest.raises(AuditUnavailable) as excinfo:
        audit.write_run("dag", "run", {"state": "success"})
    assert time.monotonic() - started < 5, "bounded retries, not a hang"
    assert excinfo.value.attempts == 3
    assert isinstance(excinfo.value, RetriableError), "the caller classifies it as retriable by its class"
    assert isinstance(excinfo.value.__cause__, requests.ConnectionError)

    with pytest.raises(AuditUnavailable):
        audit.get_chunks("dag", "run")


def test_transient_5xx_and_429_are_retried_until_the_server_answers(
    audit: Audit, monkeypatch: pytest.MonkeyPatch
) -> None:
    audit.write_run("dag", "run", {"state": "running"})
    real_get = audit.client.get_document
    failures = [ApiException(503, message="service unavailable"), ApiException(429, message="too many requests")]
    calls = 0

    def flaky_get(**kwargs: Any) -> Any:
        # The real server behind the first two calls failing the way a busy Cloudant does.
        nonlocal calls
        calls += 1
        if failures:
            raise failures.pop(0)
        return real_get(**kwargs)

    monkeypatch.setattr(audit.client, "get_document", flaky_get)
    assert audit.get_run("dag", "run")["state"] == "running"
    assert calls == 3


def test_persistent_5xx_becomes_audit_unavailable(audit: Audit, monkeypatch: pytest.MonkeyPatch) -> None:
    def always_500(**kwargs: Any) -> Any:
        raise ApiException(500, message="internal error")

    monkeypatch.setattr(audit.client, "get_document", always_500)
    with pytest.raises(AuditUnavailable) as excinfo:
        audit.get_run("dag", "run")
    assert excinfo.value.attempts == audit.max_attempts


def test_other_refusals_are_fatal_and_not_retried(audit: Audit, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0

    def forbidden(**kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        raise ApiException(403, message="forbidden")

    monkeypatch.setattr(audit.client, "get_document", forbidden)
    with pytest.raises(AuditRefused) as excinfo:
        audit.get_run("dag", "run")
    assert isinstance(excinfo.value, FatalError)
    assert excinfo.value.status_code == 403
    assert calls == 1


def test_stop_leaves_no_process_and_no_temporary_files() -> None:
    server = start_audit_server()
    pid, state_dir = server.pid, server.state_dir
    assert _process_exists(pid)
    server.stop()
    server.stop()  # idempotent
    assert not _process_exists(pid)
    assert not state_dir.exists()


def test_start_failure_raises_with_the_server_log(audit_server: AuditServer) -> None:
    # The session's server holds the port; a second one there must fail, not "succeed"
    # because the first one answers.
    with pytest.raises(AuditServerError, match="already in use"):
        start_audit_server(port=audit_server.port)
