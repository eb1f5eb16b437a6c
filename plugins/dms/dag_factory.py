"""Spec → DAG: Params for the trigger form, one task group per object, reconcile at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, TaskGroup

from dms.errors import SpecError
from dms.spec import FILE_SOURCES, MigrationSpec, load_spec

# The dag_id under which the specs that do not parse are reported (see `build_dags`).
INVALID_SPECS_DAG_ID = "dms_invalid_specs"


def _params(spec: MigrationSpec) -> dict[str, Param]:
    params = {
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Extract, transform and validate every row, and load nothing into Salesforce.",
        ),
        "chunk_rows": Param(
            spec.chunk_rows,
            type="integer",
            minimum=1,
            maximum=10_000_000,
            title="Rows per chunk",
            description="Rows read, staged and loaded together. Memory per task grows with this, not with the file.",
        ),
        "max_error_rate": Param(
            spec.max_error_rate,
            type="number",
            minimum=0,
            maximum=1,
            title="Maximum error rate",
            description="Share of source rows that may fail in Salesforce before the run is marked failed "
            "(0 = any failed row fails the run). Rejected rows are reported either way.",
        ),
        "retry_failed_from": Param(
            # Nullable: the trigger form treats an empty required string as missing and would
            # not let a run start without it.
            None,
            type=["null", "string"],
            title="Retry the failed rows of run",
            description="A run id of this DAG: extract only the source rows that run rejected or that failed in "
            "Salesforce (found by their row numbers), typically after fixing the data or the mapping. "
            "Empty: every row.",
        ),
        "full_refresh": Param(
            False,
            type="boolean",
            title="Full refresh",
            description="Forget this run's staged chunks and load ledger, and extract and load everything again; "
            "sources with a change_column are read whole instead of for the run's data interval.",
        ),
    }
    file_objects = [o.name for o in spec.objects if isinstance(o.source, FILE_SOURCES)]
    if file_objects:
        # Users re-run a migration on this month's export without editing the spec; the path stays
        # relative to the data root and is checked there by the extract (dms.operators.base).
        params["source_files"] = Param(
            {},
            type="object",
            propertyNames={"enum": file_objects},
            additionalProperties={"type": "string", "minLength": 1},
            title="Source files",
            description="Read another file than the spec's, per object, e.g. "
            f'{{"{file_objects[0]}": "exports/2026-11/{file_objects[0]}.csv"}}: a path relative to the data root '
            "(DMS_DATA_ROOT), in the same format as the spec's. Empty: the spec's paths.",
        )
    return params


def _schedule(spec: MigrationSpec) -> Any:
    """The spec's cron schedule as data intervals, in the spec's time zone.

    Airflow 3 turns a plain cron string into a trigger timetable whose runs have an empty
    data interval (start = end); incremental sources read the rows changed within the
    interval, so each run must cover the time since the previous tick instead.
    """
    if spec.schedule is None or spec.schedule in ("@once", "@continuous"):
        return spec.schedule
    from airflow.timetables.interval import CronDataIntervalTimetable

    return CronDataIntervalTimetable(spec.schedule, timezone=pendulum.timezone(spec.timezone))


def build_dag(spec: MigrationSpec, spec_file: Path) -> DAG:
    """One DAG for one spec; its ids depend only on the spec, so they are stable across parses."""
    from dms.operators.extract import ExtractOperator
    from dms.operators.load import LoadOperator, RelinkOperator
    from dms.operators.reconcile import ReconcileOperator
    from dms.operators.transform import TransformOperator

    doc = f"# {spec.name}\n\n{spec.description}\n\nSpec: `{spec_file.name}`. Objects: " + ", ".join(
        f"`{o.name}` → {o.sobject} ({o.operation})" for o in spec.objects
    )
    with DAG(
        dag_id=spec.dag_id,
        description=(spec.description or spec.name)[:200],
        doc_md=doc,
        schedule=_schedule(spec),
        start_date=pendulum.parse(spec.start_date, tz=spec.timezone),
        catchup=False,
        max_active_runs=1,
        tags=sorted({"dms", *spec.tags}),
        params=_params(spec),
        default_args={"owner": spec.owner, "retries": spec.retries, "retry_delay": pendulum.duration(seconds=30)},
    ) as dag:
        common: dict[str, Any] = {"spec_file": str(spec_file)}
        extracts, transforms, loads, relinks = {}, {}, {}, {}
        load_tasks: dict[str, Any] = {}
        groups, deferred = spec.load_plan()
        parents = spec.dependencies()
        for group in groups:
            for name in group:
                obj = spec.object(name)
                with TaskGroup(group_id=obj.name, tooltip=f"{obj.sobject} ({obj.operation})"):
                    extract = ExtractOperator(task_id="extract", object_name=obj.name, **common)
                    transform = TransformOperator.partial(task_id="transform", object_name=obj.name, **common).expand(
                        chunk=extract.output
                    )
                    # Every task that writes to the org takes a slot of its pool: Salesforce caps the
                    # Bulk jobs an org runs at once, and Celery would otherwise start as many as it has slots.
                    load = LoadOperator.partial(
                        task_id="load", object_name=obj.name, pool=spec.connections.pool, **common
                    ).expand(chunk=transform.output)
                extracts[name], transforms[name], loads[name] = extract.output, transform.output, load.output
                load_tasks[name] = load
                # A child's load waits for its parents' loads only: extracts and transforms of
                # every object run as early as they can.
                for field, parent in parents[name].items():
                    if field not in deferred[name]:
                        load_tasks[parent] >> load
            for name in group:
                if not deferred[name]:
                    continue
                obj = spec.object(name)
                with TaskGroup(group_id=f"{obj.name}_relink", tooltip=f"{obj.sobject}: set deferred lookups"):
                    relink = RelinkOperator.partial(
                        task_id="relink", object_name=name, pool=spec.connections.pool, **common
                    ).expand(chunk=transforms[name])
                for member in group:
                    load_tasks[member] >> relink
                relinks[name] = relink.output
        ReconcileOperator(
            task_id="reconcile",
            extracts=extracts,
            transforms=transforms,
            loads=loads,
            relinks=relinks,
            trigger_rule="all_done",
            retries=0,
            **common,
        )
    return dag


def build_rollback_dag(spec: MigrationSpec, spec_file: Path) -> DAG:
    """`<dag_id>_rollback`: undo one run of the spec's DAG (delete what it created, restore what it changed)."""
    from dms.operators.rollback import RollbackOperator

    groups, _ = spec.load_plan()
    with DAG(
        dag_id=f"{spec.dag_id}_rollback",
        description=f"Undo a run of {spec.dag_id}"[:200],
        doc_md=f"# Rollback of {spec.dag_id}\n\nDeletes the records a run created and restores the fields it "
        "changed, from the run's audit records, children before parents.",
        schedule=None,
        start_date=pendulum.parse(spec.start_date, tz=spec.timezone),
        catchup=False,
        max_active_runs=1,
        tags=sorted({"dms", "rollback", *spec.tags}),
        params={
            "run_id": Param(
                "",
                type="string",
                minLength=1,
                title="Run to undo",
                description=f"The run id of {spec.dag_id} whose records are deleted (if it created them) or "
                "restored to their values before that run (if it updated them).",
            )
        },
        default_args={"owner": spec.owner, "retries": spec.retries, "retry_delay": pendulum.duration(seconds=30)},
    ) as dag:
        previous = None
        # Children first: a parent is only deleted once nothing of this run points at it.
        for group in reversed(groups):
            for name in group:
                task = RollbackOperator(
                    task_id=f"rollback_{name}", object_name=name, spec_file=str(spec_file), pool=spec.connections.pool
                )
                if previous is not None:
                    previous >> task
                previous = task
    return dag


class _InvalidSpecs(DAG):
    """Carries the errors of the specs that do not parse into Airflow's import errors.

    A DAG file that raises loses every DAG it defines, so one broken spec would hide all the
    good ones. Airflow bags a file's DAGs one by one and records a DAG whose validation fails
    as an import error of that file, keeping the others: this DAG always fails validation,
    with the message naming each broken spec, its line and YAML path.
    """

    def __init__(self, errors: list[str]) -> None:
        super().__init__(dag_id=INVALID_SPECS_DAG_ID, schedule=None, start_date=pendulum.datetime(2026, 1, 1))
        self.spec_errors = errors

    def validate(self) -> None:
        raise SpecError("\n".join(self.spec_errors))


def build_dags(*spec_dirs: Path) -> dict[str, DAG]:
    """Every valid spec in `spec_dirs` as a DAG (and its rollback DAG).

    The specs that do not parse, or reuse another spec's name, are not skipped silently:
    they are collected into one `_InvalidSpecs` DAG, which Airflow shows as an import error of
    the DAG file (on its front page) naming each file, line and YAML path, while the other
    specs' DAGs still load. Callers that want the error raised use `build_valid_dags`.
    """
    dags: dict[str, DAG] = {}
    errors: list[str] = []
    for path in [p for spec_dir in spec_dirs for p in sorted(Path(spec_dir).glob("*.y*ml"))]:
        try:
            spec = load_spec(path)
        except SpecError as exc:
            errors.append(str(exc))
            continue
        if spec.dag_id in dags:
            errors.append(f"{path}: name {spec.name!r} is used by another spec")
            continue
        dags[spec.dag_id] = build_dag(spec, path)
        dags[f"{spec.dag_id}_rollback"] = build_rollback_dag(spec, path)
    if errors:
        dags[INVALID_SPECS_DAG_ID] = _InvalidSpecs(errors)
    return dags


def build_valid_dags(*spec_dirs: Path) -> dict[str, DAG]:
    """`build_dags`, raising `SpecError` (naming each file, line and YAML path) if any spec is invalid."""
    dags = build_dags(*spec_dirs)
    invalid = dags.pop(INVALID_SPECS_DAG_ID, None)
    if isinstance(invalid, _InvalidSpecs):
        raise SpecError("\n".join(invalid.spec_errors))
    return dags
