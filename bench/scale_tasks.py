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

`scale_tasks.py dag-test DAG_FILE DAG_ID OUT_JSON` runs baseline (b) the Airflow way
(`--xcom airflow`): one DAG with `dag.test()`, in a process of its own.
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
    # batch_size: simple_salesforce cuts a file into jobs of at most 100 MB counting characters,
    # but uploads UTF-8 bytes, so a part of Chinese text can exceed the limit and be refused
    # (seen at 5M contacts); a million rows a job stays far below it.
    if spec["operation"] == "upsert":
        results = bulk.upsert(
            csv_file=spec["csv"], external_id_field="Legacy_Id__c", batch_size=BULK2_BATCH_ROWS, wait=1
        )
    else:
        results = bulk.insert(csv_file=spec["csv"], batch_size=BULK2_BATCH_ROWS, wait=1)
    return {
        "jobs": len(results),
        "processed": sum(int(r["numberRecordsProcessed"]) for r in results),
        "failed": sum(int(r["numberRecordsFailed"]) for r in results),
    }


BULK2_BATCH_ROWS = 1_000_000


def prepared_records(path: str) -> list[dict[str, Any]]:
    """The prepared CSV as SalesforceBulkOperator's payload: one dict per record, parents nested.

    Both modes of baseline (b) build the payload with this, the file mode's task and the
    `prepare` task of the DAG the Airflow mode writes.
    """
    import csv

    records: list[dict[str, Any]] = []
    with open(path, encoding="utf-8", newline="") as handle:
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
    return records


def _xcom_prepare(spec: dict[str, Any]) -> dict[str, Any]:
    """Baseline (b), `--xcom file`, upstream task: the records as a list of dicts, returned, i.e. pushed to XCom.

    The XCom is serialized as Airflow's task SDK does (`airflow.sdk.serde.serialize`, then
    JSON) and written to a file, standing in for the metadata database; Airflow also sends
    it through the supervisor and the API server, which this leaves out (`--xcom airflow`
    measures that path).
    """
    from airflow.sdk.serde import serialize

    records = prepared_records(spec["csv"])
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


# ------------------------------------------------------------------ baseline (b), `--xcom airflow`


WARMUP_DAG_ID = "bench_xcom_warmup"


def _status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _release_and_reset_peak() -> None:
    """Give freed memory back to the OS and restart VmHWM from the current RSS, for the next task's peak.

    Writing 5 to clear_refs resets the peak (Linux >= 4.0). Without the trim, glibc would keep
    the previous task's freed heap resident and charge it to the next task.
    """
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
        clear.write("5")


def dag_test(dag_file: str, dag_id: str, out: str) -> int:
    """Run `dag_id` from `dag_file` once with `dag.test()` and write what each task used to `out` (JSON).

    dag.test() runs every task through the Task SDK's task runner, with an in-process
    supervisor and execution API server on the metadata database: a return value is
    serialized, sent to the API and stored in the xcom table, and a downstream task pulls
    it back the same way. Everything runs in this process, so a task's peak RSS (VmHWM,
    read when the task ends and reset after it) includes the supervisor's and the API
    server's share of the XCom traffic, which a deployment spreads over three processes.
    """
    from airflow.dag_processing.dagbag import DagBag
    from airflow.listeners import hookimpl
    from airflow.sdk.listener import get_listener_manager

    tasks: dict[str, dict[str, Any]] = {}
    last_cpu = [_cpu_seconds()]

    class TaskMeter:
        """Listener: each task's peak RSS and CPU time, taken in finalize(), after its XCom push."""

        def _record(self, task_id: str, error: str | None) -> None:
            cpu = _cpu_seconds()
            tasks[task_id] = {"peak_rss_mb": _status_kb("VmHWM") / 1024, "cpu": cpu - last_cpu[0], "error": error}
            _release_and_reset_peak()
            last_cpu[0] = _cpu_seconds()

        @hookimpl
        def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
            self._record(task_instance.task_id, None)

        @hookimpl
        def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
            text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
            self._record(task_instance.task_id, text[:2000])

    begin = time.perf_counter()
    bag = DagBag(dag_folder=dag_file)
    if dag_id not in bag.dags:
        raise SystemExit(f"{dag_file}: no DAG {dag_id!r}; import errors: {bag.import_errors}")
    # The in-process execution API builds its app and routes on its first requests (~3.5 s here),
    # which a deployment's long-running API server has done long before: a run of a small DAG
    # through the same paths (XCom push and pull included) takes that out of the first task.
    warmup = bag.dags.get(WARMUP_DAG_ID)
    if warmup is not None and warmup.test().state != "success":
        raise SystemExit(f"{dag_file}: the warm-up DAG {WARMUP_DAG_ID} failed")
    _release_and_reset_peak()
    last_cpu[0] = _cpu_seconds()
    get_listener_manager().add_listener(TaskMeter())
    run = bag.dags[dag_id].test()
    result = {
        "run_id": run.run_id,
        "state": str(run.state),
        "tasks": tasks,
        # VmHWM restarts after each task: the process's peak is the largest of the pieces.
        "process_peak_rss_mb": max([t["peak_rss_mb"] for t in tasks.values()] + [_status_kb("VmHWM") / 1024]),
        "seconds": time.perf_counter() - begin,
    }
    Path(out).write_text(json.dumps(result), encoding="utf-8")
    return 0 if str(run.state) == "success" else 1


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    # bench_scale.py --xcom airflow: `scale_tasks.py dag-test DAG_FILE DAG_ID OUT_JSON`, in a process of its own.
    if len(sys.argv) != 5 or sys.argv[1] != "dag-test":
        raise SystemExit("usage: scale_tasks.py dag-test DAG_FILE DAG_ID OUT_JSON")
    sys.exit(dag_test(*sys.argv[2:]))
