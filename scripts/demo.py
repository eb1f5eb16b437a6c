"""`make demo`: start the local stack, run the sample migration with `airflow dags test`, print the reconciliation.

Services that already answer on their usual ports are used as they are; the ones this
script starts are stopped when it ends, so it leaves no process behind. Records stay in
.run/emulator.sqlite, so a second demo upserts onto the first one's records (and shows it).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from scripts.stack import ROOT, RUN, local_stack, say

DAG_ID = "dms_legacy_crm_accounts"


def _table(summary: dict[str, Any]) -> str:
    header = f"{'object':<12}{'source':>8}{'loaded':>8}{'created':>9}{'rejected':>10}{'failed':>8}"
    lines = [header, "-" * len(header)]
    for name, c in summary["objects"].items():
        lines.append(f"{name:<12}{c['source']:>8}{c['loaded']:>8}{c['created']:>9}{c['rejected']:>10}{c['failed']:>8}")
    return "\n".join(lines)


def main() -> int:
    with local_stack(RUN / "airflow") as stack:
        log_path = RUN / "demo-airflow.log"
        with log_path.open("w") as log:
            say("preparing the Airflow metadata DB (.run/airflow)")
            subprocess.run([stack.airflow, "db", "migrate"], env=stack.env, stdout=log, stderr=log, check=True)
            say(f"running {DAG_ID} with `airflow dags test` (log: {log_path.relative_to(ROOT)})")
            started = time.time()
            result = subprocess.run([stack.airflow, "dags", "test", DAG_ID], env=stack.env, stdout=log, stderr=log)
        summaries = sorted((RUN / "results" / DAG_ID).glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
        if not summaries or summaries[-1].stat().st_mtime < started:
            say(f"the run produced no summary; the end of its log:\n{log_path.read_text()[-4000:]}")
            return 1
        summary = json.loads(summaries[-1].read_text())
        accounts = stack.emulator.admin("/__emulator/export/Account?include_deleted=false")["records"]
        print()
        print(f"Reconciliation of run {summary['run_id']}: {summary['status'].upper()}")
        print(_table(summary))
        for name, c in summary["objects"].items():
            print(f"  {name} rejects: {Path(c['rejects_csv']).relative_to(ROOT)}")
            print(f"  {name} errors:  {Path(c['errors_csv']).relative_to(ROOT)}")
        for problem in summary["problems"]:
            print(f"  problem: {problem}")
        print(
            f"Salesforce (emulator) now holds {len(accounts)} Account records; run `make demo` again: "
            "the same rows update, nothing is duplicated."
        )
        return 0 if result.returncode == 0 and summary["status"] == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
