"""`make demo`: start the local stack, run the sample migration with `airflow dags test`, print the reconciliation.

Services that already answer on their usual ports are used as they are; the ones this
script starts are stopped when it ends, so it leaves no process behind. Records stay in
.run/emulator.sqlite, so a second demo upserts onto the first one's records (and shows it).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from scripts import airflow_settings
from scripts.audit_server import start_audit_server
from scripts.services import ensure_redis, free_port, start_emulator

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / ".run"
DAG_ID = "dms_legacy_crm_accounts"
ORG = ROOT / "include" / "org" / "sample_org.yaml"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _say(message: str) -> None:
    print(f"demo: {message}", flush=True)


def _table(summary: dict[str, Any]) -> str:
    header = f"{'object':<12}{'source':>8}{'loaded':>8}{'created':>9}{'rejected':>10}{'failed':>8}"
    lines = [header, "-" * len(header)]
    for name, c in summary["objects"].items():
        lines.append(
            f"{name:<12}{c['source']:>8}{c['loaded']:>8}{c['created']:>9}{c['rejected']:>10}{c['failed']:>8}"
        )
    return "\n".join(lines)


def main() -> int:
    RUN.mkdir(exist_ok=True)
    stoppers = []
    try:
        redis_server = ensure_redis(RUN)
        stoppers.append(redis_server.stop)
        _say(f"redis on {redis_server.host}:{redis_server.port}")
        audit_port = 5984 if _port_free(5984) else free_port()
        audit = start_audit_server(port=audit_port, data_dir=RUN / "audit")
        stoppers.append(audit.stop)
        _say(f"audit store (pouchdb-server) on {audit.url}")
        emulator_port = 8443 if _port_free(8443) else free_port()
        emulator = start_emulator(
            ORG, cert_dir=RUN / "certs", extra_args=("--db", str(RUN / "emulator.sqlite")), port=emulator_port
        )
        stoppers.append(emulator.stop)
        _say(f"Salesforce emulator on {emulator.base_url}")

        env = dict(os.environ)
        for key, value in airflow_settings.as_env().items():
            env[key] = (
                value.replace("127.0.0.1:8443", f"127.0.0.1:{emulator_port}")
                .replace("127.0.0.1:5984", f"127.0.0.1:{audit_port}")
                .replace('"port": 6379', f'"port": {redis_server.port}')
            )
        airflow_home = RUN / "airflow"
        env.update(
            AIRFLOW_HOME=str(airflow_home),
            AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
            AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            REQUESTS_CA_BUNDLE=str(emulator.ca_file),
            DMS_RESULTS_DIR=str(RUN / "results"),
            PYTHONPATH=os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]),
        )
        airflow = str(Path(sys.executable).with_name("airflow"))
        log_path = RUN / "demo-airflow.log"
        with log_path.open("w") as log:
            _say("preparing the Airflow metadata DB (.run/airflow)")
            subprocess.run([airflow, "db", "migrate"], env=env, stdout=log, stderr=log, check=True)
            _say(f"running {DAG_ID} with `airflow dags test` (log: {log_path.relative_to(ROOT)})")
            started = time.time()
            result = subprocess.run([airflow, "dags", "test", DAG_ID], env=env, stdout=log, stderr=log)
        summaries = sorted((RUN / "results" / DAG_ID).glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
        if not summaries or summaries[-1].stat().st_mtime < started:
            _say(f"the run produced no summary; the end of its log:\n{log_path.read_text()[-4000:]}")
            return 1
        summary = json.loads(summaries[-1].read_text())
        accounts = emulator.admin("/__emulator/export/Account?include_deleted=false")["records"]
        print()
        print(f"Reconciliation of run {summary['run_id']}: {summary['status'].upper()}")
        print(_table(summary))
        for name, c in summary["objects"].items():
            print(f"  {name} rejects: {c['rejects_csv']}")
            print(f"  {name} errors:  {c['errors_csv']}")
        for problem in summary["problems"]:
            print(f"  problem: {problem}")
        print(f"Salesforce (emulator) now holds {len(accounts)} Account records; run `make demo` again: "
              "the same rows update, nothing is duplicated.")
        return 0 if result.returncode == 0 and summary["status"] == "success" else 1
    finally:
        for stop in reversed(stoppers):
            stop()


if __name__ == "__main__":
    sys.exit(main())
