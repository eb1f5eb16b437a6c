"""Mapping one chunk onto its target sObject: ready rows for the load, rejected rows with reasons.

The pipeline for each mapped field, in order, all on whole columns:

1. the source column, or the constant `value`;
2. `strip` (all Unicode whitespace, including the ideographic space), then `case`;
3. `value_map`, looked up after strip and case, case-sensitively. A non-empty value the map
   does not list is rejected (VALUE_MAP), unless the map has a `"*"` entry, whose value
   then replaces every unlisted value. Empty values pass the map untouched unless it has
   a `""` entry. A value mapped to null or "" is empty from then on;
4. `default`, for values that are empty at this point;
5. the required check (REQUIRED): the spec's `required`, Salesforce's required fields on
   insert/upsert, the external id of an upsert and the Id of an update;
6. the cast by `type` (TYPE; see `dms.transform.casting` for the accepted inputs);
7. the Salesforce checks: text length (LENGTH), restricted picklists (PICKLIST), email
   shape (FORMAT).

Then, over the rows still ready, duplicate external ids (DUPLICATE_KEY). A row is rejected
once, with the first problem found: fields in the spec's order, steps in the order above.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from dms.errors import FatalError
from dms.sources.text import Undecodable, decode_batch
from dms.spec import FieldSpec, ObjectSpec
from dms.transform.casting import arrow_text, byte_lengths, cast_column, email_problem, has_value
from dms.transform.describe import FieldTarget, resolve_targets
from dms.transform.rejects import RejectCode, RejectLog, quoted, reject_undecodable

ROW_COLUMN = "__row"
_DUPLICATE_ROWS_SHOWN = 5


@dataclass(frozen=True)
class TransformResult:
    """One chunk, split: every input row is in exactly one of `ready` and `rejects`.

    `ready` has `__row` and then one column per mapped field (the spec's field names), as
    strings formatted for a Bulk API 2.0 CSV, "" meaning no value. `rejects` has one row
    per rejected input row: `row`, `key`, `field`, `reason`, `code`.
    """

    table: pa.Table
    rejects: pd.DataFrame

    @property
    def ready(self) -> pd.DataFrame:
        """The ready rows as a DataFrame (the stage takes `table` as it is, without pandas)."""
        return self.table.to_pandas()

    @property
    def rows(self) -> int:
        return self.table.num_rows + len(self.rejects)


def transform_chunk(
    obj: ObjectSpec,
    batch: pa.RecordBatch | pa.Table,
    sobject_fields: dict[str, dict[str, Any]],
    lookups: dict[str, dict[str, Any]] | None = None,
    value_maps: dict[str, dict[str, str]] | None = None,
    salt: str | None = None,
) -> TransformResult:
    """Map, cast and validate one chunk of `obj`'s source rows against the org's describe subset.

    `lookups` holds, for each field with a `lookup`, the existing records' Ids by matched
    value (lower-cased, as SOQL compares text) and the values more than one record has
    (see `dms.operators.extract`). `value_maps` holds the entries of each field's
    `value_map_file`, read by the extract. `salt` keys the `anonymise` hashes and fakes.

    Raises `FatalError` before looking at any row when the spec does not fit the org or the
    chunk (an unknown field, an incompatible type, a missing source column): those would
    fail every row for one reason that only a change to the spec can fix.
    """
    targets = resolve_targets(obj, sobject_fields)
    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    undecodable: list[Undecodable] = []
    frame = _text_frame(obj, table, targets, undecodable)
    n = len(frame)
    rows = frame[ROW_COLUMN].to_numpy(dtype=np.int64)
    log = RejectLog(rows, _report_keys(obj, frame, n))
    # First: a value whose bytes are not the declared encoding is "" from here on.
    reject_undecodable(log, undecodable)
    ready: dict[str, pd.Series] = {}
    for target in targets:
        ready[target.name] = _field_column(target, frame, n, log, (value_maps or {}).get(target.name), salt)
        if target.spec.lookup is not None:
            ready[target.name] = _resolve_lookup(target, ready[target.name], (lookups or {}).get(target.name), log)
    _reject_duplicate_keys(obj, targets, ready, rows, log)
    # Arrow from here on: the columns are Arrow-backed already, and the stage writes Arrow.
    table = pa.table(
        {ROW_COLUMN: pa.array(rows), **{name: pa.array(col, type=pa.large_string()) for name, col in ready.items()}}
    )
    keep = ~log.rejected
    if not keep.all():
        table = table.filter(pa.array(keep))
    return TransformResult(table=_narrow_offsets(table), rejects=log.frame())


# A string column's values with 32-bit offsets take at most this many bytes.
_STRING_LIMIT = 2**31 - 1


def _narrow_offsets(table: pa.Table) -> pa.Table:
    """The ready rows with 32-bit string offsets wherever the column's text fits in them.

    pandas hands over 64-bit offsets (large_string). The stage compresses the 32-bit kind about
    a third faster (bench/bench_pipeline.py's ready rows: 70 -> 45 ms of CPU per 100k-row chunk,
    5.2 MB staged instead of 3.4), and a transform task is CPU-bound while the load that reads
    them back waits on Salesforce. A column of more than 2 GiB of text keeps 64-bit offsets.
    """
    columns = []
    for column in table.columns:
        if pa.types.is_large_string(column.type) and sum(c.nbytes for c in column.chunks) <= _STRING_LIMIT:
            column = column.cast(pa.string())
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def _text_frame(
    obj: ObjectSpec, table: pa.Table, targets: list[FieldTarget], undecodable: list[Undecodable] | None = None
) -> pd.DataFrame:
    """The columns the spec reads, as pandas strings with "" for null, plus `__row`."""
    if ROW_COLUMN not in table.column_names:
        raise FatalError(f"object {obj.name!r}: the chunk has no {ROW_COLUMN!r} column (not from a DMS reader?)")
    wanted = [c for t in targets for c in t.spec.columns]
    if obj.key:
        wanted.append(obj.key)
    missing = sorted({c for c in wanted if c not in table.column_names})
    if missing:
        available = [c for c in table.column_names if c != ROW_COLUMN]
        raise FatalError(
            f"object {obj.name!r} ({obj.sobject}): source column(s) {missing} not in the data; "
            f"the columns are {available}"
        )
    # Only the columns the spec reads are decoded (see dms.sources.text for why it happens here).
    table = decode_batch(table, list(dict.fromkeys(wanted)), undecodable)
    arrays: dict[str, pa.ChunkedArray] = {ROW_COLUMN: table.column(ROW_COLUMN).cast(pa.int64())}
    for name in dict.fromkeys(wanted):
        column = table.column(name)
        # CSV chunks are strings already; other readers may hand over typed columns.
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            column = column.cast(pa.string())
        arrays[name] = pc.fill_null(column, "")
    frame = pa.table(arrays).to_pandas()
    for name in arrays:
        if name != ROW_COLUMN and frame[name].dtype != "str":
            frame[name] = frame[name].astype("str")
    return frame


def _report_keys(obj: ObjectSpec, frame: pd.DataFrame, n: int) -> pd.Series:
    """What identifies a row in the reject report: the spec's `key` column, else the external id's source."""
    if obj.key is not None:
        return frame[obj.key].str.strip()
    if obj.external_id and obj.fields[obj.external_id].source is not None:
        return source_values(obj.fields[obj.external_id], frame)
    return pd.Series([""] * n, dtype="str")


def source_values(spec: FieldSpec, frame: pd.DataFrame) -> pd.Series:
    """A field's source column, or its columns joined by `separator` (each stripped first, if `strip`).

    Joined columns form a composite key, which needs every part: a row with an empty part
    gets an empty value (no key, no lookup) rather than a half key like "A001-".
    """
    parts = [frame[c].str.strip() if spec.strip else frame[c] for c in spec.columns]
    if len(parts) == 1:
        return parts[0]
    joined = parts[0].str.cat(parts[1:], sep=spec.separator)
    incomplete = np.logical_or.reduce([(p == "").to_numpy(dtype=bool) for p in parts])
    return joined.where(~incomplete, "")


def as_text(value: Any) -> str:
    """A constant from the YAML (value, default, value_map entry) as source text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float):
        # str(1e20) is "1e+20", which the number cast refuses; write the digits out.
        return format(Decimal(repr(value)), "f")
    return str(value)


def _field_column(
    target: FieldTarget,
    frame: pd.DataFrame,
    n: int,
    log: RejectLog,
    file_map: dict[str, str] | None = None,
    salt: str | None = None,
) -> pd.Series:
    spec = target.spec
    if spec.source is not None:
        values = source_values(spec, frame)
    elif spec.expr is not None:
        values = spec.expression().evaluate(frame).reset_index(drop=True)
        if spec.strip:
            values = values.str.strip()
    else:
        # One Arrow string repeated by a take: a column of n Python strings would be converted one by one.
        text = as_text(spec.value)
        constant = pa.array([text.strip() if spec.strip else text], type=pa.large_string())
        values = pd.Series(constant.take(np.zeros(n, dtype=np.int32)), dtype="str")
    # Each branch above strips once (source_values strips every source column before joining).
    if spec.case:
        values = getattr(values.str, spec.case)()
    if spec.split is not None:
        parts = values.str.split(spec.split.separator, regex=False)
        index = spec.split.part - 1 if spec.split.part > 0 else spec.split.part
        values = pd.Series(parts.str[index].fillna(""), dtype="str")
        if spec.strip:
            values = values.str.strip()
    if spec.value_map is not None or file_map is not None:
        values = _apply_value_map(target, values, log, file_map)
    if spec.default is not None:
        values = values.where(values != "", as_text(spec.default))
    if spec.anonymise is not None:
        # Before the checks, so a fake value is validated like any other (lengths, email shape).
        from dms.transform.anonymise import anonymise

        if spec.anonymise.method != "mask" and not salt:
            raise FatalError(
                f"{target.name}: anonymise {spec.anonymise.method} needs the salt (Airflow Variable dms_anonymise_salt)"
            )
        values = anonymise(
            values, spec.anonymise.method, salt=salt or "", kind=spec.anonymise.kind, keep=spec.anonymise.keep
        )
    present = has_value(values)
    if target.required:
        log.add(~present, target.name, RejectCode.REQUIRED, f"{target.name} is empty, and it is {target.required}")
    cast = cast_column(target, values, present)
    for mask, code, reason in cast.problems:
        log.add(mask, target.name, code, reason)
    values = cast.values
    present = has_value(values)
    if target.max_length is not None:
        # A character takes at least one byte, so only values longer in bytes (known from the
        # Arrow offsets, no pass over the text) can be longer in characters.
        too_long = present & (byte_lengths(values) > target.max_length)
        if too_long.any():
            too_long &= values.str.len().to_numpy() > target.max_length
        if too_long.any():
            limit = target.max_length
            log.add(
                too_long,
                target.name,
                RejectCode.LENGTH,
                lambda idx: (
                    quoted(values.iloc[idx])
                    + f" is longer than {limit} characters ("
                    + values.iloc[idx].str.len().astype(str)
                    + ")"
                ).to_numpy(dtype=object),
            )
    if target.restricted_values is not None:
        _check_picklist(target, values, present, log)
    if target.sf_type == "email":
        log.add(*_with_field(target, email_problem(values, present)))
    return values


def _resolve_lookup(target: FieldTarget, values: pd.Series, found: dict[str, Any] | None, log: RejectLog) -> pd.Series:
    """Replace each value by the Id of the one existing record that has it; reject the others."""
    lookup = target.spec.lookup
    assert lookup is not None
    if found is None:
        raise FatalError(f"{target.name}: the lookup of {lookup.sobject}.{lookup.field} was not staged by the extract")
    ids: dict[str, str] = found["ids"]
    ambiguous = set(found.get("ambiguous", ()))
    keys = pa.array(values.str.lower(), type=pa.large_string())
    position = pc.index_in(keys, value_set=pa.array(list(ids), type=pa.large_string()))
    present = has_value(values)
    hit = position.is_valid().to_numpy(zero_copy_only=False)
    twice = present & pc.is_in(keys, value_set=pa.array(sorted(ambiguous), type=pa.large_string())).to_numpy(
        zero_copy_only=False
    )
    what = f"{lookup.sobject} with {lookup.field}"
    log.add(
        twice,
        target.name,
        RejectCode.LOOKUP,
        lambda idx: (f"more than one {what} " + quoted(values.iloc[idx])).to_numpy(dtype=object),
    )
    log.add(
        present & ~hit,
        target.name,
        RejectCode.LOOKUP,
        lambda idx: (f"no {what} " + quoted(values.iloc[idx]) + " in Salesforce").to_numpy(dtype=object),
    )
    resolved = pa.array(list(ids.values()), type=pa.large_string()).take(position)
    return pd.Series(pc.fill_null(resolved, ""), dtype="str")


def _with_field(target: FieldTarget, problem: tuple) -> tuple:
    mask, code, reason = problem
    return mask, target.name, code, reason


def _apply_value_map(
    target: FieldTarget, values: pd.Series, log: RejectLog, file_map: dict[str, str] | None = None
) -> pd.Series:
    mapping = {**(file_map or {}), **{as_text(k): as_text(v) for k, v in (target.spec.value_map or {}).items()}}
    fallback = mapping.pop("*", None)
    # Arrow kernels on the column pandas already holds: no Python string per row.
    source = pa.array(values, type=pa.large_string())
    position = pc.index_in(source, value_set=pa.array(list(mapping), type=pa.large_string()))
    hit = position.is_valid()
    mapped = pa.array(list(mapping.values()), type=pa.large_string()).take(position)
    # "" passes the map untouched (it is "no value", handled by default/required) unless
    # the map lists it, in which case `hit` covers it.
    miss = ~hit.to_numpy(zero_copy_only=False) & has_value(values)
    if fallback is not None:
        unlisted = pc.if_else(pa.array(miss), pa.scalar(fallback, pa.large_string()), source)
        result = pc.if_else(hit, mapped, unlisted)
    else:
        log.add(
            miss,
            target.name,
            RejectCode.VALUE_MAP,
            lambda idx: (quoted(values.iloc[idx]) + ' is not in the value_map (add it, or a "*" entry)').to_numpy(
                dtype=object
            ),
        )
        result = pc.if_else(hit, mapped, source)
    return pd.Series(result, dtype="str")


def _check_picklist(target: FieldTarget, values: pd.Series, present: np.ndarray, log: RejectLog) -> None:
    allowed = sorted(target.restricted_values or ())
    if target.sf_type == "multipicklist":
        # Every ;-separated choice must be allowed; explode only the rows with a value.
        parts = values[present].str.split(";").explode().str.strip()
        bad_parts = ~parts.isin(allowed)
        bad = np.zeros(len(values), dtype=bool)
        bad[np.unique(parts.index[bad_parts.to_numpy(dtype=bool)])] = True
    else:
        bad = present & ~values.isin(allowed).to_numpy(dtype=bool)
    if not bad.any():
        return
    shown = ", ".join(allowed[:10]) + (", …" if len(allowed) > 10 else "")
    log.add(
        bad,
        target.name,
        RejectCode.PICKLIST,
        lambda idx: (
            quoted(values.iloc[idx]) + f" is not a value of the restricted picklist {target.name} ({shown})"
        ).to_numpy(dtype=object),
    )


def _duplicate_key_field(obj: ObjectSpec, targets: list[FieldTarget]) -> FieldTarget | None:
    if obj.external_id:
        return next(t for t in targets if t.name == obj.external_id)
    if obj.operation in ("update", "delete", "hardDelete"):
        return next((t for t in targets if t.sf_type == "id"), None)
    return None


def _reject_duplicate_keys(
    obj: ObjectSpec, targets: list[FieldTarget], ready: dict[str, pd.Series], rows: np.ndarray, log: RejectLog
) -> None:
    """Reject every row whose external id (or update Id) occurs more than once among the ready rows.

    Salesforce fails all of them anyway (an upsert cannot decide which row wins; an update
    job refuses a repeated Id), and an arbitrary winner would load data nobody chose.
    External ids compare case-insensitively, as Salesforce's do unless the field is marked
    case-sensitive; record ids are case-sensitive. Rows already rejected for another reason
    do not count: they will not reach Salesforce. Duplicates across chunks are caught by
    the load (`LoadOperator._cross_chunk_duplicates`), which sees every chunk's keys.
    """
    target = _duplicate_key_field(obj, targets)
    if target is None:
        return
    values = ready[target.name]
    candidates = ~log.rejected & has_value(values)
    if not candidates.any():
        return
    # In Arrow throughout: one hash pass (dictionary encoding) finds the repeated keys. pandas'
    # duplicated() would first turn the column into Python objects, and each pandas step on the
    # way (lower, the mask) costs more in wrapping than its kernel.
    normal = arrow_text(values)
    if not target.case_sensitive_key:
        normal = pc.utf8_lower(normal)
    normal = normal.filter(pa.array(candidates))
    encoded = pc.dictionary_encode(normal)
    if len(encoded.dictionary) == len(normal):
        return
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    repeated = np.bincount(indices, minlength=len(encoded.dictionary))[indices] > 1
    positions = np.flatnonzero(candidates)[repeated]
    keys = normal.filter(pa.array(repeated)).to_numpy(zero_copy_only=False)
    groups = pd.DataFrame({"key": keys, "row": rows[positions]})
    listing = groups.groupby("key", sort=False)["row"].agg(
        lambda r: (
            f"{len(r)} rows of this chunk (rows {', '.join(map(str, r.iloc[:_DUPLICATE_ROWS_SHOWN]))}"
            + (", …)" if len(r) > _DUPLICATE_ROWS_SHOWN else ")")
        )
    )
    mask = np.zeros(len(values), dtype=bool)
    mask[positions] = True
    texts = dict(zip(positions.tolist(), groups["key"].map(listing).tolist(), strict=True))
    log.add(
        mask,
        target.name,
        RejectCode.DUPLICATE_KEY,
        lambda idx: (
            f"{target.name} "
            + quoted(values.iloc[idx])
            + " is in "
            + pd.Series([texts[i] for i in idx], dtype="str", index=values.index[idx])
            + "; Salesforce would fail them all"
        ).to_numpy(dtype=object),
    )
