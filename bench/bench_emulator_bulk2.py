"""Benchmark: a Bulk API 2.0 ingest of N Account rows (10 fields) into the emulator.

    .venv/bin/python bench/bench_emulator_bulk2.py [--rows 1000000]

Generates a deterministic CSV, starts `python -m salesforce_emulator` (in-memory store) as a
subprocess, and runs the insert through simple_salesforce's unmodified bulk2 client. It
prints:

* the ingest rate: rows / (job JobComplete - job created), both stamped by the emulator, so
  the client's poll interval does not blur it. This is "create -> upload -> UploadComplete ->
  JobComplete", the figure held against the 50,000 rows/s target;
* the wall-clock rate seen by the client, which adds simple_salesforce's own CSV splitting
  and its poll interval;
* the raw CSV parsing rate of the same file in this run, and the ingest rate against it.

Exits 1 when the ingest rate is below the target, or when rows were lost.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from simple_salesforce import Salesforce

ROOT = Path(__file__).resolve().parents[1]
ORG = ROOT / "include" / "org" / "sample_org.yaml"
TARGET_ROWS_PER_S = 50_000
VERSION = "62.0"
CREDENTIALS = {
    "grant_type": "password",
    "username": "dms@example.com",
    "password": "dms-password",
    "client_id": "dms-local-client",
    "client_secret": "dms-local-secret",
}
HEADER = [
    "Name",
    "Legacy_Id__c",
    "AccountNumber",
    "Industry",
    "Phone",
    "AnnualRevenue",
    "NumberOfEmployees",
    "Active__c",
    "Customer_Since__c",
    "BillingCity",
]
INDUSTRIES = ["Agriculture", "Banking", "Construction", "Education", "Energy", "Finance", "Retail", "Technology"]


def write_csv(path: Path, rows: int) -> None:
    """A deterministic 10-column Account CSV: text, picklist, number, boolean and date fields."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADER)
        for i in range(rows):
            writer.writerow(
                [
                    f"Account {i}",
                    f"BENCH-{i:09d}",
                    f"AN-{i * 7 % 1_000_003}",
                    INDUSTRIES[i % len(INDUSTRIES)],
                    f"+1 555 {i % 10_000:04d}",
                    f"{(i % 100_000) * 12.5:.2f}",
                    str(i % 5_000),
                    "true" if i % 3 else "false",
                    f"20{10 + i % 15}-{1 + i % 12:02d}-{1 + i % 28:02d}",
                    f"City {i % 500}",
                ]
            )


def raw_parse_seconds(path: Path) -> float:
    """How long plain csv.reader takes over the file: the floor any CSV ingest stands on."""
    started = time.perf_counter()
    with path.open(newline="", encoding="utf-8") as handle:
        for _ in csv.reader(handle):
            pass
    return time.perf_counter() - started


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_emulator(workdir: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    cert_dir = workdir / "certs"
    log = (workdir / "emulator.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "salesforce_emulator", "--org", str(ORG), "--port", str(port)]
        + ["--cert-dir", str(cert_dir)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"https://127.0.0.1:{port}"
    ca = cert_dir / "ca.pem"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the emulator exited: {(workdir / 'emulator.log').read_text()[-2000:]}")
        if ca.exists():
            try:
                requests.get(f"{base}/__emulator/health", verify=str(ca), timeout=2)
                return proc, base, ca
            except requests.RequestException:
                pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the emulator did not start within 60 s")


def stamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--wait", type=float, default=0.5, help="simple_salesforce's poll interval seed (s)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-bulk2-") as tmp:
        workdir = Path(tmp)
        data = workdir / "accounts.csv"
        write_csv(data, args.rows)
        parse_s = raw_parse_seconds(data)
        proc, base, ca = start_emulator(workdir)
        try:
            token = requests.post(f"{base}/services/oauth2/token", data=CREDENTIALS, verify=str(ca), timeout=30).json()
            # simple_salesforce's bulk2 client builds its own requests calls; requests reads the CA from here.
            os.environ["REQUESTS_CA_BUNDLE"] = str(ca)
            sf = Salesforce(instance_url=token["instance_url"], session_id=token["access_token"], version=VERSION)
            started = time.perf_counter()
            results = sf.bulk2.Account.insert(csv_file=str(data), wait=args.wait)
            wall_s = time.perf_counter() - started
            jobs: list[dict[str, Any]] = [
                sf.bulk2.Account._client.get_job(r["job_id"], False)  # noqa: SLF001 - read-only job info
                for r in results
            ]
            count = sf.query("SELECT COUNT() FROM Account")["totalSize"]
            for job in jobs:  # frees the emulator's copy of the upload
                requests.delete(
                    f"{base}/services/data/v{VERSION}/jobs/ingest/{job['id']}",
                    headers={"Authorization": f"Bearer {token['access_token']}"},
                    verify=str(ca),
                    timeout=60,
                )
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()

    # Jobs run one after another; each is timed from its creation to its completion.
    ingest_s = sum(stamp(j["systemModstamp"]) - stamp(j["createdDate"]) for j in jobs)
    processed = sum(j["numberRecordsProcessed"] for j in jobs)
    failed = sum(j["numberRecordsFailed"] for j in jobs)
    rate = args.rows / ingest_s
    parse_rate = args.rows / parse_s
    print(f"rows: {args.rows:,} in {len(jobs)} job(s); processed {processed:,}, failed {failed:,}, in org {count:,}")
    print(f"ingest (create -> JobComplete, emulator clock): {ingest_s:.2f} s = {rate:,.0f} rows/s")
    worker_s = sum(j["totalProcessingTime"] for j in jobs) / 1000
    print(f"  of which the emulator's worker (parse, validate, write): {worker_s:.2f} s; upload and queueing the rest")
    print(f"  ratio to the {TARGET_ROWS_PER_S:,} rows/s target: {rate / TARGET_ROWS_PER_S:.2f}")
    print(f"  ratio to raw csv.reader parsing ({parse_s:.2f} s = {parse_rate:,.0f} rows/s): {rate / parse_rate:.3f}")
    print(
        f"client wall clock (adds simple_salesforce's CSV split and polling): {wall_s:.2f} s"
        f" = {args.rows / wall_s:,.0f} rows/s"
    )
    if processed != args.rows or failed or count != args.rows or any(j["state"] != "JobComplete" for j in jobs):
        print("FAIL: rows were lost or failed")
        return 1
    if rate < TARGET_ROWS_PER_S:
        print(f"FAIL: below the {TARGET_ROWS_PER_S:,} rows/s target")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
