"""`make airflow`: Airflow standalone (UI and API on :8080) with the project's DAGs and the local stack."""

from __future__ import annotations

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


def main() -> int:
    home = RUN / "airflow-standalone"
    with local_stack(home) as stack:
        env = {**stack.env, "AIRFLOW__API__PORT": "8080"}
        process = subprocess.Popen([stack.airflow, "standalone"], env=env)
        try:
            password_file = Path(home) / PASSWORDS
            deadline = time.monotonic() + 180
            while not password_file.exists() and time.monotonic() < deadline and process.poll() is None:
                time.sleep(1)
            if password_file.exists():
                users = json.loads(password_file.read_text())
                for user, password in users.items():
                    say(f"Airflow UI: http://127.0.0.1:8080  login {user} / {password}  (Ctrl-C stops everything)")
            return process.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            _stop(process)


if __name__ == "__main__":
    sys.exit(main())
