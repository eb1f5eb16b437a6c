"""Transform: map, cast and validate a chunk against the org; split it into ready rows and rejects."""

from __future__ import annotations

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
