"""DMS: the migration engine (Airflow puts plugins/ on sys.path, so this imports as `dms`)."""

import os
import sys

# Arrow's default allocator (mimalloc) keeps freed memory mapped for reuse; a DMS task frees a
# chunk's buffers and allocates the next step's, so its peak RSS grew by 30-50 MB over what it
# held at any moment (bench/bench_scale.py at 400k rows: a load 396 -> 363 MB, a transform
# 294 -> 245 MB, no slower). Arrow reads the variable when it first allocates; if something
# imported it before DMS (pandas does), the pool is switched directly. Importing pyarrow here
# just for that would slow every DAG parse. A deployment that sets the variable keeps its choice.
if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
    os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"
    if "pyarrow" in sys.modules:
        import pyarrow

        pyarrow.set_memory_pool(pyarrow.system_memory_pool())
