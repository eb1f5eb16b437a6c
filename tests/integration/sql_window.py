"""One check of the SQL source's incremental window, shared by the PostgreSQL and MariaDB tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pendulum

from dms.sources.base import ROW_COLUMN


def check_window_is_start_inclusive_end_exclusive(
    source: Any,
    chunks: Callable[..., list[Any]],
    rows: Callable[[list[Any]], list[dict[str, str]]],
    base: Any,
    total: int,
) -> None:
    """Rows i (1-based) of the test table changed at base + i-1 hours; row `total` never changed."""
    # Airflow's bounds are pendulum DateTimes, here in other zones than the data's.
    start = pendulum.instance(base + dt.timedelta(hours=5)).in_timezone("America/New_York")
    end = pendulum.instance(base + dt.timedelta(hours=10)).in_timezone("UTC")
    read = chunks(source, 2, start, end)
    assert [c.rows for c in read] == [2, 2, 1]
    got = rows(read)
    assert [r["id"] for r in got] == ["5", "6", "7", "8", "9"]  # row 5 at start, not row 10 at end
    assert [r[ROW_COLUMN] for r in got] == [1, 2, 3, 4, 5]
    again = chunks(source, 2, start, end)
    assert [c.batch for c in again] == [c.batch for c in read]
    # A window with nothing in it reads nothing; the row without a change time is in no window.
    assert chunks(source, 2, base + dt.timedelta(days=30), base + dt.timedelta(days=31)) == []
    every = rows(chunks(source, 100, base - dt.timedelta(days=1), base + dt.timedelta(days=2)))
    assert [r["id"] for r in every] == [str(i) for i in range(1, total)]
