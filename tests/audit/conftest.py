"""Fixtures for the audit store's tests: a real pouchdb-server, reached through DmsCloudantHook."""

from __future__ import annotations

import itertools
import json
import re

import pytest

from dms.audit import Audit
from dms.hooks.cloudant import DmsCloudantHook
from scripts.audit_server import AuditServer

_db_numbers = itertools.count()


@pytest.fixture
def cloudant_conn(audit_server: AuditServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """`cloudant_default` pointed at the session's server by URL, with no credentials."""
    conn = {"conn_type": "cloudant", "host": audit_server.url}
    monkeypatch.setenv("AIRFLOW_CONN_CLOUDANT_DEFAULT", json.dumps(conn))
    return "cloudant_default"


@pytest.fixture
def audit(cloudant_conn: str, request: pytest.FixtureRequest) -> Audit:
    """An Audit on its own database, so that tests never see each other's documents.

    Short backoffs keep the retry tests fast; the behaviour is the same.
    """
    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:80]
    database = f"dms_audit_{next(_db_numbers)}_{name}"
    return Audit(DmsCloudantHook(cloudant_conn).get_conn(), database, backoff_seconds=0.01)
