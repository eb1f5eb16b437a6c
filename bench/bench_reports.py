"""Per-row result reports at scale: a chunk's audit attachments and the reconcile's CSVs.

```bash
.venv/bin/python bench/bench_reports.py --chunks 10 --db 10               # this working tree
.venv/bin/python bench/bench_reports.py --chunks 10 --db 10 --baseline f737366   # and an earlier commit
```

Stages `--distinct` chunks of `--chunk-rows` synthetic result rows in Redis (successes with
1% transform rejects and 1% Salesforce failures, typed as the engine stages them) and reads
them `--chunks` times in all, cycling, as if the run had that many chunks: each read is a real
GET and Arrow IPC decode, while Redis holds only the distinct ones. Then, each in a fresh
process (so that its peak RSS, VmHWM, is its own):

- `chunk_attachments` for every chunk, as the load's audit record builds them;
- the reconcile's reject, error and success CSVs for all chunks.

`--baseline REV` runs the same with `row_results.py` and `reconcile.py` as they are at a git
revision, for a before/after comparison in one run. The keys it staged are deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from bench.harness import peak_rss_mb  # noqa: E402

DAG_ID, RUN_ID, OBJECT = "bench_reports", "manual__bench", "accounts"


def _spec(sensitive: bool) -> Any:
    from dms.spec import ObjectSpec

    return ObjectSpec.model_validate(
        {
            "name": OBJECT,
            "sobject": "Account",
            "operation": "upsert",
            "external_id": "Legacy_Id__c",
            "source": {"path": "a.csv"},
            "fields": {
                "Legacy_Id__c": {"source": "id"},
                "Name": {"source": "name"},
                "Phone": {"source": "tel", "sensitive": sensitive},
            },
        }
    )


def _chunk_tables(chunk: int, rows: int) -> dict[str, Any]:
    """One chunk's staged results, typed as the transform and the load stage them."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    rng = np.random.default_rng(chunk)
    numbers = np.arange(chunk * rows + 1, (chunk + 1) * rows + 1)
    fate = rng.random(rows)
    rejected, failed = numbers[fate < 0.01], numbers[(fate >= 0.01) & (fate < 0.02)]
    loaded = numbers[fate >= 0.02]
    rng.shuffle(loaded)  # Bulk results come back in no particular order

    def key(values: np.ndarray) -> list[str]:
        return [f"ACC-{v:09d}" for v in values]

    rejects = pd.DataFrame(
        {
            "row": rejected,
            "key": key(rejected),
            "field": "Phone",
            "reason": [f"'+86 {v:011d}' is longer than 40" for v in rejected],
            "code": "LENGTH",
        }
    ).astype(str)
    failures = pd.DataFrame(
        {
            "row": failed,
            "key": key(failed),
            "id": "",
            "field": "Name",
            "code": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            "message": [f"Name: bad value 'N{v}', see rule: Name_Check" for v in failed],
        }
    ).astype(str)
    successes = pd.DataFrame(
        {
            "row": loaded,
            "key": key(loaded),
            "id": [f"001{v:015d}" for v in loaded],
            "created": rng.random(len(loaded)) < 0.9,
        }
    ).astype(str)
    load_rejects = pd.DataFrame({"row": pd.Series([], dtype="int64"), "key": [], "field": [], "reason": [], "code": []})
    return {
        "rejects": pa.Table.from_pandas(rejects, preserve_index=False),
        "load_rejects": pa.Table.from_pandas(load_rejects, preserve_index=False),
        "failures": pa.Table.from_pandas(failures, preserve_index=False),
        "successes": pa.Table.from_pandas(successes, preserve_index=False),
    }


class CyclingStage:
    """The real stage, with chunk N read from the staged chunk N mod `distinct`."""

    def __init__(self, stage: Any, distinct: int) -> None:
        self.stage, self.distinct = stage, distinct

    def get_table(self, key: Any, kind: str) -> Any:
        from dms.staging import ChunkKey

        return self.stage.get_table(ChunkKey(key.dag_id, key.run_id, key.object_name, key.chunk % self.distinct), kind)


def _load_module(name: str, source: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__file__ = f"<{name}>"
    sys.modules[name] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102 - our own code at a git revision
    return module


def _modules(baseline: str | None) -> tuple[types.ModuleType, types.ModuleType]:
    import dms.operators.reconcile as reconcile
    import dms.row_results as row_results

    if not baseline:
        return row_results, reconcile

    def show(path: str) -> str:
        return subprocess.run(
            ["git", "show", f"{baseline}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout

    return (
        _load_module("baseline_row_results", show("plugins/dms/row_results.py")),
        _load_module("baseline_reconcile", show("plugins/dms/operators/reconcile.py")),
    )


def _stage(db: int) -> Any:
    import redis

    from dms.staging import Stage

    return Stage(redis.Redis(host="127.0.0.1", port=6379, db=db), ttl_seconds=3600)


def child(args: argparse.Namespace) -> dict[str, Any]:
    # What a task process has imported anyway (the load uses pandas and Arrow's compute), so
    # that the figures are the reports' own.
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow.compute  # noqa: F401

    from dms.staging import ChunkKey

    row_results, reconcile = _modules(args.baseline)
    stage = CyclingStage(_stage(args.db), args.distinct)
    keys = [ChunkKey(DAG_ID, RUN_ID, OBJECT, c) for c in range(args.chunks)]
    imported = peak_rss_mb()
    started = time.perf_counter()
    if args.child == "attachments":
        obj = _spec(args.sensitive)
        sizes = 0
        for key in keys:
            attachments = row_results.chunk_attachments(
                stage, key, obj, ["rejects", "load_rejects", "failures", "successes"]
            )
            sizes += sum(len(v) for v in attachments.values())
        extra = {"gzip_mb_per_chunk": round(sizes / len(keys) / 2**20, 2)}
    else:
        out_dir = Path(args.out_dir)
        if args.baseline:

            class Operator:
                def chunk_key(self, context: Any, chunk: int, object_name: str) -> Any:
                    return ChunkKey(DAG_ID, RUN_ID, object_name, chunk)

            paths = reconcile.ReconcileOperator._write_reports(
                Operator(), stage, {}, OBJECT, list(range(args.chunks)), out_dir
            )
        else:
            paths = reconcile.write_reports(stage, iter(keys), out_dir, OBJECT)
        extra = {"csv_mb": round(sum(Path(p).stat().st_size for p in paths) / 2**20, 1)}
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 2),
        "per_chunk": round(seconds / args.chunks, 3),
        "imports_mb": round(imported),
        "peak_mb": round(peak_rss_mb()),
        **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=10)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--distinct", type=int, default=4, help="chunks staged in Redis; the others reuse them")
    parser.add_argument("--db", type=int, required=True, help="the Redis db to stage in (db 0 is Celery's)")
    parser.add_argument("--baseline", help="a git revision to compare with")
    parser.add_argument("--sensitive", action="store_true", help="mask a sensitive field (the masking path)")
    parser.add_argument("--child", choices=["attachments", "reports"], help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    from dms.staging import ChunkKey

    stage = _stage(args.db)
    distinct = min(args.distinct, args.chunks)
    for chunk in range(distinct):
        for kind, table in _chunk_tables(chunk, args.chunk_rows).items():
            stage.put_table(ChunkKey(DAG_ID, RUN_ID, OBJECT, chunk), kind, table)
    try:
        print(
            f"{args.chunks} chunks of {args.chunk_rows:,} result rows ({distinct} distinct staged), "
            f"sensitive={args.sensitive}"
        )
        for what in ("attachments", "reports"):
            runs = [(f"baseline {args.baseline}", args.baseline)] if args.baseline else []
            for label, baseline in [*runs, ("this tree", None)]:
                with tempfile.TemporaryDirectory(prefix="dms-bench-reports-") as out_dir:
                    command = [sys.executable, __file__, "--child", what, "--out-dir", out_dir]
                    for name in ("chunks", "chunk_rows", "distinct", "db"):
                        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
                    command += ["--baseline", baseline] if baseline else []
                    command += ["--sensitive"] if args.sensitive else []
                    result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
                print(f"  {what:<12} {label:<18} {json.dumps(result)}")
    finally:
        for kind in ("rejects", "load_rejects", "failures", "successes"):
            stage.client.delete(*(ChunkKey(DAG_ID, RUN_ID, OBJECT, c).redis_key(kind) for c in range(distinct)))


if __name__ == "__main__":
    main()
