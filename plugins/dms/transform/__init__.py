"""Transform: map, cast and validate a chunk against the org; split it into ready rows and rejects."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dms.transform.describe import describe_subset
    from dms.transform.mapping import TransformResult, transform_chunk
    from dms.transform.rejects import REJECT_COLUMNS, RejectCode, malformed_rejects

__all__ = [
    "REJECT_COLUMNS",
    "RejectCode",
    "TransformResult",
    "describe_subset",
    "malformed_rejects",
    "transform_chunk",
]

# Each name is imported on first use, from its own module: the extract task needs only
# `describe_subset`, and importing the rest would load pandas (about 45 MB of its memory
# budget) into a task that never uses it.
_HOMES = {
    "REJECT_COLUMNS": "rejects",
    "RejectCode": "rejects",
    "TransformResult": "mapping",
    "describe_subset": "describe",
    "malformed_rejects": "rejects",
    "transform_chunk": "mapping",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value
