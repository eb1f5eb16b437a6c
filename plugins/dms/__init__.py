"""DMS: the migration engine (Airflow puts plugins/ on sys.path, so this imports as `dms`)."""

import os

# Arrow picks its allocator once, at its first allocation, from this variable; set here, before
# any DMS step touches Arrow, it covers the buffers that Arrow's C++ code allocates on its own
# (the CSV reader, IPC compression, compute kernels), which pyarrow.set_memory_pool() does not.
# Arrow's default, mimalloc, keeps freed memory mapped for reuse, and every DMS step frees one
# chunk's buffers and allocates the next one's: its peak RSS grew by what it had freed. With
# jemalloc, which returns unused pages after a short decay, bench/bench_pipeline.py's extract
# of 1M rows peaked at 348-392 MB instead of 420-443 MB over ten runs, and its transforms at
# 311-335 instead of 338-345 MB, no slower. A deployment that sets the variable itself keeps its choice (and
# dms.operators.base.tune_memory then leaves pyarrow's pool alone too).
ARROW_POOL_FROM_DEPLOYMENT = "ARROW_DEFAULT_MEMORY_POOL" in os.environ
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
