"""Every row's result, kept with its chunk's audit record as gzipped CSV attachments.

`rejects.csv.gz` (rejected by the transform or before the load: row, key, field, reason,
code), `failures.csv.gz` (failed in Salesforce: row, key, id, code, message) and
`successes.csv.gz` (row, key, id, created). The run's audit then answers "what happened to
row N" after the stage has expired, and a later run can retry exactly the rows that did not
load (`retry_failed_from`).

Fields the spec marks `sensitive` are masked in what the audit stores: a key from such a
field becomes `***`, and a reason or message about such a field loses the value it quotes.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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


def sensitive_fields(obj: ObjectSpec) -> set[str]:
    return {name for name, field in obj.fields.items() if field.sensitive}


def key_is_sensitive(obj: ObjectSpec) -> bool:
    """Whether the report key (the `key` column, or the external id) holds sensitive data."""
    if obj.external_id and obj.fields[obj.external_id].sensitive:
        return True
    return any(f.sensitive and obj.key in f.columns for f in obj.fields.values()) if obj.key else False


def mask_row(obj: ObjectSpec, row: dict[str, Any]) -> dict[str, Any]:
    """One result row as the audit may store it."""
    out = dict(row)
    if key_is_sensitive(obj) and out.get("key"):
        out["key"] = MASK
    secret = sensitive_fields(obj)
    if out.get("field") in secret:
        out["reason"] = f"{out['field']}: rejected ({out.get('code', '')}); the value is not shown (sensitive field)"
    if "message" in out and secret:
        # Salesforce's messages may quote the value; keep only the part before any quote.
        text = str(out["message"])
        for quote in ("'", '"', ":"):
            if quote in text:
                text = text.split(quote, 1)[0].rstrip() + f" {MASK}"
                break
        out["message"] = text
    return out


def chunk_attachments(stage: Stage, key: ChunkKey, obj: ObjectSpec, kinds: Iterable[str]) -> dict[str, bytes]:
    """The chunk's staged result tables of `kinds` as gzipped CSV attachments (missing ones are skipped)."""
    from dms.staging import StageMissingError

    rows: dict[str, list[dict[str, Any]]] = {}
    kinds = list(kinds)
    for kind in kinds:
        name, _ = ATTACHMENTS[kind]
        with contextlib.suppress(StageMissingError):
            rows.setdefault(name, []).extend(stage.get_table(key, kind).to_pylist())
    out: dict[str, bytes] = {}
    kinds = list(kinds)
    with contextlib.suppress(StageMissingError):
        if "successes" not in kinds:
            raise StageMissingError("before-images belong to the load's record")
        before = stage.get_table(key, "before")
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(before.column_names)
        writer.writerows(zip(*(before.column(c).to_pylist() for c in before.column_names), strict=True))
        out[BEFORE] = gzip.compress(buffer.getvalue().encode("utf-8"), mtime=0)
    for name, records in rows.items():
        columns = next(cols for n, cols in ATTACHMENTS.values() if n == name)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for record in sorted(records, key=lambda r: int(r.get("row", 0))):
            masked = mask_row(obj, record)
            writer.writerow([masked.get(c, "") for c in columns])
        out[name] = gzip.compress(buffer.getvalue().encode("utf-8"), mtime=0)
    return out


def read_attachment(data: bytes | None) -> list[dict[str, str]]:
    """The rows of a gzipped CSV attachment (none when it is missing)."""
    if not data:
        return []
    return list(csv.DictReader(io.StringIO(gzip.decompress(data).decode("utf-8"))))
