"""Reconcile (per run): source rows = loaded + rejected + failed for every object, or the run fails."""

from __future__ import annotations

import contextlib
import csv
import json
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import Context

from dms.errors import ReconcileError
from dms.operators.base import DmsOperator, results_root, tune_memory

if TYPE_CHECKING:
    import pyarrow as pa

    from dms.staging import ChunkKey

# A spreadsheet runs a cell that starts with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# The object's reports: the staged tables each merges (the first must exist), their columns,
# and the report's header for them (Data Loader's names).
REPORTS: dict[str, tuple[tuple[str, ...], list[str], list[str]]] = {
    "rejects": (
        ("rejects", "load_rejects"),
        ["row", "key", "field", "reason", "code"],
        ["row", "key", "field", "reason", "code"],
    ),
    "errors": (
        ("failures", "relink_failures"),
        ["row", "key", "id", "field", "code", "message"],
        ["row", "key", "salesforce_id", "field", "error_code", "message"],
    ),
    "success": (("successes",), ["row", "key", "id", "created"], ["row", "key", "salesforce_id", "created"]),
}
MISSING_PARENT = "MISSING_PARENT"
# csv.writer's default (Excel) line ending, which the reports have always had.
_LINE_END = "\r\n"


def safe_cell(value: Any) -> str:
    """A CSV cell that a spreadsheet shows as text, never evaluates."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def safe_cells(values: pa.Array) -> pa.Array:
    """`safe_cell` on a text column."""
    import re

    import pyarrow as pa
    import pyarrow.compute as pc

    starts = pc.match_substring_regex(values, "^[" + re.escape("".join(_FORMULA_START)) + "]")
    if not pc.any(starts).as_py():
        return values
    quoted = pc.binary_join_element_wise(pa.scalar("'", values.type), values, pa.scalar("", values.type))
    return pc.if_else(starts, quoted, values)


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows([[safe_cell(v) for v in row] for row in rows])


def write_reports(stage: Any, keys: Iterable[ChunkKey], out_dir: Path, object_name: str) -> tuple[Path, Path, Path]:
    """The object's reject, error and success CSVs (and its missing-parent CSV), chunk by chunk.

    Each chunk's staged results are appended as soon as they are read, in row order within
    the chunk and chunks in order (rows are numbered across chunks, so that is source order):
    memory holds one chunk, whatever the run's size. The files are written under a temporary
    name and renamed at the end, so a reader never sees half a report.
    """
    import pyarrow.compute as pc

    from dms.row_results import concat_text, csv_bytes, header_bytes, sort_by_row, table_text
    from dms.staging import StageMissingError

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / f"{object_name}_{name}.csv" for name in REPORTS}
    missing_path = out_dir / f"{object_name}_missing_parents.csv"
    partial = {
        name: path.with_name(path.name + ".partial") for name, path in {**paths, "missing": missing_path}.items()
    }
    try:
        with contextlib.ExitStack() as files:
            out = {name: files.enter_context(partial[name].open("wb")) for name in REPORTS}
            missing = None
            for name, (_, _, header) in REPORTS.items():
                out[name].write(header_bytes(header, _LINE_END))
            for key in keys:
                for name, (kinds, columns, header) in REPORTS.items():
                    parts = []
                    for kind in kinds:
                        try:
                            table = stage.get_table(key, kind)
                        except StageMissingError:
                            if kind == "rejects":
                                raise  # the transform stages its rejects, even none
                            continue  # dry runs and empty chunks load nothing, so they stage no load results
                        parts.append(table_text(table, columns))
                        del table
                    if not parts:
                        continue
                    rows = sort_by_row(concat_text(parts, columns))
                    if not len(rows["row"]):
                        continue
                    cells = {c: safe_cells(values) for c, values in rows.items()}
                    out[name].write(csv_bytes(cells, _LINE_END))
                    if name == "rejects":
                        # The missing-parent report: which parent keys to load (or fix) first.
                        is_missing = pc.equal(rows["code"], MISSING_PARENT)
                        if pc.any(is_missing).as_py():
                            if missing is None:
                                missing = files.enter_context(partial["missing"].open("wb"))
                                missing.write(header_bytes(header, _LINE_END))
                            missing.write(csv_bytes({c: v.filter(is_missing) for c, v in cells.items()}, _LINE_END))
        for name, path in paths.items():
            os.replace(partial[name], path)
        if missing is not None:
            os.replace(partial["missing"], missing_path)
        else:
            # A report from an earlier try of this task would otherwise outlive its rows.
            missing_path.unlink(missing_ok=True)
    finally:
        for path in partial.values():
            path.unlink(missing_ok=True)
    return paths["rejects"], paths["errors"], paths["success"]


class ReconcileOperator(DmsOperator):
    """Check the counts of every object, write the reject and error CSVs and the run summary."""

    template_fields = ("extracts", "transforms", "loads", "relinks")

    def __init__(
        self,
        *,
        extracts: dict[str, Any],
        transforms: dict[str, Any],
        loads: dict[str, Any],
        relinks: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.extracts = extracts
        self.transforms = transforms
        self.loads = loads
        self.relinks = relinks or {}

    def execute(self, context: Context) -> dict[str, Any]:
        tune_memory(pad_heap=False)
        dag_id, run_id = self.run_ids(context)
        dry_run = bool(self.param(context, "dry_run", False))
        max_error_rate = float(self.param(context, "max_error_rate", self.spec.max_error_rate))
        stage = self.stage()
        out_dir = results_root() / dag_id / run_id.replace(":", "_").replace("+", "_")
        summary: dict[str, Any] = {"dag_id": dag_id, "run_id": run_id, "dry_run": dry_run, "objects": {}}
        problems: list[str] = []
        for obj in self.spec.objects:
            if self.extracts.get(obj.name) is None:
                # No result at all (an empty source still returns []): the extract failed.
                problems.append(f"{obj.name}: the extract has no result (it failed; see its log)")
            extracted = list(self.extracts.get(obj.name) or [])
            transformed = {int(t["chunk"]): t for t in (self.transforms.get(obj.name) or [])}
            loaded = {int(x["chunk"]): x for x in (self.loads.get(obj.name) or [])}
            source = sum(int(e["rows"]) for e in extracted)
            relinked = {int(x["chunk"]): x for x in (self.relinks.get(obj.name) or [])}
            # A row whose deferred lookup could not be set is in Salesforce without it: it counts
            # as failed (its reason is in the error report), not as loaded.
            unlinked = sum(int(x["failed"]) for x in relinked.values())
            counts = {
                "source": source,
                "ready": sum(int(t["ready"]) for t in transformed.values()),
                # Rejected by the transform, or at load time for a missing parent.
                "rejected": sum(int(t["rejected"]) for t in transformed.values())
                + sum(int(x.get("load_rejected", 0)) for x in loaded.values()),
                "loaded": sum(int(x["loaded"]) for x in loaded.values()) - unlinked,
                "failed": sum(int(x["failed"]) for x in loaded.values()) + unlinked,
                "created": sum(int(x.get("created", 0)) for x in loaded.values()),
                "chunks": len(extracted),
            }
            if dry_run:
                for what in ("would_insert", "would_update", "would_delete"):
                    counts[what] = sum(int(x.get(what, 0)) for x in loaded.values())
            if obj.name in self.relinks and not dry_run:
                missing_relinks = [e["chunk"] for e in extracted if int(e["chunk"]) not in relinked]
                if missing_relinks:
                    problems.append(f"{obj.name}: chunks {missing_relinks} have no relink result")
            missing = [
                e["chunk"] for e in extracted if int(e["chunk"]) not in transformed or int(e["chunk"]) not in loaded
            ]
            if missing:
                problems.append(f"{obj.name}: chunks {missing} have no transform or load result")
            would = ("would_insert", "would_update", "would_delete")
            outcome = sum(counts[w] for w in would) if dry_run else counts["loaded"] + counts["failed"]
            if source != outcome + counts["rejected"]:
                problems.append(
                    f"{obj.name}: {source} source rows but "
                    + (f"{outcome} would load" if dry_run else f"{counts['loaded']} loaded + {counts['failed']} failed")
                    + f" + {counts['rejected']} rejected"
                )
            keys = (self.chunk_key(context, chunk, obj.name) for chunk in sorted(transformed))
            reports = write_reports(stage, keys, out_dir, obj.name)
            counts["rejects_csv"], counts["errors_csv"], counts["success_csv"] = (str(p) for p in reports)
            if source and not dry_run and counts["failed"] / source > max_error_rate:
                problems.append(
                    f"{obj.name}: {counts['failed']} of {source} rows failed in Salesforce "
                    f"({counts['failed'] / source:.2%} > max_error_rate {max_error_rate:.2%})"
                )
            summary["objects"][obj.name] = counts
        summary["status"] = "failed" if problems else "success"
        summary["problems"] = problems
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        audit = self.audit()
        retry_of = str(self.param(context, "retry_failed_from", "") or "").strip()
        audit.write_run(dag_id, run_id, {"type": "run", **summary, **self._run_facts(context), "retry_of": retry_of})
        if retry_of:
            # Link both ways: the earlier run says which runs retried its rows.
            earlier = audit.get_run(dag_id, retry_of)
            if earlier is not None:
                body = {k: v for k, v in earlier.items() if not k.startswith("_")}
                body["retried_by"] = sorted({*earlier.get("retried_by", []), run_id})
                audit.write_run(dag_id, retry_of, body)
        for name, c in summary["objects"].items():
            self.log.info(
                "%s: source %s, loaded %s, rejected %s, failed %s",
                name,
                c["source"],
                c["loaded"],
                c["rejected"],
                c["failed"],
            )
        if problems:
            raise ReconcileError("reconcile failed:\n  " + "\n  ".join(problems))
        return {name: {k: v for k, v in c.items() if not k.endswith("_csv")} for name, c in summary["objects"].items()}

    def _run_facts(self, context: Context) -> dict[str, Any]:
        """What explains a run besides its counts: the spec (and its hash), params, interval, trigger, times."""
        import hashlib

        dag_run = context.get("dag_run")
        spec_text = Path(self.spec_file).read_bytes()

        def iso(value: Any) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "spec": self.spec.name,
            "spec_file": Path(self.spec_file).name,
            "spec_sha256": hashlib.sha256(spec_text).hexdigest(),
            "params": {k: v for k, v in dict(context.get("params") or {}).items()},
            "data_interval_start": iso(context.get("data_interval_start")),
            "data_interval_end": iso(context.get("data_interval_end")),
            "run_type": str(getattr(dag_run, "run_type", "") or ""),
            "triggered_by": str(getattr(dag_run, "triggered_by", "") or ""),
            "triggering_user": str(getattr(dag_run, "triggering_user_name", "") or ""),
            "start_date": iso(getattr(dag_run, "start_date", None)),
            "end_date": datetime.now(UTC).isoformat(),
        }
