"""`make airflow`: Airflow standalone (UI and API on :8080) with the project's DAGs and the local stack.

Options (the browser tests use them to run their own Airflow beside a developer's):
``--port`` for the UI and API, ``--home`` for AIRFLOW_HOME (its metadata DB and generated
passwords) and ``--results-dir`` for the reject and error CSVs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from scripts import airflow_settings
from scripts.processes import stop_families
from scripts.stack import RUN, local_stack, say

PASSWORDS = "simple_auth_manager_passwords.json.generated"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.airflow_standalone",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=8080, help="port of the UI and API (default 8080)")
    parser.add_argument(
        "--home", type=Path, default=RUN / "airflow-standalone", help="AIRFLOW_HOME (default .run/airflow-standalone)"
    )
    parser.add_argument("--results-dir", type=Path, help="where runs write their CSVs (default .run/results)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    home = args.home.resolve()
    port = args.port
    with local_stack(home) as stack:
        env = {**stack.env, "AIRFLOW__API__PORT": str(port)}
        # Task processes reach the API server here; Airflow's default is http://localhost:8080, so
        # without this every task of an Airflow on another port fails before it starts.
        env.setdefault("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", f"http://127.0.0.1:{port}/execution/")
        if args.results_dir is not None:
            env["DMS_RESULTS_DIR"] = str(args.results_dir.resolve())
        # The DMS loads run in pools (airflow_settings.yaml); the scheduler never starts a task
        # whose pool does not exist, so they are created before Airflow starts.
        say("creating the metadata DB and the pools of airflow_settings.yaml")
        subprocess.run([stack.airflow, "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
        airflow_settings.apply_pools(airflow=stack.airflow, env=env)
        process = subprocess.Popen([stack.airflow, "standalone"], env=env)
        try:
            password_file = Path(home) / PASSWORDS
            deadline = time.monotonic() + 180
            while not password_file.exists() and time.monotonic() < deadline and process.poll() is None:
                time.sleep(1)
            if password_file.exists():
                users = json.loads(password_file.read_text())
                for user, password in users.items():
                    say(f"Airflow UI: http://127.0.0.1:{port}  login {user} / {password}  (Ctrl-C stops everything)")
            return process.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            # `airflow standalone` leaves its executor's workers behind on a plain SIGTERM to itself
            # (FACTS.md): its whole family is signalled by PID, and killed after the grace period.
            stop_families([process], grace=30.0)


if __name__ == "__main__":
    sys.exit(main())
