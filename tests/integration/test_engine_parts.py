"""Engine parts against the real services: the stage, the hooks and a retried load."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pytest
import redis

from dms.errors import FatalError
from dms.hooks.redis import DEFAULT_STAGING_DB, DmsRedisHook
from dms.hooks.salesforce import DmsSalesforceHook
from dms.staging import ChunkKey, Stage, StageMissingError
from scripts.services import CREDENTIALS, EmulatorProcess, RedisServer
from tests.integration.conftest import TEST_STAGING_DB

INSERT_SPEC = """
name: insert_contacts
# These tests are about Bulk API 2.0 jobs and their ledger: no chunk goes through Collections.
bulk_threshold: 0
objects:
  - name: contacts
    sobject: Contact
    operation: insert
    source: {path: contacts.csv}
    fields:
      LastName: {source: last}
      Email: {source: email}
"""


def _context(run_id: str, **params: Any) -> dict[str, Any]:
    return {"ti": SimpleNamespace(dag_id="dms_insert_contacts", run_id=run_id), "params": params}


def test_stage_round_trips_arrow_and_reports_a_missing_chunk(dms_connections, redis_server: RedisServer) -> None:
    client = redis.Redis(host=redis_server.host, port=redis_server.port, db=TEST_STAGING_DB)
    stage = Stage(client, ttl_seconds=60)
    key = ChunkKey("dag", "run:1", "accounts", 3)
    table = pa.table({"__row": [2, 3], "Name": ["甲", "乙"]})
    stage.put_table(key, "raw", table)
    assert stage.get_table(key, "raw").equals(table)
    payload = client.get(key.redis_key("raw"))
    # Arrow IPC stream, never a pickle: the stage can be read without running code.
    assert payload[:4] == b"\xff\xff\xff\xff" and b"\x80\x04" not in payload[:2]
    assert 0 < client.ttl(key.redis_key("raw")) <= 60
    with pytest.raises(StageMissingError, match="chunk 4 of accounts .* missing from Redis"):
        stage.get_table(ChunkKey("dag", "run:1", "accounts", 4), "raw")


def test_staging_hook_defaults_to_its_own_database(monkeypatch, redis_server: RedisServer) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_STAGE_NO_DB",
        json.dumps({"conn_type": "redis", "host": redis_server.host, "port": redis_server.port}),
    )
    client = DmsRedisHook("stage_no_db").get_conn()
    assert client.connection_pool.connection_kwargs["db"] == DEFAULT_STAGING_DB
    assert client.ping()


def test_staging_hook_sends_a_chunk_without_copying_it_and_reads_it_back(
    monkeypatch, redis_server: RedisServer
) -> None:
    from redis.connection import PythonRespSerializer

    monkeypatch.setenv(
        "AIRFLOW_CONN_STAGE_PACKER",
        json.dumps(
            {
                "conn_type": "redis",
                "host": redis_server.host,
                "port": redis_server.port,
                "extra": {"db": TEST_STAGING_DB},
            }
        ),
    )
    client = DmsRedisHook("stage_packer").get_conn()
    packer = client.connection_pool.get_connection()._command_packer
    assert isinstance(packer, PythonRespSerializer)
    payload = bytes(range(256)) * 8192  # 2 MiB, every byte value
    # The payload travels as its own buffer, not copied into the command.
    assert any(
        part is not None and isinstance(part, memoryview) for part in packer.pack("SET", "k", memoryview(payload))
    )
    client.set("dms:test:packer", memoryview(payload), ex=60)
    client.set("dms:test:text", "华夏 café", ex=60)
    assert client.get("dms:test:packer") == payload
    assert client.get("dms:test:text").decode() == "华夏 café"
    client.delete("dms:test:packer", "dms:test:text")


def test_staging_hook_refuses_the_celery_brokers_database(monkeypatch, redis_server: RedisServer) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_STAGE_ON_BROKER",
        json.dumps({"conn_type": "redis", "host": redis_server.host, "port": redis_server.port, "extra": {"db": 0}}),
    )
    monkeypatch.setenv("AIRFLOW__CELERY__BROKER_URL", f"redis://{redis_server.host}:{redis_server.port}/0")
    with pytest.raises(FatalError, match="Celery broker's database 0"):
        DmsRedisHook("stage_on_broker").get_conn()


def test_salesforce_hook_logs_in_through_the_token_url(dms_connections) -> None:
    sf = DmsSalesforceHook().get_conn()
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == 0


def test_salesforce_hook_client_credentials_grant(monkeypatch, emulator: EmulatorProcess) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_SF_CC",
        json.dumps(
            {
                "conn_type": "salesforce",
                "extra": {
                    "token_url": f"{emulator.base_url}/services/oauth2/token",
                    "consumer_key": CREDENTIALS["client_id"],
                    "consumer_secret": CREDENTIALS["client_secret"],
                },
            }
        ),
    )
    assert "DailyApiRequests" in DmsSalesforceHook("sf_cc").get_conn().limits()


def test_refused_login_is_fatal_and_does_not_echo_the_password(monkeypatch, emulator: EmulatorProcess) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_SF_BAD",
        json.dumps(
            {
                "conn_type": "salesforce",
                "login": CREDENTIALS["username"],
                "password": "hunter2-wrong",
                "extra": {
                    "token_url": f"{emulator.base_url}/services/oauth2/token",
                    "consumer_key": CREDENTIALS["client_id"],
                    "consumer_secret": CREDENTIALS["client_secret"],
                },
            }
        ),
    )
    with pytest.raises(FatalError) as exc:
        DmsSalesforceHook("sf_bad").get_conn()
    assert "invalid_grant" in str(exc.value)
    assert "hunter2" not in str(exc.value) and CREDENTIALS["client_secret"] not in str(exc.value)


def _stage_ready_chunk(tmp_path: Path, dms_connections, run_id: str) -> tuple[Any, dict[str, Any], Stage]:
    from dms.operators.load import LoadOperator

    spec_file = tmp_path / "insert_contacts.yaml"
    spec_file.write_text(INSERT_SPEC)
    # Waiting in this process (not deferred to a trigger) keeps these tests about the ledger alone.
    operator = LoadOperator(
        task_id="load", spec_file=str(spec_file), object_name="contacts", chunk={}, poll_seconds=0.2, deferrable=False
    )
    stage = operator.stage()
    ready = pa.table({"__row": [2, 3, 4], "LastName": ["Li", "Wang", "Zhang"], "Email": ["a@x.cn", "b@x.cn", "bad"]})
    stage.put_table(ChunkKey("dms_insert_contacts", run_id, "contacts", 0), "ready", ready)
    operator.chunk = {"object": "contacts", "chunk": 0, "rows": 3, "ready": 3, "rejected": 0}
    return operator, _context(run_id), stage


def test_retried_load_resumes_the_ledger_job_instead_of_inserting_twice(
    tmp_path: Path, dms_connections, emulator: EmulatorProcess
) -> None:
    operator, context, stage = _stage_ready_chunk(tmp_path, dms_connections, "retry-1")
    first = operator.execute(context)
    second = operator.execute(context)
    assert first["job_id"] == second["job_id"]
    assert (second["loaded"], second["failed"]) == (2, 1)
    contacts = emulator.admin("/__emulator/export/Contact")["records"]
    assert sorted(c["LastName"] for c in contacts) == ["Li", "Wang"]


def test_load_killed_after_creating_its_job_aborts_it_and_loads_once(
    tmp_path: Path, dms_connections, emulator: EmulatorProcess
) -> None:
    from dms.salesforce.bulk2 import Bulk2Client

    operator, context, stage = _stage_ready_chunk(tmp_path, dms_connections, "retry-2")
    client = Bulk2Client(DmsSalesforceHook().get_conn())
    # What a task killed mid-upload leaves: a job in the ledger, still Open, partly uploaded.
    orphan = client.create_job("Contact", "insert")
    client.upload(orphan["id"], b'"LastName","Email"\n"Li","a@x.cn"\n')
    stage.record(ChunkKey("dms_insert_contacts", "retry-2", "contacts", 0), job_id=orphan["id"], state="Open")
    result = operator.execute(context)
    assert result["job_id"] != orphan["id"]
    assert client.get_job(orphan["id"])["state"] == "Aborted"
    assert sorted(c["LastName"] for c in emulator.admin("/__emulator/export/Contact")["records"]) == ["Li", "Wang"]


def test_full_refresh_clears_one_objects_stage_and_keys_and_leaves_the_others(redis_server: RedisServer) -> None:
    client = redis.Redis(host=redis_server.host, port=redis_server.port, db=TEST_STAGING_DB)
    stage = Stage(client, ttl_seconds=60)
    for obj in ("accounts", "contacts"):
        key = ChunkKey("dag", "run:1", obj, 0)
        stage.put_table(key, "raw", pa.table({"a": ["x"]}))
        stage.record(key, job_id="750x")
        stage.record(ChunkKey("dag", "run:1", f"{obj}~relink_", 0), job_id="750y")
        client.sadd(f"dms:keys:dag:run:1:{obj}", "k")
        client.hset(f"dms:keys-claimed:dag:run:1:{obj}", "k", "0:2")
    assert stage.clear_run("dag", "run:1", "accounts") == 5
    assert not list(client.scan_iter(match="dms:*:dag:run:1:accounts*"))
    assert len(list(client.scan_iter(match="dms:*:dag:run:1:contacts*"))) == 5
