"""Airflow with the CeleryExecutor, as a deployment runs it: every component its own process.

PostgreSQL holds the metadata (a fresh database per test, dropped at the end), Redis is the
Celery broker (a database of its own, never the stage's), and the api-server, scheduler,
dag-processor, triggerer and two Celery workers run as separate `airflow` processes. Every one
carries a marker in its environment, so that the fixture can prove none is left when it ends;
they are stopped by PID, each with everything it forked (scripts.processes).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from scripts import airflow_settings
from scripts.processes import describe, processes_with, stop_families
from scripts.services import (
    PostgresServer,
    RabbitMQServer,
    RedisServer,
    die_with_parent,
    ensure_rabbitmq,
    free_port,
)
from tests.conftest import ROOT
from tests.integration import conftest as integration
from tests.integration.conftest import TEST_STAGING_DB

# The integration suite's service fixtures, so that this suite uses its Redis, PostgreSQL,
# stage database (TEST_STAGING_DB) and DMS connections; pytest finds fixtures by name here.
redis_server = integration.redis_server
postgres_server = integration.postgres_server
dms_connections = integration.dms_connections

MARKER_ENV = "DMS_CELERY_TEST"
ADMIN = "admin"
WORKERS = ("w1", "w2")
# Celery's broker: its own database, never the stage's (the staging hook refuses that) nor db 0,
# where a developer's Airflow on the machine's shared Redis keeps its queues.
BROKER_DB = 9 if TEST_STAGING_DB != 9 else 8
STARTUP_SECONDS = 150
SOURCE_SPEC = ROOT / "include" / "migrations" / "legacy_crm_accounts.yaml"
SPEC_NAME = "celery_accounts"
DAG_ID = f"dms_{SPEC_NAME}"

# Imported by the workers' task processes through [core] hostname_callable: both workers run on
# this one machine, so the FQDN Airflow records by default would not tell them apart. Each worker
# gets its Celery node name in DMS_CELERY_WORKER_NAME; elsewhere this falls back to the FQDN.
HOSTNAME_MODULE = """\
import os
import socket


def worker_hostname() -> str:
    name = os.environ.get("DMS_CELERY_WORKER_NAME")
    return f"{name}@{socket.getfqdn()}" if name else socket.getfqdn()
"""


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


@dataclass
class CeleryAirflow:
    """A running Airflow with two Celery workers: its API and its components' logs."""

    base_url: str
    password: str
    logs: dict[str, Path]
    processes: dict[str, subprocess.Popen[bytes]]
    broker_url: str
    env: dict[str, str] = field(default_factory=dict, repr=False)  # what the components run with (for the CLI)
    _token: str | None = field(default=None, repr=False)

    def token(self) -> str:
        """A JWT for the admin from the simple auth manager's token endpoint."""
        if self._token is None:
            response = requests.post(
                f"{self.base_url}/auth/token", json={"username": ADMIN, "password": self.password}, timeout=30
            )
            response.raise_for_status()
            self._token = response.json()["access_token"]
        return self._token

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        # JSON, not the log endpoint's streamed NDJSON: the tests read whole answers.
        headers = {"Authorization": f"Bearer {self.token()}", "Accept": "application/json"}
        return requests.request(method, f"{self.base_url}{path}", headers=headers, timeout=30, **kwargs)

    def get(self, path: str, **params: Any) -> Any:
        response = self.request("GET", path, params=params)
        assert response.status_code == 200, f"GET {path}: HTTP {response.status_code} {response.text[:500]}"
        return response.json()

    def diagnostics(self) -> str:
        """Each component's exit code and the end of its log, for a failure message."""
        parts = []
        for name, process in self.processes.items():
            parts.append(f"--- {name} (exit code {process.poll()}) ---\n{_tail(self.logs[name])}")
        return "\n".join(parts)

    def check_running(self) -> None:
        exited = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
        if exited:
            pytest.fail(f"Airflow components exited: {exited}\n{self.diagnostics()}")


def _clean_env() -> dict[str, str]:
    """The machine's environment without the test session's Airflow settings and DMS roots.

    tests/conftest.py points AIRFLOW_* at the session's SQLite home; none of that may reach
    this Airflow, which gets its whole configuration from the fixture.
    """
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "DMS_", "PYTEST_")) and key not in ("PYTHONPATH",)
    }


def _spec_dir(workdir: Path) -> Path:
    """The sample accounts spec under another name, with every non-empty chunk loaded by a Bulk job.

    bulk_threshold 0 sends even a 2-row chunk through Bulk API 2.0, so the load defers to the
    triggerer (smaller chunks otherwise use sObject Collections and never defer). It reads the
    same file under the default data root.
    """
    text = SOURCE_SPEC.read_text(encoding="utf-8")
    assert "name: legacy_crm_accounts\n" in text
    text = text.replace("name: legacy_crm_accounts\n", f"name: {SPEC_NAME}\nbulk_threshold: 0\n", 1)
    spec_dir = workdir / "specs"
    spec_dir.mkdir()
    (spec_dir / f"{SPEC_NAME}.yaml").write_text(text, encoding="utf-8")
    return spec_dir


@contextlib.contextmanager
def _database(server: PostgresServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this Airflow; dropped (connections and all) at the end."""
    name = f"dms_celery_{uuid.uuid4().hex[:12]}"
    server.admin(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        # WITH (FORCE): a component killed after the grace period may have left a session open.
        server.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _flush_broker(redis_server: RedisServer) -> None:
    """Empty the broker's database: a message left by an aborted earlier run must not reach a worker."""
    import redis

    redis.Redis(host=redis_server.host, port=redis_server.port, db=BROKER_DB).flushdb()


@pytest.fixture(scope="session")
def rabbitmq_server() -> Iterator[RabbitMQServer]:
    """The RabbitMQ on :5672, or a private node started (and removed) for this session."""
    server = ensure_rabbitmq()
    yield server
    server.stop()


@pytest.fixture
def celery_airflow(
    request: pytest.FixtureRequest,
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    dms_connections: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[CeleryAirflow]:
    """api-server, scheduler, dag-processor, triggerer and two Celery workers; all stopped at the end.

    Function-scoped because it takes the DMS connections (a clean stage, a reset emulator and a
    results directory), which are per test.
    """
    workdir = tmp_path_factory.mktemp("celery-airflow")
    home, pythonpath_dir = workdir / "home", workdir / "pythonpath"
    home.mkdir()
    pythonpath_dir.mkdir()
    (pythonpath_dir / "dms_celery_hostname.py").write_text(HOSTNAME_MODULE)
    password = secrets.token_urlsafe(12)
    # Written before the API server starts, so that it uses this password instead of generating one.
    (home / "passwords.json").write_text(json.dumps({ADMIN: password}))
    marker_value = uuid.uuid4().hex
    port = free_port()
    redis_url = f"redis://{redis_server.host}:{redis_server.port}/{BROKER_DB}"
    # Redis as the broker (the compose stack's choice); or, as the seed's system ran it,
    # RabbitMQ as the broker with Redis keeping the task results.
    if getattr(request, "param", "redis") == "rabbitmq":
        broker_url, result_backend = request.getfixturevalue("rabbitmq_server").url, redis_url
    else:
        broker_url, result_backend = redis_url, None
    _flush_broker(redis_server)
    airflow = str(Path(sys.executable).with_name("airflow"))
    processes: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, Path] = {}

    with _database(postgres_server) as db_name:
        db = f"postgres@{postgres_server.host}:{postgres_server.port}/{db_name}"
        env = {
            **_clean_env(),
            **dms_connections,
            MARKER_ENV: marker_value,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT), str(pythonpath_dir)]),
            # Components start further `airflow` processes (the task supervisor's) from PATH.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{db}",
            "AIRFLOW__CELERY__BROKER_URL": broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": result_backend or f"db+postgresql://{db}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # Paused at creation (the default): the other specs' DAGs, one of them scheduled,
            # must not run here; the test unpauses its own DAG through the API.
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__CORE__FERNET_KEY": _fernet_key(),
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            # Log servers on free ports (the components skip them anyway): 8793/8794 may be taken
            # by a developer's Airflow on this machine.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "DMS_SPEC_PATH": str(_spec_dir(workdir)),
            # The SQL sample's database (scripts.sample_db loads it when a test needs it).
            "AIRFLOW_CONN_LEGACY_ERP": json.dumps(
                {
                    "conn_type": "postgres",
                    "host": postgres_server.host,
                    "port": postgres_server.port,
                    "schema": "dms_legacy_erp",
                    "login": "postgres",
                }
            ),
        }

        def start(name: str, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
            logs[name] = workdir / f"{name}.log"
            with open(logs[name], "ab") as log:
                process = subprocess.Popen(
                    [airflow, *args],
                    cwd=workdir,
                    env={**env, **(extra_env or {})},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    preexec_fn=die_with_parent,  # a killed pytest leaves no component behind
                )
            processes[name] = process
            return process

        try:
            migrate = start("db-migrate", "db", "migrate")
            if migrate.wait(timeout=180) != 0:
                pytest.fail(f"airflow db migrate failed:\n{_tail(logs['db-migrate'])}")
            del processes["db-migrate"]
            # One uvicorn worker: it serves this test's few requests, and CPU is short on 2 cores.
            start("api-server", "api-server", "--port", str(port), "--host", "127.0.0.1", "--workers", "1")
            start("scheduler", "scheduler", "--skip-serve-logs")
            start("dag-processor", "dag-processor")
            start("triggerer", "triggerer", "--skip-serve-logs")
            for worker in WORKERS:
                start(
                    worker,
                    "celery",
                    "worker",
                    "--celery-hostname",
                    f"{worker}@%h",
                    "--concurrency",
                    "2",
                    "--skip-serve-logs",
                    # No waiting for the other worker's hello at start-up; events are not used here.
                    "--without-mingle",
                    "--without-gossip",
                    extra_env={
                        "DMS_CELERY_WORKER_NAME": worker,
                        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "dms_celery_hostname.worker_hostname",
                    },
                )
            stack = CeleryAirflow(f"http://127.0.0.1:{port}", password, logs, processes, broker_url, env)
            _wait_until_ready(stack)
            _create_pools(stack)
            yield stack
        finally:
            stop_families(processes.values())
            _ensure_gone(f"{MARKER_ENV}={marker_value}")
            _flush_broker(redis_server)
            _keep_logs(logs)


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def _wait_until_ready(stack: CeleryAirflow) -> None:
    """The API answers, the DAG is parsed, and both Celery workers answer a ping on the broker.

    The run is triggered only then: a worker still starting would leave every chunk to the other.
    """
    from celery import Celery

    deadline = time.monotonic() + STARTUP_SECONDS
    last = "nothing tried yet"
    app = Celery(broker=stack.broker_url)
    dag_ready = False
    try:
        while time.monotonic() < deadline:
            stack.check_running()
            try:
                if not dag_ready:
                    response = stack.request("GET", f"/api/v2/dags/{DAG_ID}")
                    dag_ready = response.status_code == 200
                    last = f"GET the DAG: HTTP {response.status_code}"
                if dag_ready:
                    replies = app.control.ping(timeout=1.0) or []
                    answered = {name.split("@", 1)[0] for reply in replies for name in reply}
                    last = f"Celery workers that answered a ping: {sorted(answered)}"
                    if answered >= set(WORKERS):
                        return
            except requests.RequestException as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(1)
    finally:
        app.close()
    pytest.fail(f"Airflow was not ready after {STARTUP_SECONDS} s ({last}):\n{stack.diagnostics()}")


def _create_pools(stack: CeleryAirflow) -> None:
    """The pools of airflow_settings.yaml, as `make airflow` has them: a load in a missing pool never runs.

    Through the REST API rather than scripts.airflow_settings.apply_pools, which starts the
    airflow CLI once per pool (seconds each on a small machine).
    """
    for pool in airflow_settings.load()["pools"]:
        body = {"name": pool["pool_name"], "slots": pool["pool_slot"], "description": pool.get("pool_description")}
        response = stack.request("POST", "/api/v2/pools", json=body)
        assert response.status_code == 201, f"POST /api/v2/pools: HTTP {response.status_code} {response.text[:500]}"


def _ensure_gone(marker: str, grace: float = 10.0) -> None:
    """Wait for every process with ``marker`` to end; kill (by PID) and report any straggler."""
    deadline = time.monotonic() + grace
    while (left := processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if not left:
        return
    described = [describe(pid) for pid in left]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    pytest.fail(f"the Celery Airflow left processes running (now killed): {described}")


def _keep_logs(logs: dict[str, Path]) -> None:
    """The components' logs under logs/celery-artifacts/ (git ignores logs/), to read after a failure."""
    target = ROOT / "logs" / "celery-artifacts"
    target.mkdir(parents=True, exist_ok=True)
    for name, path in logs.items():
        with contextlib.suppress(OSError):
            (target / f"{name}.log").write_bytes(path.read_bytes())
