"""Real services for the pipeline tests: Redis, the audit store, the emulator and an Airflow DB."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.audit_server import AuditServer
from scripts.services import EmulatorProcess, PostgresServer, RedisServer, ensure_postgres, ensure_redis

# The stage's database in tests: never the broker's db 0, never a user's db 1.
# DMS_TEST_STAGING_DB lets two test sessions share one Redis without flushing each other's stage.
TEST_STAGING_DB = int(os.environ.get("DMS_TEST_STAGING_DB", "13"))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = ensure_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The PostgreSQL on :5432, or a private cluster started (and removed) for this session."""
    server = ensure_postgres()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A fresh Airflow metadata DB in the session's throw-away AIRFLOW_HOME (see tests/conftest.py)."""
    from airflow.utils import db

    db.resetdb()


@pytest.fixture
def dms_connections(
    emulator: EmulatorProcess, redis_server: RedisServer, audit_server: AuditServer, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """The DMS connections as AIRFLOW_CONN_* variables, a clean stage and data/results roots."""
    import redis

    client = redis.Redis(host=redis_server.host, port=redis_server.port, db=TEST_STAGING_DB)
    client.flushdb()
    emulator.admin("/__emulator/reset", "POST")
    env = {
        "AIRFLOW_CONN_SALESFORCE_DEFAULT": json.dumps(emulator.salesforce_connection()),
        "AIRFLOW_CONN_DMS_STAGING": json.dumps(
            {
                "conn_type": "redis",
                "host": redis_server.host,
                "port": redis_server.port,
                "extra": {"db": TEST_STAGING_DB},
            }
        ),
        "AIRFLOW_CONN_CLOUDANT_DEFAULT": json.dumps({"conn_type": "cloudant", "host": audit_server.url}),
        "DMS_RESULTS_DIR": str(tmp_path / "results"),
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    client.flushdb()
