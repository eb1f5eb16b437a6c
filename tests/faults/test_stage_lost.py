"""Redis restarted without its data between transform and load: the run fails clearly and loads nothing.

The stage lives in a private redis-server with no persistence, started for this test: the
shared Redis of the other test sessions is never restarted or flushed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.services import EmulatorProcess, RedisServer, start_redis
from tests.conftest import ROOT
from tests.faults.checks import assert_each_key_once, assert_reconciled, task_errors

DAG_ID = "dms_legacy_crm_accounts"

pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.fixture
def private_redis(tmp_path: Path, dms_connections: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """A redis-server of this test only, holding the stage (the `dms_staging` connection points at it)."""
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = start_redis(workdir)
    monkeypatch.setenv(
        "AIRFLOW_CONN_DMS_STAGING",
        json.dumps({"conn_type": "redis", "host": server.host, "port": server.port, "extra": {"db": 1}}),
    )
    yield server
    server.stop()


def _dag() -> Any:
    from dms.dag_factory import build_dags

    return build_dags(ROOT / "include" / "migrations")[DAG_ID]


def test_stage_lost_before_the_load_fails_the_run_and_loads_nothing(
    emulator: EmulatorProcess, private_redis: RedisServer, capfd: pytest.CaptureFixture[str]
) -> None:
    import redis

    stage = redis.Redis(host=private_redis.host, port=private_redis.port, db=1)
    restarts: list[int] = []

    def lose_the_stage(context: Any) -> None:
        # Right before the first load runs, every transform having staged its chunk: the moment
        # the issue names. Later loads find the restarted, empty Redis as it is.
        if not restarts:
            assert stage.keys("dms:stage:*:ready:*"), "the transforms staged nothing to lose"
            private_redis.restart()
            restarts.append(context["ti"].map_index)

    dag = _dag()
    dag.get_task("accounts.load").on_execute_callback = [lose_the_stage]
    run = dag.test()

    assert restarts, "the fault was never injected"
    assert run.state == "failed"
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    loads = {index: state for (task, index), state in states.items() if task == "accounts.load"}
    assert loads and set(loads.values()) == {"failed"}, states
    assert all(state == "success" for (task, _), state in states.items() if task == "accounts.transform")
    # Nothing partial: not one row reached Salesforce.
    assert emulator.admin("/__emulator/export/Account")["records"] == []
    message = task_errors(capfd)
    assert f"run {run.run_id} of {DAG_ID}: the staged 'ready' table of chunk {restarts[0]} of accounts" in message
    assert "clear this run's task accounts.extract together with its downstream tasks" in message

    # The remedy the message gives: a new run stages the source again and loads every row once.
    fresh = _dag().test()
    assert fresh.state == "success"
    counts = assert_reconciled(DAG_ID, fresh.run_id, 12)
    assert (counts["loaded"], counts["rejected"], counts["failed"]) == (8, 4, 0)
    assert_each_key_once(emulator, counts["loaded"])
