"""Stop a process and every process it started, by PID, and find processes by an environment marker.

Airflow's components fork (a Celery worker's pool, a task's supervisor and the task itself, the
API server's uvicorn workers), and a child can outlive a parent that was only sent SIGTERM. So
the whole family is listed first and each member is signalled by its own PID: nothing else on
the machine is touched, unlike a `pkill` by name or a kill of a process group someone shares.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (from /proc, so no `ps` is needed)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(p) for p in (task / "children").read_text().split()]
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, children before grandchildren."""
    family: list[int] = []
    todo = [pid]
    while todo:
        kids = children(todo.pop(0))
        family += kids
        todo += kids
    return family


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def _signal(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def stop_families(processes: Iterable[subprocess.Popen[bytes]], grace: float = 20.0) -> None:
    """SIGTERM each process and its descendants, wait up to ``grace`` s, then SIGKILL what is left.

    All families are signalled together, so stopping N components takes one grace period, not N.
    Descendants are listed before and again after SIGTERM: a process may fork while shutting down.
    """
    processes = list(processes)
    family: set[int] = set()
    for process in processes:
        if process.poll() is None:
            family.add(process.pid)
        family.update(descendants(process.pid))
    _signal(family, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        for process in processes:
            process.poll()  # reap a direct child, so that it does not linger as a zombie
            family.update(descendants(process.pid))
        if not any(alive(pid) for pid in family):
            break
        time.sleep(0.2)
    for pid in sorted(family):
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)


def processes_with(marker: str) -> list[int]:
    """PIDs of the processes whose environment carries ``marker`` (``NAME=value``)."""
    wanted = marker.encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to read
            if wanted in environ.read_bytes().split(b"\0") and alive(int(environ.parent.name)):
                found.append(int(environ.parent.name))
    return found


def describe(pid: int) -> str:
    """``PID command line`` for a report, or just the PID once the process is gone."""
    with contextlib.suppress(OSError):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        return f"{pid} {cmdline.strip()[:160]}"
    return str(pid)
