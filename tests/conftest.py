"""Fixtures shared by every test suite: real services started on free ports."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Airflow reads its configuration at first import: point it at a throw-away home and at
# this project's DAGs before any test imports it, so no test touches ~/airflow.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="dms-airflow-home-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}"
# The emulator and the engine are importable the way Airflow and `python -m` see them.
for entry in (ROOT, ROOT / "plugins"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from scripts.audit_server import AuditServer, running_servers, start_audit_server  # noqa: E402
from scripts.services import EmulatorProcess, start_emulator  # noqa: E402

SAMPLE_ORG = ROOT / "include" / "org" / "sample_org.yaml"


@pytest.fixture(scope="session")
def emulator_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One CA for every emulator in the session, trusted through REQUESTS_CA_BUNDLE.

    simple_salesforce and the providers use requests, which reads that variable; sharing
    the CA lets extra emulators (other flags, a file store) be reached by the same clients.
    """
    from salesforce_emulator.tls import ensure_certificates

    cert_dir = tmp_path_factory.mktemp("emulator-certs")
    os.environ["REQUESTS_CA_BUNDLE"] = str(ensure_certificates(cert_dir))
    return cert_dir


@pytest.fixture(scope="session")
def emulator(emulator_certs: Path) -> Iterator[EmulatorProcess]:
    """One HTTPS Salesforce emulator for the whole session, in-memory store."""
    proc = start_emulator(SAMPLE_ORG, cert_dir=emulator_certs)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def emulator_factory(emulator_certs: Path) -> Iterator:
    """Start extra emulators with their own flags (a small upload limit, a file store, faults)."""
    started: list[EmulatorProcess] = []

    def factory(*extra_args: str, org: Path = SAMPLE_ORG) -> EmulatorProcess:
        proc = start_emulator(org, cert_dir=emulator_certs, extra_args=extra_args)
        started.append(proc)
        return proc

    yield factory
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session")
def audit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditServer]:
    """One pouchdb-server for the session, on disk as the demo runs it, without an admin."""
    server = start_audit_server(data_dir=tmp_path_factory.mktemp("audit-data"))
    try:
        yield server
    finally:
        server.stop()
        leaked = running_servers()
        for other in leaked:
            other.stop()
        assert not leaked, f"audit servers left running by the tests: {[s.pid for s in leaked]}"
