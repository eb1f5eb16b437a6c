"""The readers' common parts: rechunk, ChunkBuilder and to_text (what every typed source becomes)."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pytest

from dms.sources.base import ROW_COLUMN, ChunkBuilder, MalformedRow, SourceChunk, float_text, rechunk, to_text
from dms.transform.casting import _NUMBER_RE


def _bad(*rows: int) -> list[MalformedRow]:
    return [MalformedRow(r, f"line {r}", "bad") for r in rows]


def _layout(chunks: list[SourceChunk]) -> list[tuple[list[int], list[int]]]:
    return [(c.batch.column(ROW_COLUMN).to_pylist(), [m.row for m in c.malformed]) for c in chunks]


def _letters(n: int) -> pa.RecordBatch:
    return pa.record_batch({"v": pa.array([f"v{i}" for i in range(n)])})


# ---------------------------------------------------------------- rechunk


def test_rechunk_cuts_exact_chunks_across_batches_and_numbers_rows_from_first_row() -> None:
    batches = [_letters(10).slice(0, 4), _letters(10).slice(4, 1), _letters(10).slice(5)]
    chunks = list(rechunk(batches, 3, first_row=2))
    assert [c.batch.num_rows for c in chunks] == [3, 3, 3, 1]
    assert [n for c in chunks for n in c.batch.column(0).to_pylist()] == list(range(2, 12))
    assert [v for c in chunks for v in c.batch.column("v").to_pylist()] == [f"v{i}" for i in range(10)]
    assert chunks[0].batch.schema.names == [ROW_COLUMN, "v"]


def test_rechunk_good_rows_skip_malformed_numbers_and_each_chunk_takes_those_before_its_last_row() -> None:
    # Rows 1..11: malformed 2 and 5 fall inside chunks, 4 between chunks, 10 and 11 after the last good row.
    chunks = list(rechunk([_letters(6)], 2, malformed=_bad(11, 2, 5, 4, 10)))  # unsorted on purpose
    assert _layout(chunks) == [([1, 3], [2]), ([6, 7], [4, 5]), ([8, 9], []), ([], [10, 11])]
    assert sum(c.rows for c in chunks) == 11


def test_rechunk_of_a_source_with_only_malformed_rows_still_hands_them_out() -> None:
    # With an empty batch, the columns are known from it.
    [chunk] = rechunk([_letters(0)], 5, malformed=_bad(1, 2))
    assert chunk.batch.num_rows == 0 and chunk.batch.schema.names == [ROW_COLUMN, "v"]
    assert [m.row for m in chunk.malformed] == [1, 2]
    # With no batch at all, from `schema`; without either the rows would be lost, which is an error.
    [chunk] = rechunk([], 5, malformed=_bad(3), schema=pa.schema([("n", pa.int64())]))
    assert chunk.batch.schema == pa.schema([(ROW_COLUMN, pa.int64()), ("n", pa.string())])
    assert [m.row for m in chunk.malformed] == [3]
    with pytest.raises(ValueError, match="1 malformed rows but no batch and no schema"):
        list(rechunk([], 5, malformed=_bad(3)))


def test_rechunk_of_an_empty_source_yields_nothing() -> None:
    assert list(rechunk([], 5)) == []
    assert list(rechunk([_letters(0)], 5)) == []
    assert list(rechunk([], 5, schema=pa.schema([("n", pa.int64())]))) == []


def test_rechunk_turns_typed_batches_into_text_and_refuses_a_chunk_size_below_one() -> None:
    [chunk] = rechunk([pa.record_batch({"n": pa.array([1, None])})], 5)
    assert chunk.batch.to_pylist() == [{ROW_COLUMN: 1, "n": "1"}, {ROW_COLUMN: 2, "n": ""}]
    with pytest.raises(ValueError, match="chunk_rows"):
        list(rechunk([], 0))


# ---------------------------------------------------------------- ChunkBuilder


def _numbered(rows: list[int]) -> pa.RecordBatch:
    return pa.record_batch(
        {ROW_COLUMN: pa.array(rows, pa.int64()), "v": pa.array([f"r{r}" for r in rows], pa.string())},
    )


def test_chunk_builder_keeps_the_readers_numbers_with_gaps_and_places_malformed_rows() -> None:
    schema = _numbered([]).schema
    builder = ChunkBuilder(schema, 3)
    chunks: list[SourceChunk] = []
    # A reader that skips blank lines 3 and 8 and finds lines 5 and 12 malformed, in file order.
    chunks += builder.add(_numbered([1, 2, 4]))
    builder.add_malformed(_bad(5)[0])
    chunks += builder.add(_numbered([6, 7]))
    chunks += builder.add(_numbered([9, 10, 11]))
    builder.add_malformed(_bad(12)[0])
    chunks += builder.finish()
    assert _layout(chunks) == [([1, 2, 4], []), ([6, 7, 9], [5]), ([10, 11], [12])]
    assert all(c.batch.schema == schema for c in chunks)


def test_chunk_builder_hands_out_trailing_or_only_malformed_rows_with_an_empty_batch() -> None:
    builder = ChunkBuilder(_numbered([]).schema, 2)
    chunks = list(builder.add(_numbered([1, 2])))
    builder.add_malformed(_bad(3)[0])
    assert builder.waiting_malformed == 1 and builder.first_waiting_malformed == _bad(3)[0]
    chunks += builder.finish()
    assert _layout(chunks) == [([1, 2], []), ([], [3])]

    only = ChunkBuilder(_numbered([]).schema, 2)
    only.add_malformed(_bad(7)[0])
    assert _layout(list(only.finish())) == [([], [7])]
    assert list(ChunkBuilder(_numbered([]).schema, 2).finish()) == []


def test_chunk_builder_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="chunk_rows"):
        ChunkBuilder(_numbered([]).schema, 0)
    with pytest.raises(ValueError, match="__row"):
        ChunkBuilder(pa.schema([("v", pa.string())]), 5)
    builder = ChunkBuilder(_numbered([]).schema, 5)
    with pytest.raises(ValueError, match="schema"):
        list(builder.add(pa.record_batch({ROW_COLUMN: pa.array([1]), "v": pa.array([1])})))


# ---------------------------------------------------------------- to_text


def _text(array: pa.Array) -> list[str]:
    out = to_text(pa.record_batch([array], names=["v"])).column(0)
    assert pa.types.is_string(out.type) or pa.types.is_large_string(out.type)
    return out.to_pylist()


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (pa.array([42, -7, None], pa.int64()), ["42", "-7", ""]),
        (pa.array([3, None], pa.uint8()), ["3", ""]),
        # Whole floats lose ".0"; others are the shortest text that reads back the same.
        (pa.array([1.0, 0.1, 2.5, -0.0, None]), ["1", "0.1", "2.5", "0", ""]),
        # Never exponent notation: the transform's number cast rejects 1e-07 and 1e+16.
        (pa.array([1e-7, 1e16, 123456789.125]), ["0.0000001", "10000000000000000", "123456789.125"]),
        # A float32 0.1 is 0.100000001490116..., but its own shortest form is 0.1.
        (pa.array([0.1, 3.0, None], pa.float32()), ["0.1", "3", ""]),
        (pa.array([1.5, 2.0], pa.float16()), ["1.5", "2"]),
        (pa.array([True, False, None]), ["true", "false", ""]),
        (pa.array([dt.date(2024, 2, 29), None, dt.date(1960, 1, 5)]), ["2024-02-29", "", "1960-01-05"]),
        (pa.array([dt.date(2024, 2, 29), None], pa.date64()), ["2024-02-29", ""]),
        (
            pa.array([dt.datetime(2024, 1, 5, 10, 30), None], pa.timestamp("s")),
            ["2024-01-05T10:30:00", ""],
        ),
        # A fraction only when there is one (Arrow's own %S would print ".000000000").
        (
            pa.array([dt.datetime(2024, 1, 5, 10, 30), dt.datetime(2024, 1, 5, 10, 30, 0, 123000)], pa.timestamp("ns")),
            ["2024-01-05T10:30:00", "2024-01-05T10:30:00.123000000"],
        ),
        (
            pa.array(
                [dt.datetime(1969, 12, 31, 23, 59, 59), dt.datetime(1960, 1, 1, 0, 0, 0, 500000)], pa.timestamp("ms")
            ),
            ["1969-12-31T23:59:59", "1960-01-01T00:00:00.500"],
        ),
        # Zoned: the local time in its zone, with an extended ISO offset.
        (
            pa.array([dt.datetime(2024, 1, 5, 2, 30), None], pa.timestamp("us", tz="Asia/Shanghai")),
            ["2024-01-05T10:30:00+08:00", ""],
        ),
        (pa.array([dt.datetime(2024, 7, 1, 12, 0)], pa.timestamp("s", tz="UTC")), ["2024-07-01T12:00:00+00:00"]),
        (pa.array([dt.time(10, 30), dt.time(0, 0, 1, 500), None]), ["10:30:00", "00:00:01.000500", ""]),
        (pa.array([None, None], pa.null()), ["", ""]),
        (pa.array(["a", None, "中文"]), ["a", "", "中文"]),
        (pa.array(["a", None], pa.large_string()), ["a", ""]),
        (pa.array(["x", None, "x"]).dictionary_encode(), ["x", "", "x"]),
        (pa.array([Decimal("12.50"), None], pa.decimal128(10, 2)), ["12.50", ""]),
        (pa.array(["中".encode(), None], pa.binary()), ["中", ""]),
    ],
)
def test_to_text_writes_each_arrow_type_as_the_transform_reads_it(array: pa.Array, expected: list[str]) -> None:
    assert _text(array) == expected


def test_to_text_passes_string_batches_through_untouched_and_keeps_names_and_metadata() -> None:
    batch = pa.record_batch({"a": pa.array(["x"]), "b": pa.array(["y"])})
    assert to_text(batch) is batch
    typed = pa.RecordBatch.from_arrays(
        [pa.array([1]), pa.array(["y"])], schema=pa.schema([("a", pa.int64()), ("b", pa.string())], metadata={"k": "v"})
    )
    out = to_text(typed)
    assert out.schema.names == ["a", "b"] and out.schema.metadata == {b"k": b"v"}
    # A column that changes keeps its field's metadata (the CSV reader marks fields with theirs).
    marked = pa.schema([pa.field("s", pa.string(), metadata={"dms.decode": "gb18030"})])
    out = to_text(pa.RecordBatch.from_arrays([pa.array(["x", None])], schema=marked))
    assert out.column(0).to_pylist() == ["x", ""] and out.schema.field("s").metadata == {b"dms.decode": b"gb18030"}


def test_float_text_always_gives_text_the_number_cast_accepts() -> None:
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.normal(0, 1e6, 200), 10.0 ** rng.integers(-12, 20, 200), [2.0**53, -(2.0**60)]])
    for value in values:
        text = float_text(value)
        assert re.fullmatch(_NUMBER_RE, text), text
        assert float(text) == value
    # The scalar and the column forms are one rule.
    assert _text(pa.array(values)) == [float_text(v) for v in values]
