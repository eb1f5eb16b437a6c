"""Which Arrow allocators a DMS task ends up with (dms/__init__.py and tune_memory).

Each case runs in a fresh interpreter: Arrow reads ARROW_DEFAULT_MEMORY_POOL once, at its
first allocation, so only a new process shows what a task process gets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
sys.path[:0] = [sys.argv[1]]
import dms
import pyarrow as pa
pa.array(["one chunk's worth"] * 1000)  # the first allocation fixes the C++ default pool
cpp_default = pa.default_memory_pool().backend_name
from dms.operators.base import tune_memory
tune_memory()
print(json.dumps({"cpp_default": cpp_default, "after_release": pa.default_memory_pool().backend_name,
                  "from_deployment": dms.ARROW_POOL_FROM_DEPLOYMENT}))
"""


def _run(script: str, *args: str, env: dict[str, str] | None = None) -> dict:
    """Run `script` in a fresh interpreter with the plugins folder and `args`; its last line, as JSON."""
    out = subprocess.run(
        [sys.executable, "-c", script, str(ROOT / "plugins"), *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _probe(pool: str | None) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if pool is not None:
        env["ARROW_DEFAULT_MEMORY_POOL"] = pool
    return _run(PROBE, env=env)


def test_a_task_gets_jemalloc_for_arrow_and_the_system_pool_for_pyarrow() -> None:
    import pyarrow as pa

    try:
        pa.jemalloc_memory_pool()
    except NotImplementedError:
        pytest.skip("this pyarrow was built without jemalloc")
    assert _probe(None) == {"cpp_default": "jemalloc", "after_release": "system", "from_deployment": False}


def test_a_deployment_choice_is_kept_for_both() -> None:
    assert _probe("mimalloc") == {"cpp_default": "mimalloc", "after_release": "mimalloc", "from_deployment": True}


HEAP_PROBE = """
import ctypes, json, sys
sys.path[:0] = [sys.argv[1]]

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[2] == "tuned":
    from dms.operators.base import tune_memory
    tune_memory(system_pool=False)
block = bytearray(8 << 20)
held = libc.mallinfo2()
del block
freed = libc.mallinfo2()
print(json.dumps({"mapped_while_held": held.hblkhd, "heap_after_free": freed.arena}))
"""


def _heap(mode: str) -> dict[str, int]:
    return _run(HEAP_PROBE, mode)


def test_a_task_keeps_megabyte_buffers_on_a_padded_heap() -> None:
    """Chunk-sized buffers come from glibc's heap, and freeing one does not hand it back at once."""
    import ctypes

    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("not glibc 2.33 or newer")
    plain, tuned = _heap("plain"), _heap("tuned")
    block = 8 << 20
    # glibc's defaults: the 8 MiB block gets its own mapping (the threshold starts at 128 KiB).
    assert plain["mapped_while_held"] >= block
    assert tuned["mapped_while_held"] < block
    assert tuned["heap_after_free"] >= block
