"""Rejected rows: the codes, the frame format, and a collector where the first problem of a row wins."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from dms.sources.text import Undecodable

REJECT_COLUMNS = ["row", "key", "field", "reason", "code"]
_PREVIEW = 60


class RejectCode(StrEnum):
    """Why a row was rejected; short and stable, for filters and counts in reports."""

    REQUIRED = "REQUIRED"  # empty (after value_map and default) but the spec or Salesforce requires a value
    TYPE = "TYPE"  # not a number / whole number / boolean / date / datetime, or out of Salesforce's range
    FORMAT = "FORMAT"  # the right type but not the shape the Salesforce field takes (email)
    LENGTH = "LENGTH"  # longer than the Salesforce text field
    PICKLIST = "PICKLIST"  # not a value of a restricted picklist
    VALUE_MAP = "VALUE_MAP"  # a source value the field's value_map does not list (and no "*" entry)
    DUPLICATE_KEY = "DUPLICATE_KEY"  # the external id occurs more than once in the chunk
    MALFORMED = (
        "MALFORMED"  # the source row could not be read: wrong field count, unclosed quote, bytes not in the encoding
    )
    LOOKUP = "LOOKUP"  # no existing record (or more than one) matches a `lookup` value, e.g. a User's email
    MISSING_PARENT = "MISSING_PARENT"  # the parent a lookup column names is neither loaded nor in Salesforce


# Reasons are built only for the rows that are newly rejected, so the cost of the message
# text is paid per bad row, not per chunk.
Reason = str | Callable[[np.ndarray], pd.Series | np.ndarray | list[str]]


def quoted(values: pd.Series) -> pd.Series:
    """Values as they appear in reasons: in quotes, long ones cut short."""
    text = values.astype("str")
    long = (text.str.len() > _PREVIEW).to_numpy()
    if long.any():
        text = text.where(~long, text.str.slice(0, _PREVIEW) + "…")
    return "'" + text + "'"


class RejectLog:
    """Collects row-level problems; a row is rejected once, with the first problem found for it.

    Fields are checked in the spec's order and each field's steps in pipeline order, so
    "first" is deterministic. One reason per row keeps the reject report one line per
    source row; fixing it and re-running may reveal the row's next problem.
    """

    def __init__(self, rows: np.ndarray, keys: pd.Series) -> None:
        self.rows = rows
        self.keys = keys.reset_index(drop=True)
        self.rejected = np.zeros(len(rows), dtype=bool)
        self._parts: list[tuple[np.ndarray, str, str, pd.Series]] = []

    def add(self, mask: np.ndarray, field: str, code: RejectCode, reason: Reason) -> None:
        new = np.asarray(mask, dtype=bool) & ~self.rejected
        if not new.any():
            return
        idx = np.flatnonzero(new)
        if callable(reason):
            texts = pd.Series(np.asarray(reason(idx), dtype=object), dtype="str")
        else:
            texts = pd.Series(np.full(len(idx), reason, dtype=object), dtype="str")
        self._parts.append((idx, field, str(code), texts))
        self.rejected |= new

    def frame(self) -> pd.DataFrame:
        if not self._parts:
            return empty_rejects()
        idx = np.concatenate([p[0] for p in self._parts])
        frame = pd.DataFrame(
            {
                "row": self.rows[idx].astype(np.int64),
                # Only the rejected rows' keys become Python strings, not the whole column's.
                "key": self.keys.iloc[idx].to_numpy(dtype=object),
                "field": np.concatenate([np.full(len(p[0]), p[1], dtype=object) for p in self._parts]),
                "reason": np.concatenate([p[3].to_numpy(dtype=object) for p in self._parts]),
                "code": np.concatenate([np.full(len(p[0]), p[2], dtype=object) for p in self._parts]),
            }
        )
        frame = frame.astype({"key": "str", "field": "str", "reason": "str", "code": "str"})
        return frame.sort_values("row", kind="stable").reset_index(drop=True)


def reject_undecodable(log: RejectLog, undecodable: Iterable[Undecodable]) -> None:
    """Reject the rows whose bytes the declared encoding cannot decode (from `decode_batch`), first."""
    by_column: dict[str, dict[int, str]] = {}
    for item in undecodable:
        by_column.setdefault(item.column, {}).setdefault(item.index, item.reason)
    for column, reasons in by_column.items():
        mask = np.zeros(len(log.rows), dtype=bool)
        mask[list(reasons)] = True
        log.add(mask, column, RejectCode.MALFORMED, lambda idx, r=reasons: [r[int(i)] for i in idx])


def empty_rejects() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row": pd.Series([], dtype=np.int64),
            "key": pd.Series([], dtype="str"),
            "field": pd.Series([], dtype="str"),
            "reason": pd.Series([], dtype="str"),
            "code": pd.Series([], dtype="str"),
        }
    )


def malformed_rejects(malformed: Iterable[tuple[int, str, str]]) -> pd.DataFrame:
    """Reject rows for the reader's malformed rows ((row, text, reason) tuples, e.g. `MalformedRow`)."""
    items = list(malformed)
    if not items:
        return empty_rejects()
    rows = np.array([m[0] for m in items], dtype=np.int64)
    texts = pd.Series([m[1] for m in items], dtype="str")
    reasons = pd.Series([m[2] for m in items], dtype="str") + ": " + quoted(texts)
    return pd.DataFrame(
        {
            "row": rows,
            "key": pd.Series([""] * len(items), dtype="str"),
            "field": pd.Series([""] * len(items), dtype="str"),
            "reason": reasons,
            "code": pd.Series([str(RejectCode.MALFORMED)] * len(items), dtype="str"),
        }
    )
