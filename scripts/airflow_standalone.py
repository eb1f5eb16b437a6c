"""`make airflow`: Airflow standalone (UI and API on :8080) with the project's DAGs and the local stack.

Options (the browser tests use them to run their own Airflow beside a developer's):
``--port`` for the UI and API, ``--home`` for AIRFLOW_HOME (its metadata DB and generated
passwords) and ``--results-dir`` for the reject and error CSVs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from scripts.stack import RUN, local_stack, say

PASSWORDS = "simple_auth_manager_passwords.json.generated"


def _stop(process: subprocess.Popen[bytes]) -> None:
    # `airflow standalone` leaves its executor's workers behind on a plain SIGTERM to itself:
    # stop each direct child first, then the parent (measured, see FACTS.md).
    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(process.pid)], capture_output=True, text=True)
    for pid in children.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGTERM)
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


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
            _stop(process)


if __name__ == "__main__":
    sys.exit(main())
