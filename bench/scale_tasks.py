"""The task side of bench_scale.py: one task, run in a process forked for it, reporting through a pipe.

`bench_scale.py` forks every task from a multiprocessing fork server that has already
imported what the operators import (`scale_preload`), the way Airflow's supervisor forks a
task process: each task then has a process, and a peak RSS, of its own, and pays no
interpreter start-up inside the measurement. This module stays light, because the
benchmark's main process imports it to name the target of each process.

A task's spec is a dict: `kind` (extract, transform, load, reconcile, bulk2, xcom_prepare,
bulk_operator), `log` (its stdout and stderr), `env` (connections of the emulator of this
contender) and what its kind needs. The pipe gets one dict: the execute() time, CPU time,
peak RSS, and the operator's return value (only small ones: XCom-sized).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from harness import peak_rss_mb


def run_task(spec: dict[str, Any], conn: Any) -> None:
    """Process target: run one task and send its figures (or its error) through `conn`."""
    entered = time.perf_counter()
    log = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.environ.update(spec.get("env", {}))
    try:
        run = _prepare(spec)
        profile_dir = os.environ.get("DMS_BENCH_PROFILE")
        if profile_dir:
            import cProfile
            from functools import partial

            profiler = cProfile.Profile()
            run = partial(profiler.runcall, run)
        before = resource.getrusage(resource.RUSAGE_SELF)
        begin = time.perf_counter()
        output = run()
        elapsed = time.perf_counter() - begin
        after = resource.getrusage(resource.RUSAGE_SELF)
        if profile_dir:
            name = spec["kind"] + (f"-{spec['object']}" if "object" in spec else "")
            profiler.dump_stats(str(Path(profile_dir) / f"{name}-{os.getpid()}.prof"))
        conn.send(
            {
                "output": output,
                "seconds": elapsed,
                "cpu": after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime,
                "peak_rss_mb": peak_rss_mb(),
                # CLOCK_MONOTONIC is system-wide: the parent places these on its own timeline.
                "entered": entered,
                "began": begin,
            }
        )
    except BaseException:  # noqa: BLE001 - the parent reports it with the task's name
        conn.send({"error": traceback.format_exc()})
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        # Skip the interpreter's teardown (freeing every module of Airflow): not the task's work,
        # and it would compete with the next task for a core.
        os._exit(0)


def _context(spec: dict[str, Any]) -> dict[str, Any]:
    from types import SimpleNamespace

    return {
        "ti": SimpleNamespace(dag_id=spec["dag_id"], run_id=spec["run_id"], task_id=spec["kind"], map_index=-1),
        "params": {"chunk_rows": spec["chunk_rows"], "full_refresh": False, "dry_run": False},
    }


def _prepare(spec: dict[str, Any]) -> Any:
    """Build the task's operator (outside the clock, as a parsed DAG has it) and return what execute()s it."""
    kind = spec["kind"]
    if kind == "noop":
        return lambda: None
    if kind in ("extract", "transform", "load", "reconcile"):
        from dms.operators.extract import ExtractOperator
        from dms.operators.load import LoadOperator
        from dms.operators.reconcile import ReconcileOperator
        from dms.operators.transform import TransformOperator

        common = {"task_id": kind, "spec_file": spec["spec_file"]}
        operator: Any
        if kind == "extract":
            operator = ExtractOperator(object_name=spec["object"], **common)
        elif kind == "transform":
            operator = TransformOperator(object_name=spec["object"], chunk=spec["chunk"], **common)
        elif kind == "load":
            # A worker without a triggerer: the task waits for its Bulk job itself.
            operator = LoadOperator(object_name=spec["object"], chunk=spec["chunk"], deferrable=False, **common)
        else:
            operator = ReconcileOperator(
                extracts=spec["extracts"], transforms=spec["transforms"], loads=spec["loads"], relinks={}, **common
            )
        operator.spec  # noqa: B018 - the spec is loaded before the clock, as a parsed DAG has it
        context = _context(spec)
        return lambda: operator.execute(context)
    if kind == "bulk2":
        return lambda: _bulk2_upload(spec)
    if kind == "xcom_prepare":
        return lambda: _xcom_prepare(spec)
    if kind == "bulk_operator":
        return _bulk_operator(spec)
    raise ValueError(f"unknown task kind {kind!r}")


def _bulk2_upload(spec: dict[str, Any]) -> dict[str, Any]:
    """Baseline (a): the prepared CSV straight into Bulk API 2.0 with simple_salesforce."""
    from simple_salesforce import Salesforce

    token = spec["token"]
    sf = Salesforce(instance_url=token["instance_url"], session_id=token["access_token"], version="62.0")
    bulk = getattr(sf.bulk2, spec["sobject"])
    # wait=1: the first poll after one second, as DMS's Bulk client polls; simple_salesforce's
    # default of 5 s would make the baseline look slower than its upload is.
    if spec["operation"] == "upsert":
        results = bulk.upsert(csv_file=spec["csv"], external_id_field="Legacy_Id__c", wait=1)
    else:
        results = bulk.insert(csv_file=spec["csv"], wait=1)
    return {
        "jobs": len(results),
        "processed": sum(int(r["numberRecordsProcessed"]) for r in results),
        "failed": sum(int(r["numberRecordsFailed"]) for r in results),
    }


def _xcom_prepare(spec: dict[str, Any]) -> dict[str, Any]:
    """Baseline (b), upstream task: the records as a list of dicts, returned, i.e. pushed to XCom.

    The XCom is serialized as Airflow's task SDK does (`airflow.sdk.serde.serialize`, then
    JSON) and written to a file, standing in for the metadata database; Airflow also sends
    it through the supervisor and the API server, which this leaves out.
    """
    import csv

    from airflow.sdk.serde import serialize

    records: list[dict[str, Any]] = []
    with open(spec["csv"], encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            record: dict[str, Any] = {}
            for name, value in row.items():
                if "." in name:
                    # A parent by its external id, as Bulk API 1.0 JSON nests it.
                    relationship, field = name.split(".", 1)
                    record[relationship] = {field: value}
                else:
                    record[name] = value
            records.append(record)
    payload = json.dumps(serialize(records))
    Path(spec["xcom"]).write_text(payload, encoding="utf-8")
    return {"records": len(records), "xcom_mb": round(len(payload) / 1e6, 1)}


def _bulk_operator(spec: dict[str, Any]) -> Any:
    """Baseline (b): SalesforceBulkOperator with its `payload` rendered from the upstream XCom.

    The pull (read and deserialize) and the push of the operator's result list are inside
    the clock: Airflow does both for this task.
    """
    from airflow.providers.salesforce.operators.bulk import SalesforceBulkOperator
    from airflow.sdk.serde import deserialize, serialize

    def run() -> dict[str, Any]:
        payload = deserialize(json.loads(Path(spec["xcom"]).read_text(encoding="utf-8")))
        operator = SalesforceBulkOperator(
            task_id=f"bulk_{spec['sobject'].lower()}",
            operation=spec["operation"],
            object_name=spec["sobject"],
            payload=payload,
            external_id_field="Legacy_Id__c" if spec["operation"] == "upsert" else "Id",
            salesforce_conn_id="salesforce_default",
        )
        result = operator.execute(context={})  # type: ignore[arg-type]
        pushed = json.dumps(serialize(result))
        ok = sum(1 for r in result if r.get("success"))
        return {"records": len(payload), "success": ok, "failed": len(result) - ok, "xcom_mb": len(pushed) / 1e6}

    return run
