"""Every row's result, kept with its chunk's audit record as gzipped CSV attachments.

`rejects.csv.gz` (rejected by the transform or before the load: row, key, field, reason,
code), `failures.csv.gz` (failed in Salesforce: row, key, id, code, message) and
`successes.csv.gz` (row, key, id, created). The run's audit then answers "what happened to
row N" after the stage has expired, and a later run can retry exactly the rows that did not
load (`retry_failed_from`).

Fields the spec marks `sensitive` are masked in what the audit stores: a key from such a
field becomes `***`, and a reason or message about such a field loses the value it quotes.

A chunk holds up to 100k rows, so the attachments are built column by column in Arrow
(`mask_columns`, `csv_bytes`); `mask_row` states the same rules for one row.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from dms.spec import ObjectSpec
    from dms.staging import ChunkKey, Stage

MASK = "***"
# Staged tables of a chunk, and the attachment each goes into.
ATTACHMENTS = {
    "rejects": ("rejects.csv.gz", ["row", "key", "field", "reason", "code"]),
    "load_rejects": ("rejects.csv.gz", ["row", "key", "field", "reason", "code"]),
    "failures": ("failures.csv.gz", ["row", "key", "id", "field", "code", "message"]),
    "relink_failures": ("failures.csv.gz", ["row", "key", "id", "field", "code", "message"]),
    "successes": ("successes.csv.gz", ["row", "key", "id", "created"]),
}
# Before-images (see LoadOperator.capture_before_images): their columns are the fields written.
BEFORE = "before.csv.gz"
# Speed over size: level 1 is several times faster than gzip's default 9 on these CSVs and
# they stay a fraction of their text; mtime=0 keeps a retry's bytes identical.
GZIP_LEVEL = 1
# Salesforce's messages may quote the value; the first of these (in this order) cuts it off.
_MESSAGE_CUTS = ("'", '"', ":")
# What makes the csv module quote a cell: the delimiter, the quote, or a line break. A
# carriage return is quoted whatever the line terminator, so the file reads back.
_NEEDS_QUOTES = '[,"\r\n]'


def sensitive_fields(obj: ObjectSpec) -> set[str]:
    return {name for name, field in obj.fields.items() if field.sensitive}


def key_is_sensitive(obj: ObjectSpec) -> bool:
    """Whether the report key (the `key` column, or the external id) holds sensitive data."""
    if obj.external_id and obj.fields[obj.external_id].sensitive:
        return True
    return any(f.sensitive and obj.key in f.columns for f in obj.fields.values()) if obj.key else False


def _sensitive_reason(field: Any, code: Any) -> str:
    return f"{field}: rejected ({code}); the value is not shown (sensitive field)"


def mask_row(obj: ObjectSpec, row: dict[str, Any]) -> dict[str, Any]:
    """One result row as the audit may store it."""
    out = dict(row)
    if key_is_sensitive(obj) and out.get("key"):
        out["key"] = MASK
    secret = sensitive_fields(obj)
    if out.get("field") in secret:
        out["reason"] = _sensitive_reason(out["field"], out.get("code", ""))
    if "message" in out and secret:
        text = str(out["message"])
        for quote in _MESSAGE_CUTS:
            if quote in text:
                text = text.split(quote, 1)[0].rstrip() + f" {MASK}"
                break
        out["message"] = text
    return out


def _large(text: str) -> pa.Scalar:
    import pyarrow as pa

    return pa.scalar(text, pa.large_string())


def text_column(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A column as the csv module writes its Python values: `str(value)`, and "" for null."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    kind = values.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind):
        text = values.cast(pa.large_string())
    elif pa.types.is_boolean(kind):
        # str(True) is "True"; Arrow's cast would say "true".
        text = pc.if_else(values, _large("True"), _large("False"))
    elif pa.types.is_null(kind):
        text = pa.nulls(len(values), pa.large_string())
    else:
        # Floats, dates and the like: Arrow's text differs from str() (1.0 -> "1"), and the
        # staged result tables hold only strings and ints, so this is the rare path.
        text = pa.array([None if v is None else str(v) for v in values.to_pylist()], pa.large_string())
    return pc.fill_null(text, _large(""))


def table_text(table: pa.Table, columns: list[str]) -> dict[str, pa.Array]:
    """`columns` of a staged table as text; a column the table lacks is empty."""
    import pyarrow as pa

    return {
        c: text_column(table.column(c)) if c in table.column_names else pa.repeat(_large(""), table.num_rows)
        for c in columns
    }


def concat_text(parts: list[dict[str, pa.Array]], columns: list[str]) -> dict[str, pa.Array]:
    """Text columns of several tables, one after the other."""
    import pyarrow as pa

    if len(parts) == 1:
        return parts[0]
    return {c: pa.concat_arrays([p[c] for p in parts]) if parts else pa.repeat(_large(""), 0) for c in columns}


def sort_by_row(columns: dict[str, pa.Array]) -> dict[str, pa.Array]:
    """The rows in source-row order; rows with the same number keep their order (a stable sort)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if "row" not in columns or not len(columns["row"]):
        return columns
    order = pc.sort_indices(pa.table({"row": columns["row"].cast(pa.int64())}), sort_keys=[("row", "ascending")])
    return {c: values.take(order) for c, values in columns.items()}


def mask_columns(obj: ObjectSpec, columns: dict[str, pa.Array]) -> dict[str, pa.Array]:
    """`mask_row` on text columns: the same rules, applied to every row at once.

    The columns come from `table_text`, so a null is already an empty cell here (the row
    rules would print a null message or code under sensitive fields as "None").
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    out = dict(columns)
    rows = len(next(iter(out.values()))) if out else 0
    if not rows:
        return out
    if "key" in out and key_is_sensitive(obj):
        out["key"] = pc.if_else(pc.equal(out["key"], _large("")), out["key"], _large(MASK))
    secret = sensitive_fields(obj)
    if not secret:
        return out
    if "reason" in out and "field" in out:
        hidden = pc.is_in(out["field"], value_set=pa.array(sorted(secret), pa.large_string()))
        if pc.any(hidden).as_py():
            code = out.get("code", pa.repeat(_large(""), rows))
            reason = pc.binary_join_element_wise(
                out["field"],
                _large(": rejected ("),
                code,
                _large("); the value is not shown (sensitive field)"),
                _large(""),
            )
            out["reason"] = pc.if_else(hidden, reason, out["reason"])
    if "message" in out:
        message = out["message"]
        cut = pa.repeat(pa.scalar(False), rows)
        for quote in _MESSAGE_CUTS:
            # By precedence, not position: a quote cuts even after a colon, as in `mask_row`.
            has = pc.and_(pc.match_substring(out["message"], quote), pc.invert(cut))
            if not pc.any(has).as_py():
                continue
            before = pc.list_element(pc.split_pattern(out["message"], pattern=quote, max_splits=1), 0)
            shortened = pc.binary_join_element_wise(pc.utf8_rtrim_whitespace(before), _large(f" {MASK}"), _large(""))
            message = pc.if_else(has, shortened, message)
            cut = pc.or_(cut, has)
        out["message"] = message
    return out


def csv_bytes(columns: Mapping[str, pa.Array], lineterminator: str = "\n") -> memoryview:
    """The rows of text columns as CSV lines, quoted as `csv.writer` quotes them (QUOTE_MINIMAL)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    cells = list(columns.values())
    if not cells or not len(cells[0]):
        return memoryview(b"")
    separator = _large(",")
    parts: list[Any] = []
    for values in cells:
        needs = pc.match_substring_regex(values, _NEEDS_QUOTES)
        if pc.any(needs).as_py():
            quoted = pc.binary_join_element_wise(
                _large('"'), pc.replace_substring(values, '"', '""'), _large('"'), _large("")
            )
            values = pc.if_else(needs, quoted, values)
        parts += [values, separator]
    parts[-1] = _large(lineterminator)
    lines = pc.binary_join_element_wise(*parts, _large(""))
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    # The lines lie end to end in the array's data buffer: hand that out, not a copy per row.
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)
    start, end = int(offsets[lines.offset]), int(offsets[lines.offset + len(lines)])
    return memoryview(lines.buffers()[2])[start:end]


def header_bytes(header: list[str], lineterminator: str = "\n") -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=lineterminator).writerow(header)
    return buffer.getvalue().encode("utf-8")


def _gzip(header: list[str], body: memoryview) -> bytes:
    return gzip.compress(header_bytes(header) + body, compresslevel=GZIP_LEVEL, mtime=0)


def chunk_attachments(stage: Stage, key: ChunkKey, obj: ObjectSpec, kinds: Iterable[str]) -> dict[str, bytes]:
    """The chunk's staged result tables of `kinds` as gzipped CSV attachments.

    Every attachment of `kinds` is there, with a header and no rows when none of its tables
    is staged (a dry run loads nothing); the before-images only when they are staged.
    """
    from dms.staging import StageMissingError

    kinds = list(kinds)
    parts: dict[str, list[dict[str, pa.Array]]] = {}
    for kind in kinds:
        name, columns = ATTACHMENTS[kind]
        tables = parts.setdefault(name, [])
        with contextlib.suppress(StageMissingError):
            tables.append(table_text(stage.get_table(key, kind), columns))
    out: dict[str, bytes] = {}
    with contextlib.suppress(StageMissingError):
        if "successes" not in kinds:
            raise StageMissingError("before-images belong to the load's record")
        before = stage.get_table(key, "before")
        out[BEFORE] = _gzip(before.column_names, csv_bytes(table_text(before, before.column_names)))
        del before
    for name, tables in parts.items():
        columns = next(cols for n, cols in ATTACHMENTS.values() if n == name)
        rows = mask_columns(obj, sort_by_row(concat_text(tables, columns)))
        out[name] = _gzip(columns, csv_bytes(rows))
    return out


def read_attachment(data: bytes | None) -> list[dict[str, str]]:
    """The rows of a gzipped CSV attachment (none when it is missing)."""
    if not data:
        return []
    return list(csv.DictReader(io.StringIO(gzip.decompress(data).decode("utf-8"))))
