"""What every DMS step shares: its spec, its run's keys, the stage and the configured roots."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator, Context

from dms.errors import FatalError
from dms.spec import MigrationSpec, ObjectSpec, load_spec
from dms.staging import ChunkKey, Stage

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def data_root() -> Path:
    """Where source files may be read from; every path is resolved inside it."""
    return Path(os.environ.get("DMS_DATA_ROOT", PROJECT_ROOT / "include" / "data")).resolve()


def results_root() -> Path:
    """Where reject and error CSVs are written for people to download."""
    return Path(os.environ.get("DMS_RESULTS_DIR", PROJECT_ROOT / ".run" / "results")).resolve()


def resolve_data_path(relative: str) -> Path:
    """A source path inside the data root, or a FatalError naming it."""
    root = data_root()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise FatalError(f"source path {relative!r} leaves the data root {root}")
    if not path.is_file():
        raise FatalError(f"source file {relative!r} not found under the data root {root}")
    return path


def tune_memory(*, system_pool: bool = True, pad_heap: bool = True) -> None:
    """Set up a task's allocators for chunk-sized buffers; the first thing each step's execute() does.

    Two settings, both measured with bench/bench_pipeline.py and bench/bench_scale.py:

    - With `pad_heap`, glibc keeps 128 MB of padding at the top of its heap instead of trimming
      it after every large free, and serves buffers up to 32 MiB from the heap. A step makes
      and drops megabyte-sized objects all the time (decoded blocks, IPC payloads, pyarrow
      buffers from the system pool), and each trim and regrowth faulted the same pages in
      again: half of the extract's CPU time was in the kernel (0.30 -> 0.15 s of system time,
      0.85 -> 0.75 s per 1M rows, 10 transforms two at a time 2.15 -> 1.81 s) at the same peak
      RSS. Loads and the reconcile pass False: they wait on Salesforce, and the heap they would
      keep is not worth the risk to their memory budget (bench_scale at 1M rows, one run each:
      loads 383 MB padded, 363-379 MB not).
    - With `system_pool`, pyarrow's own allocations (tables, casts, compute results) go to the
      system allocator; what Arrow's C++ code allocates by itself (readers, IPC compression)
      stays with the default pool, which `dms/__init__.py` makes jemalloc. mimalloc, Arrow's
      default, kept freed memory mapped for reuse; a transform or a load frees one table and
      allocates the next, so its peak RSS grew 30-50 MB over what it held at any moment
      (bench_scale, 400k rows: a load 396 -> 363 MB, a transform 294 -> 245 MB, no slower).
      With jemalloc for everything, bench_scale's loads peaked higher again (389 MB at 1M
      rows). The extract passes False: its CSV reader allocates from several threads, where the
      system allocator measured slower and larger (0.43 -> 0.77 s, 383 -> 441 MB for 1M rows).

    A deployment that sets ARROW_DEFAULT_MEMORY_POOL keeps its choice for both of Arrow's pools.
    """
    if pad_heap:
        _pad_malloc_heap()
    import dms

    if not system_pool or dms.ARROW_POOL_FROM_DEPLOYMENT:
        return
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())


# glibc's mallopt() parameter numbers (malloc.h)
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
HEAP_TOP_PAD = 128 << 20
# Setting any parameter freezes glibc's sliding mmap threshold at its start value (128 KiB), which
# would give every larger buffer its own mapping, faulted in anew each time; 32 MiB is the
# highest value glibc slides to by itself.
MMAP_THRESHOLD = 32 << 20


def _pad_malloc_heap() -> None:
    """mallopt(M_TOP_PAD, M_MMAP_THRESHOLD) where the C library is glibc; a no-op elsewhere (musl, macOS)."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt(_M_TOP_PAD, HEAP_TOP_PAD)
    mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


class DmsOperator(BaseOperator):
    """Base of the DMS steps: loads its spec lazily and knows its run's stage keys."""

    ui_color = "#e8f1fb"

    def __init__(self, *, spec_file: str, object_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec_file = spec_file
        self.object_name = object_name

    @cached_property
    def spec(self) -> MigrationSpec:
        return load_spec(self.spec_file)

    @property
    def obj(self) -> ObjectSpec:
        for candidate in self.spec.objects:
            if candidate.name == self.object_name:
                return candidate
        raise FatalError(f"{self.spec_file}: no object named {self.object_name!r}")

    def stage(self) -> Stage:
        from dms.hooks.redis import DmsRedisHook

        return Stage(DmsRedisHook(redis_conn_id=self.spec.connections.staging).get_conn())

    @staticmethod
    def run_ids(context: Context) -> tuple[str, str]:
        ti = context["ti"]
        return ti.dag_id, ti.run_id

    def chunk_key(self, context: Context, chunk: int, object_name: str | None = None) -> ChunkKey:
        dag_id, run_id = self.run_ids(context)
        return ChunkKey(dag_id, run_id, object_name or self.object_name or "", chunk)

    def param(self, context: Context, name: str, default: Any) -> Any:
        value = context["params"].get(name)
        return default if value is None else value

    def audit(self) -> Any:
        """The audit store, retrying a store that does not answer for the connection's retry_seconds."""
        from dms.audit import Audit
        from dms.hooks.cloudant import DmsCloudantHook

        hook = DmsCloudantHook(cloudant_conn_id=self.spec.connections.audit)
        return Audit(hook.get_conn(), retry_seconds=hook.retry_seconds)
