"""What the benchmarks share: per-process memory and CPU figures, the task environment, a private Redis.

The benchmarks run each task in a process of its own, so that its peak RSS is its own; the
helpers here read those figures and build the environment the tasks find their connections in.
"""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    """This process's peak resident set size.

    VmHWM rather than getrusage's ru_maxrss: on Linux ru_maxrss survives execve, so a task
    started from this (large) parent process would report the parent's size.
    """
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_peak_rss_mb(pid: int) -> float | None:
    """Another process's peak RSS (VmHWM), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def busy_cpu_seconds() -> float:
    """CPU time used by everything on the machine so far (all cores), from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:>12,.0f} rows/s  ({seconds:7.2f} s)"


def task_env(workdir: Path, redis_server: Any, emulator: Any, staging_db: int) -> dict[str, str]:
    """The environment of a task process: a throw-away Airflow home and the DMS connections as AIRFLOW_CONN_*."""
    salesforce = emulator.salesforce_connection()
    staging = {"conn_type": "redis", "host": redis_server.host, "port": redis_server.port, "extra": {"db": staging_db}}
    return {
        **os.environ,
        "AIRFLOW_HOME": str(workdir / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW_CONN_SALESFORCE_DEFAULT": json.dumps(salesforce),
        "AIRFLOW_CONN_DMS_STAGING": json.dumps(staging),
        "DMS_DATA_ROOT": str(workdir / "data"),
        "DMS_RESULTS_DIR": str(workdir / "results"),
        "REQUESTS_CA_BUNDLE": str(emulator.ca_file),
    }


def start_private_redis(workdir: Path, name: str = "redis") -> Any:
    """A redis-server of the benchmark's own, without persistence, so its peak memory is the run's alone.

    The machine's Redis on :6379 is shared with other sessions: its `used_memory_peak` would
    be theirs too, and Redis 7.0 has no command that resets the peak.
    """
    from scripts.services import start_redis

    return start_redis(workdir, name=name)
