"""The local stack for `make demo` and `make airflow`: Redis, the audit store and the emulator.

A service that already answers on its usual port is used as it is; the others are started
here and stopped when the `with` block ends, so nothing is left running.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from scripts import airflow_settings
from scripts.audit_server import start_audit_server
from scripts.services import EmulatorProcess, ensure_redis, free_port, start_emulator

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / ".run"
ORG = ROOT / "include" / "org" / "sample_org.yaml"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def say(message: str) -> None:
    print(f"dms: {message}", flush=True)


@dataclass
class Stack:
    env: dict[str, str]
    emulator: EmulatorProcess
    stoppers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def airflow(self) -> str:
        return str(Path(sys.executable).with_name("airflow"))


@contextmanager
def local_stack(airflow_home: Path) -> Iterator[Stack]:
    """Start what is missing, and yield the environment for the airflow CLI."""
    RUN.mkdir(exist_ok=True)
    stoppers: list[Callable[[], None]] = []
    # SIGTERM (kill, a CI timeout) must unwind through `finally` like Ctrl-C does, so that
    # every service started here is stopped.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        redis_server = ensure_redis(RUN)
        stoppers.append(redis_server.stop)
        say(f"redis on {redis_server.host}:{redis_server.port}")
        audit_port = 5984 if _port_free(5984) else free_port()
        audit = start_audit_server(port=audit_port, data_dir=RUN / "audit")
        stoppers.append(audit.stop)
        say(f"audit store (pouchdb-server) on {audit.url}")
        emulator_port = 8443 if _port_free(8443) else free_port()
        # Records persist in .run/, so a second run upserts onto the first one's records.
        emulator = start_emulator(
            ORG, cert_dir=RUN / "certs", extra_args=("--db", str(RUN / "emulator.sqlite")), port=emulator_port
        )
        stoppers.append(emulator.stop)
        say(f"Salesforce emulator on {emulator.base_url}")

        env = dict(os.environ)
        for key, value in airflow_settings.as_env().items():
            # The shipped settings name the usual ports; follow the services where they really are.
            env[key] = (
                value.replace("127.0.0.1:8443", f"127.0.0.1:{emulator_port}")
                .replace("127.0.0.1:5984", f"127.0.0.1:{audit_port}")
                .replace('"port": 6379', f'"port": {redis_server.port}')
            )
        env.update(
            AIRFLOW_HOME=str(airflow_home),
            AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
            AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            REQUESTS_CA_BUNDLE=str(emulator.ca_file),
            DMS_RESULTS_DIR=str(RUN / "results"),
            PYTHONPATH=os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]),
            # `airflow standalone` starts its components as `airflow ...` from PATH.
            PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        )
        yield Stack(env=env, emulator=emulator, stoppers=stoppers)
    finally:
        for stop in reversed(stoppers):
            stop()
        signal.signal(signal.SIGTERM, previous)
