"""Record storage in SQLite, and the write path every API shares: validate, resolve, apply.

REST, sObject Collections, Bulk API 1.0 and Bulk API 2.0 all call `Store.write`, so a row
gets the same error code whichever API carried it.

A batch is converted column by column (`_convert_columns`). An insert, or an upsert whose
rows are all new, that provably has no row error is then written by column as well
(`_insert_columns`); any other batch becomes one `_Row` per row for the row-by-row checks,
which are the only place each error is decided.
"""

from __future__ import annotations

import random
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import itemgetter
from typing import Any, Literal, overload

from .ids import make_ids, to_18
from .schema import TEXT_TYPES, FieldDef, ObjectDef, OrgSchema
from .values import FieldValueError, column_converter, converter, json_value, now_stamp

Operation = Literal["insert", "update", "upsert", "delete", "hardDelete"]

# A CSV cell that explicitly sets a field to null; an empty cell means "leave unchanged" on update.
CSV_NULL = "#N/A"
_UNSET = object()
# SQLite allows 32766 bound parameters; keep IN lists well below that.
_IN_CHUNK = 10000


@dataclass
class RowError:
    status_code: str
    message: str
    fields: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"statusCode": self.status_code, "message": self.message, "fields": self.fields}

    def as_bulk(self) -> str:
        # Bulk API's sf__Error: CODE:message:fields --
        return f"{self.status_code}:{self.message}:{','.join(self.fields)} --"


@dataclass
class RowResult:
    id: str | None = None
    created: bool = False
    errors: list[RowError] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return not self.errors


class RequestError(Exception):
    """A fault of the whole request (an unknown column, a bad external id field), not of one row."""

    def __init__(self, error_code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message
        self.status = status


@dataclass
class _Column:
    key: str
    field: FieldDef
    convert: Callable[[Any], Any]
    # For a relationship column (Account.Legacy_Id__c): the parent object and its lookup field.
    parent: ObjectDef | None = None
    parent_field: FieldDef | None = None


@dataclass
class _Row:
    index: int
    values: dict[str, Any]
    errors: list[RowError]
    refs: dict[str, tuple[ObjectDef, FieldDef, Any]] = field(default_factory=dict)
    id: str | None = None
    key: Any = None


@dataclass(frozen=True)
class Columns:
    """A batch of CSV rows column by column: `values[j]` holds the cells under `keys[j]`, one per row.

    Every row has every key (a CSV record has a cell under each header), so this is what the
    row dicts ``dict(zip(keys, record))`` would say, without a dict per row.
    """

    keys: Sequence[str]
    values: Sequence[Sequence[str]]
    count: int

    def __len__(self) -> int:
        return self.count


class WriteResults(Sequence[RowResult]):
    """The results of one `write`, one per row in input order, kept as lists.

    A bulk job reads `ids`, `created` and `errors` directly; indexing or iterating builds the
    RowResult of a row on demand.
    """

    __slots__ = ("created", "errors", "ids")

    def __init__(self, ids: list[str | None], created: list[bool], errors: dict[int, RowError]) -> None:
        self.ids = ids  # the record id of each row; a failed row's as RowResult.id reports it
        self.created = created  # True where the row created a record
        self.errors = errors  # row index -> the error a failed row reports (its first)

    @classmethod
    def of(cls, results: Sequence[RowResult]) -> WriteResults:
        errors = {i: r.errors[0] for i, r in enumerate(results) if r.errors}
        return cls([r.id for r in results], [r.created for r in results], errors)

    def __len__(self) -> int:
        return len(self.ids)

    def _result(self, index: int) -> RowResult:
        error = self.errors.get(index)
        if error is not None:
            return RowResult(id=self.ids[index], errors=[error])
        return RowResult(id=self.ids[index], created=self.created[index])

    @overload
    def __getitem__(self, index: int) -> RowResult: ...

    @overload
    def __getitem__(self, index: slice) -> list[RowResult]: ...

    def __getitem__(self, index: int | slice) -> RowResult | list[RowResult]:
        if isinstance(index, slice):
            return [self._result(i) for i in range(len(self.ids))[index]]
        return self._result(range(len(self.ids))[index])  # range indexing: negatives, IndexError

    def __iter__(self) -> Iterator[RowResult]:
        return map(self._result, range(len(self.ids)))


@dataclass
class _Converted:
    """A batch after conversion, by column: what `_convert_columns` found, before any row object."""

    count: int
    names: list[str]  # the field each converted column sets
    columns: list[Sequence[Any]]  # stored values, _UNSET where a row leaves the field alone
    errors: dict[int, list[RowError]]  # conversion errors of the rows that have any, in column order
    row_ids: list[str | None]
    refs: list[dict[str, tuple[ObjectDef, FieldDef, Any]]] | None  # relationship values per row
    sparse: bool  # whether any column holds _UNSET
    # The fields whose column was converted value by value, so may hold None or _UNSET; the
    # columns the whole-column shortcut converted hold neither, and need no scan for them.
    gappy: set[str]

    def rows(self) -> list[_Row]:
        """One `_Row` per row, for the row-by-row checks."""
        if not self.columns:
            records: Iterable[dict[str, Any]] = ({} for _ in range(self.count))
        elif self.sparse:
            names = self.names
            records = (
                {n: v for n, v in zip(names, vals, strict=True) if v is not _UNSET}
                for vals in zip(*self.columns, strict=True)
            )
        else:
            records = map(dict, map(zip, repeat(self.names), zip(*self.columns, strict=True)))
        errors, refs, row_ids = self.errors, self.refs, self.row_ids
        return [
            _Row(i, values, errors.get(i) or [], refs[i] if refs is not None else {}, row_ids[i])
            for i, values in enumerate(records)
        ]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _chunks(values: Sequence[Any], size: int = _IN_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class Store:
    """All records of the org, in one SQLite database (a file, or memory)."""

    def __init__(self, schema: OrgSchema, path: str | None = None, *, seed: int | None = None) -> None:
        self.schema = schema
        self.path = path or ":memory:"
        self.lock = threading.RLock()
        self.rng = random.Random(seed)
        # Share of otherwise valid rows that fail with UNABLE_TO_LOCK_ROW (a fault for tests).
        self.lock_row_rate = 0.0
        self._inserts: dict[tuple[str, frozenset[str]], _Insert] = {}
        self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        if self.path != ":memory:":
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
        self._create_tables()
        if not any(self.count(obj) for obj in self.schema.objects.values()):
            self._seed()

    # ------------------------------------------------------------------ schema

    def _create_tables(self) -> None:
        with self.lock:
            self.conn.execute("CREATE TABLE IF NOT EXISTS _serial (sobject TEXT PRIMARY KEY, next INTEGER NOT NULL)")
            for obj in self.schema.objects.values():
                cols = []
                for f in obj.fields.values():
                    if f.name == "Id":
                        cols.append('"Id" TEXT PRIMARY KEY')
                    elif f.unique or f.external_id:
                        # Salesforce matches unique and external id text case-insensitively.
                        cols.append(f"{_q(f.name)} {f.sql_type} COLLATE NOCASE")
                    else:
                        cols.append(f"{_q(f.name)} {f.sql_type}")
                self.conn.execute(f"CREATE TABLE IF NOT EXISTS {_q(obj.name)} ({', '.join(cols)})")
                for f in obj.fields.values():
                    if f.unique or f.external_id or f.type == "reference":
                        # Partial: lookups are by value (=, IN), never IS NULL, and rows that
                        # leave the field empty then cost an insert nothing in this index.
                        self.conn.execute(
                            f"CREATE INDEX IF NOT EXISTS {_q(f'ix_{obj.name}_{f.name}')} "
                            f"ON {_q(obj.name)} ({_q(f.name)}) WHERE {_q(f.name)} IS NOT NULL"
                        )

    def reset(self) -> None:
        """Delete every record and restart the id serials."""
        with self.lock:
            self.conn.execute("BEGIN")
            for obj in self.schema.objects.values():
                self.conn.execute(f"DELETE FROM {_q(obj.name)}")
            self.conn.execute("DELETE FROM _serial")
            self.conn.execute("COMMIT")
            self._seed()

    def _seed(self) -> None:
        """Insert the org's seed records (schema `records:`), in schema order so lookups resolve."""
        for obj in self.schema.objects.values():
            if not obj.seed_records:
                continue
            results = self.write("insert", obj, obj.seed_records)
            bad = [r for r in results if not r.success]
            if bad:
                raise ValueError(f"seed records of {obj.name} do not load: {bad[0]}")

    def _reserve_ids(self, obj: ObjectDef, count: int) -> Iterable[str]:
        row = self.conn.execute("SELECT next FROM _serial WHERE sobject = ?", (obj.name,)).fetchone()
        start = row[0] if row else 1
        self.conn.execute(
            "INSERT INTO _serial (sobject, next) VALUES (?, ?) ON CONFLICT(sobject) DO UPDATE SET next = excluded.next",
            (obj.name, start + count),
        )
        return make_ids(obj.key_prefix, start, count)

    # ------------------------------------------------------------------ reads

    def get(self, obj: ObjectDef, record_id: str) -> dict[str, Any] | None:
        """The stored values of one record (deleted ones included), or None."""
        with self.lock:
            cur = self.conn.execute(f"SELECT * FROM {_q(obj.name)} WHERE Id = ?", (record_id,))
            row = cur.fetchone()
            if row is None:
                return None
            return dict(zip([d[0] for d in cur.description], row, strict=True))

    def find_by(self, obj: ObjectDef, f: FieldDef, value: Any) -> list[str]:
        """Ids of the live records whose field `f` equals `value`."""
        with self.lock:
            rows = self.conn.execute(
                f"SELECT Id FROM {_q(obj.name)} WHERE {_q(f.name)} = ? AND IsDeleted = 0", (value,)
            ).fetchall()
        return [r[0] for r in rows]

    def export(self, obj: ObjectDef, include_deleted: bool = True) -> list[dict[str, Any]]:
        """Every record of an object as JSON values, in creation order."""
        with self.lock:
            where = "" if include_deleted else " WHERE IsDeleted = 0"
            cur = self.conn.execute(f"SELECT * FROM {_q(obj.name)}{where} ORDER BY rowid")
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
        fields = [obj.fields[n] for n in names]
        return [{f.name: json_value(f, v) for f, v in zip(fields, row, strict=True)} for row in rows]

    def count(self, obj: ObjectDef) -> int:
        with self.lock:
            return self.conn.execute(f"SELECT COUNT(*) FROM {_q(obj.name)} WHERE IsDeleted = 0").fetchone()[0]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

    # ------------------------------------------------------------------ writes

    def _plan_columns(self, op: Operation, obj: ObjectDef, keys: Iterable[str]) -> list[_Column]:
        columns = []
        for key in keys:
            if "." in key:
                rel_name, ext_name = key.split(".", 1)
                ref = obj.relationship(rel_name)
                if ref is None:
                    raise RequestError("INVALID_FIELD", f"No such column '{rel_name}' on sobject of type {obj.name}")
                parent = self.schema.objects[ref.reference_to[0]]
                parent_field = parent.field(ext_name)
                if parent_field is None or not parent_field.id_lookup:
                    raise RequestError(
                        "INVALID_FIELD",
                        f"Field name provided, {ext_name} is not an External ID or indexed field for {parent.name}",
                    )
                columns.append(_Column(key, ref, converter(parent_field), parent, parent_field))
                continue
            f = obj.field(key)
            if f is None:
                raise RequestError("INVALID_FIELD", f"No such column '{key}' on sobject of type {obj.name}")
            columns.append(_Column(key, f, converter(f)))
        return columns

    def write(
        self,
        op: Operation,
        obj: ObjectDef,
        rows: Sequence[dict[str, Any]] | Columns,
        *,
        external_id: str | None = None,
        csv: bool = False,
        all_or_none: bool = False,
    ) -> Sequence[RowResult]:
        """Apply one operation to a batch of rows and return one result per row, in input order.

        `rows` map field names, or relationship paths such as ``Account.Legacy_Id__c``, to values:
        strings when `csv` (where an empty cell is "no value" and ``#N/A`` is null), JSON values
        otherwise. A `Columns` batch carries the same cells column by column (Bulk API 2.0 hands
        over its CSV chunks so); its results come back as `WriteResults`, whose lists a bulk job
        reads without a RowResult per row. Row dicts get a list of RowResult, as always.
        """
        batch = self._write_batches([(op, obj, rows, external_id)], csv=csv, all_or_none=all_or_none)[0]
        return batch if isinstance(rows, Columns) else list(batch)

    def write_groups(
        self,
        groups: Sequence[tuple[Operation, ObjectDef, Sequence[dict[str, Any]], str | None]],
        *,
        csv: bool = False,
        all_or_none: bool = False,
    ) -> list[RowResult]:
        """Several `write` batches in one transaction, as an sObject Collection of mixed types needs."""
        return [r for batch in self._write_batches(groups, csv=csv, all_or_none=all_or_none) for r in batch]

    def _write_batches(
        self,
        groups: Sequence[tuple[Operation, ObjectDef, Sequence[dict[str, Any]] | Columns, str | None]],
        *,
        csv: bool,
        all_or_none: bool,
    ) -> list[WriteResults]:
        plans = [
            (op, obj, rows, self._external_field(op, obj, external_id), self._plan_for(op, obj, rows))
            for op, obj, rows, external_id in groups
        ]
        with self.lock:
            self.conn.execute("BEGIN")
            try:
                batches = [
                    self._write(op, obj, rows, columns, ext_field, csv) for op, obj, rows, ext_field, columns in plans
                ]
                if all_or_none and any(batch.errors for batch in batches):
                    self.conn.execute("ROLLBACK")
                    return [WriteResults.of([_rolled_back(r) for r in batch]) for batch in batches]
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        return batches

    def _external_field(self, op: Operation, obj: ObjectDef, external_id: str | None) -> FieldDef | None:
        if op != "upsert":
            return None
        ext_field = obj.field(external_id or "")
        if ext_field is None or not (ext_field.external_id or ext_field.name == "Id"):
            raise RequestError(
                "NOT_FOUND" if ext_field is None else "INVALID_FIELD",
                f"Provided external ID field does not exist or is not accessible: {external_id}"
                if ext_field is None
                else f"Field name provided, {ext_field.name} is not an External ID or indexed field for {obj.name}",
                404 if ext_field is None else 400,
            )
        return ext_field

    def _plan_for(self, op: Operation, obj: ObjectDef, rows: Sequence[dict[str, Any]] | Columns) -> list[_Column]:
        # Every key of every row, in order of first appearance (chain keeps the loop in C).
        keys: dict[str, None] = dict.fromkeys(rows.keys if isinstance(rows, Columns) else chain.from_iterable(rows))
        if op in {"delete", "hardDelete"}:
            # Only the Id matters for a delete; other columns are ignored, as Salesforce does.
            keys = {k: None for k in keys if k.lower() == "id"}
        return self._plan_columns(op, obj, keys)

    def _write(
        self,
        op: Operation,
        obj: ObjectDef,
        rows: Sequence[dict[str, Any]] | Columns,
        columns: list[_Column],
        ext_field: FieldDef | None,
        csv: bool,
    ) -> WriteResults:
        converted = self._convert_columns(op, rows, columns, csv)
        stamp = now_stamp()
        if op == "insert" or op == "upsert" and ext_field is not None and ext_field.name != "Id":
            fast = self._insert_columns(obj, converted, stamp, ext_field)
            if fast is not None:
                return fast
        prepared = converted.rows()
        self._resolve_references(obj, prepared)
        if op == "insert":
            self._insert(obj, prepared, stamp)
        elif op == "update":
            self._bind_ids(obj, prepared)
            self._update(obj, prepared, stamp)
        elif op == "upsert":
            assert ext_field is not None
            inserts, updates = self._match_upsert(obj, prepared, ext_field)
            self._update(obj, updates, stamp)
            self._insert(obj, inserts, stamp)
        else:
            self._bind_ids(obj, prepared)
            self._delete(obj, prepared, stamp, hard=op == "hardDelete")
        errors = {row.index: row.errors[0] for row in prepared if row.errors}
        ids = [row.id for row in prepared]
        if op == "insert":
            for i in errors:
                ids[i] = None
        return WriteResults(ids, [row.key == "created" for row in prepared], errors)

    def _convert_columns(
        self, op: Operation, rows: Sequence[dict[str, Any]] | Columns, columns: list[_Column], csv: bool
    ) -> _Converted:
        """Convert every row, one column at a time.

        Column by column, the common case (every row has a value, every value converts) runs
        as one `map` over the column; a column with gaps, nulls or a bad value falls back to
        the value-by-value rules below. Errors still reach each row in column order.
        """
        count = len(rows)
        if isinstance(rows, Columns):
            # A CSV batch has every cell: no row leaves a key out.
            by_key = dict(zip(rows.keys, rows.values, strict=True))
            complete = True
        else:
            complete = False
        errors: dict[int, list[RowError]] = {}
        row_ids: list[str | None] = [None] * count
        refs: list[dict[str, tuple[ObjectDef, FieldDef, Any]]] | None = None
        names: list[str] = []
        converted: list[Sequence[Any]] = []
        sparse = False
        gappy: set[str] = set()
        for key, name, kind, strip, convert, column, col in _convert_steps(op, columns):
            raw: Sequence[Any] = by_key[key] if complete else [r.get(key, _UNSET) for r in rows]
            if (
                csv
                and kind is not _READ_ONLY
                and (complete or _UNSET not in raw)
                and all(raw)  # no empty cell ("" is the only falsy string)
                and CSV_NULL not in raw
            ):
                # Dense CSV column: every cell is a non-empty string.
                values = list(map(str.strip, raw)) if strip else raw
                if kind is _ID:
                    ids = list(map(to_18, values))
                    for i, (norm, value) in enumerate(zip(ids, values, strict=True)):
                        if norm is None:
                            errors.setdefault(i, []).append(RowError("MALFORMED_ID", f"malformed id {value}", []))
                        row_ids[i] = norm
                    continue
                out = column(values)
                if out is not None:
                    if kind is _RELATIONSHIP:
                        assert col.parent is not None and col.parent_field is not None
                        refs = refs if refs is not None else [{} for _ in range(count)]
                        for row_refs, stored in zip(refs, out, strict=True):
                            row_refs[name] = (col.parent, col.parent_field, stored)
                    else:
                        names.append(name)
                        converted.append(out)
                    continue
            # Value by value, as Salesforce reads each cell.
            out = [_UNSET] * count
            for i, value in enumerate(raw):
                if value is _UNSET:
                    continue
                if csv:
                    if value == "":
                        continue
                    if value == CSV_NULL:
                        value = None
                if strip and isinstance(value, str):
                    value = value.strip()
                    if value == "" and not csv:
                        value = None
                if kind is _ID:
                    if value is None:
                        continue
                    norm = to_18(value) if isinstance(value, str) else None
                    if norm is None:
                        errors.setdefault(i, []).append(RowError("MALFORMED_ID", f"malformed id {value}", []))
                    row_ids[i] = norm
                    continue
                if kind is _READ_ONLY and value is not None:
                    errors.setdefault(i, []).append(_not_writable(col.field))
                    continue
                if value is None:
                    out[i] = None
                    continue
                try:
                    stored = convert(value)
                except FieldValueError as exc:
                    errors.setdefault(i, []).append(RowError(exc.status_code, exc.message, exc.fields))
                    continue
                if kind is _RELATIONSHIP:
                    assert col.parent is not None and col.parent_field is not None
                    refs = refs if refs is not None else [{} for _ in range(count)]
                    refs[i][name] = (col.parent, col.parent_field, stored)
                else:
                    out[i] = stored
            if kind is not _ID:
                if kind is _RELATIONSHIP:
                    # A null relationship value clears the reference field itself.
                    out = [None if v is None else _UNSET for v in out]
                names.append(name)
                converted.append(out)
                gappy.add(name)
                sparse = sparse or _UNSET in out
        return _Converted(count, names, converted, errors, row_ids, refs, sparse, gappy)

    def _insert_columns(
        self, obj: ObjectDef, batch: _Converted, stamp: str, ext: FieldDef | None
    ) -> WriteResults | None:
        """Insert a converted batch column by column when no row can fail; None when one might.

        A shortcut over `_insert` (and over an upsert whose rows all create records), never a
        second set of rules: each condition below is one under which the row path's check adds
        no error (no conversion error, no reference to resolve, every required field set, no
        unique or external id value held twice or by a live record). On None the caller runs the
        row path, which then reports each error; nothing has been written or reserved by then.
        Lock faults are drawn per row in row order, exactly as `_lock_faults` draws them.
        """
        names = batch.names
        if batch.errors or batch.refs is not None or len(set(names)) != len(names):
            return None
        fields = obj.fields
        if any(fields[n].type == "reference" for n in names):
            return None  # reference ids are checked against their targets row by row
        by_name = dict(zip(names, batch.columns, strict=True))
        gappy = batch.gappy

        def has_gaps(name: str) -> bool:
            return name in gappy and (None in by_name[name] or _UNSET in by_name[name])

        for f in _required(obj):
            if f.name not in by_name or has_gaps(f.name):
                return None
        if ext is not None:
            # Upsert: every row must name a new record (see _match_upsert).
            if ext.name not in by_name or has_gaps(ext.name):
                return None
            keys = by_name[ext.name]
            if _has_duplicates(ext, keys) or any(self._live_holders(obj, ext, keys).values()):
                return None
        for f in obj.unique_fields:
            column = by_name.get(f.name)
            if column is None or ext is not None and f.name == ext.name:
                continue  # an upsert's external id values were just found new and distinct
            if has_gaps(f.name):
                column = [v for v in column if v is not None and v is not _UNSET]
            if column and (_has_duplicates(f, column) or any(self._live_holders(obj, f, column).values())):
                return None
        count = batch.count
        reserved = list(self._reserve_ids(obj, count))
        faulted = self._draw_lock_faults(count)
        present = {n for n, column in by_name.items() if n not in gappy or any(v is not _UNSET for v in column)}
        insert = self._insert_statement(obj, present)
        params: list[Sequence[Any]] = [reserved]
        for name in insert.names:
            column = by_name[name]
            if has_gaps(name):
                if name in insert.booleans:
                    column = [0 if v is _UNSET or not v else v for v in column]
                else:
                    column = [None if v is _UNSET else v for v in column]
            params.append(column)
        ids: list[str | None] = reserved
        errors: dict[int, RowError] = {}
        created = [True] * count
        if faulted:
            ids = list(reserved)
            for i in faulted:
                errors[i] = _lock_error(reserved[i])
                created[i] = False
                if ext is None:  # a failed insert row has no id; an upsert row keeps the reserved one
                    ids[i] = None
            keep = [i for i in range(count) if i not in errors]
            params = [[column[i] for i in keep] for column in params]
        insert.run(self.conn, stamp, params)
        return WriteResults(ids, created, errors)

    def _lookup(self, obj: ObjectDef, f: FieldDef, values: Iterable[Any]) -> dict[Any, list[tuple[str, bool]]]:
        """Map each value of field `f` to the (Id, deleted) of the records that hold it.

        Text keys are folded to lower case because the columns compare NOCASE.
        """
        found: dict[Any, list[tuple[str, bool]]] = {}
        distinct = list(dict.fromkeys(values))
        for part in _chunks(distinct):
            marks = ",".join("?" * len(part))
            sql = f"SELECT {_q(f.name)}, Id, IsDeleted FROM {_q(obj.name)} WHERE {_q(f.name)} IN ({marks})"
            for value, rid, deleted in self.conn.execute(sql, list(part)):
                found.setdefault(_fold(value), []).append((rid, bool(deleted)))
        return found

    def _resolve_references(self, obj: ObjectDef, rows: list[_Row]) -> None:
        """Turn relationship values and reference ids into parent ids, or row errors."""
        # Relationship columns: parent external id -> parent Id.
        wanted: dict[tuple[str, str], set[Any]] = {}
        for row in rows:
            for parent, pf, value in row.refs.values():
                wanted.setdefault((parent.name, pf.name), set()).add(value)
        found = {
            key: self._lookup(self.schema.objects[key[0]], self.schema.objects[key[0]].fields[key[1]], vals)
            for key, vals in wanted.items()
        }
        # Plain reference fields given as ids: the target must exist and be live.
        ref_fields = {f.name: f for f in obj.fields.values() if f.type == "reference"}
        # The reference fields the rows carry, in column order (rows share it): rows are not
        # walked field by field when there are none.
        carried = [n for n in dict.fromkeys(chain.from_iterable(r.values for r in rows)) if n in ref_fields]
        by_target: dict[str, set[str]] = {}
        for row in rows:
            for name in carried:
                value = row.values.get(name)
                if value is not None:
                    target = self.schema.by_prefix(value)
                    if target is not None:
                        by_target.setdefault(target.name, set()).add(value)
        live: dict[str, tuple[str, bool]] = {}
        for target_name, values in by_target.items():
            for part in _chunks(list(values)):
                marks = ",".join("?" * len(part))
                for rid, deleted in self.conn.execute(
                    f"SELECT Id, IsDeleted FROM {_q(target_name)} WHERE Id IN ({marks})", list(part)
                ):
                    live[rid] = (target_name, bool(deleted))
        for row in rows:
            if row.errors:
                continue
            for fname, (parent, pf, value) in row.refs.items():
                matches = [m for m in found[(parent.name, pf.name)].get(_fold(value), []) if not m[1]]
                if not matches:
                    row.errors.append(
                        RowError(
                            "INVALID_FIELD",
                            f"Foreign key external ID: {value} not found for field {pf.name} in entity {parent.name}",
                            [],
                        )
                    )
                elif len(matches) > 1:
                    row.errors.append(
                        RowError(
                            "DUPLICATE_EXTERNAL_ID",
                            f"{pf.name}: more than one record found for external id field: {[m[0] for m in matches]}",
                            [pf.name],
                        )
                    )
                else:
                    row.values[fname] = matches[0][0]
            for name in carried:
                f = ref_fields[name]
                value = row.values.get(name)
                if value is None or name in row.refs:
                    continue
                hit = live.get(value)
                target_ok = hit is not None and hit[0] in f.reference_to
                if hit is not None and not target_ok:
                    row.errors.append(
                        RowError("FIELD_INTEGRITY_EXCEPTION", f"{f.label}: id value of incorrect type: {value}", [name])
                    )
                elif hit is None:
                    row.errors.append(RowError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [name]))
                elif hit[1]:
                    row.errors.append(RowError("ENTITY_IS_DELETED", "entity is deleted", [name]))

    def _bind_ids(self, obj: ObjectDef, rows: list[_Row]) -> None:
        """Check that each update or delete row names a live record of this object."""
        ids = [r.id for r in rows if r.id and not r.errors]
        state: dict[str, bool] = {}
        for part in _chunks(ids):
            marks = ",".join("?" * len(part))
            for rid, deleted in self.conn.execute(
                f"SELECT Id, IsDeleted FROM {_q(obj.name)} WHERE Id IN ({marks})", list(part)
            ):
                state[rid] = bool(deleted)
        for row in rows:
            if row.errors:
                continue
            if row.id is None:
                row.errors.append(RowError("MISSING_ARGUMENT", "Id not specified in an update call", []))
            elif row.id not in state:
                target = self.schema.by_prefix(row.id)
                if target is not None and target.name != obj.name:
                    row.errors.append(
                        RowError("INVALID_ID_FIELD", f"Invalid id value for this SObject type: {row.id}", ["Id"])
                    )
                else:
                    row.errors.append(RowError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", []))
            elif state[row.id]:
                row.errors.append(RowError("ENTITY_IS_DELETED", "entity is deleted", []))

    def _match_upsert(self, obj: ObjectDef, rows: list[_Row], ext: FieldDef) -> tuple[list[_Row], list[_Row]]:
        if ext.name == "Id":
            existing_ids = [r for r in rows if not r.errors and r.id]
            self._bind_ids(obj, existing_ids)
            inserts = [r for r in rows if not r.errors and not r.id]
            return inserts, [r for r in rows if r.id]
        keyed: dict[Any, list[_Row]] = {}
        for row in rows:
            if row.errors:
                continue
            value = row.values.get(ext.name)
            if value is None:
                row.errors.append(RowError("MISSING_ARGUMENT", f"{ext.name} not specified", [ext.name]))
                continue
            keyed.setdefault(_fold(value), []).append(row)
        existing = self._lookup(obj, ext, [rs[0].values[ext.name] for rs in keyed.values()])
        inserts, updates = [], []
        for key, group in keyed.items():
            if len(group) > 1:
                for row in group:
                    row.errors.append(
                        RowError(
                            "DUPLICATE_EXTERNAL_ID",
                            f"Duplicate external id specified: {row.values[ext.name]}",
                            [ext.name],
                        )
                    )
                continue
            row = group[0]
            matches = [rid for rid, deleted in existing.get(key, []) if not deleted]
            if len(matches) > 1:
                row.errors.append(
                    RowError(
                        "DUPLICATE_EXTERNAL_ID",
                        f"{ext.name}: more than one record found for external id field: {matches}",
                        [ext.name],
                    )
                )
            elif matches:
                row.id = matches[0]
                updates.append(row)
            else:
                inserts.append(row)
        return inserts, updates

    def _live_holders(self, obj: ObjectDef, f: FieldDef, values: Iterable[Any]) -> dict[Any, list[str]]:
        """Map each (folded) value of field `f` to the ids of the live records that hold it."""
        return {k: [rid for rid, deleted in v if not deleted] for k, v in self._lookup(obj, f, values).items()}

    def _check_unique(self, obj: ObjectDef, rows: list[_Row]) -> None:
        """DUPLICATE_VALUE for a unique value held by another live record or an earlier row."""
        for f in obj.unique_fields:
            values = [r.values[f.name] for r in rows if not r.errors and r.values.get(f.name) is not None]
            if not values:
                continue
            holders = self._live_holders(obj, f, values)
            for row in rows:
                value = row.values.get(f.name)
                if row.errors or value is None:
                    continue
                key = _fold(value)
                others = [rid for rid in holders.get(key, []) if rid != row.id]
                if others:
                    row.errors.append(
                        RowError(
                            "DUPLICATE_VALUE",
                            f"duplicate value found: {f.name} duplicates value on record with id: {others[0]}",
                            [f.name],
                        )
                    )
                else:
                    holders.setdefault(key, []).append(row.id or "")

    def _draw_lock_faults(self, count: int) -> list[int]:
        """Which of `count` otherwise valid rows fail with UNABLE_TO_LOCK_ROW: one draw per row, in order."""
        if self.lock_row_rate <= 0:
            return []
        rate, draw = self.lock_row_rate, self.rng.random
        return [i for i in range(count) if draw() < rate]

    def _lock_faults(self, rows: list[_Row]) -> None:
        valid = [row for row in rows if not row.errors]
        for i in self._draw_lock_faults(len(valid)):
            valid[i].errors.append(_lock_error(valid[i].id))

    def _insert(self, obj: ObjectDef, rows: list[_Row], stamp: str) -> None:
        required = _required(obj)
        for row in rows:
            if row.errors:
                continue
            missing = [f.name for f in required if row.values.get(f.name) is None]
            if missing:
                row.errors.append(
                    RowError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]", missing)
                )
        # Ids are reserved before the unique check so that a duplicate within the batch can name
        # the record it collides with; Salesforce ids are not contiguous either.
        candidates = [r for r in rows if not r.errors]
        for row, rid in zip(candidates, self._reserve_ids(obj, len(candidates)), strict=True):
            row.id = rid
        self._check_unique(obj, rows)
        self._lock_faults(rows)
        ok = [r for r in rows if not r.errors]
        if not ok:
            return
        for row in ok:
            row.key = "created"
        insert = self._insert_statement(obj, set(chain.from_iterable(r.values for r in ok)))
        names = insert.names
        bool_at = [i for i, n in enumerate(names) if n in insert.booleans]
        pick = itemgetter(*names) if len(names) > 1 else None
        params = []
        for row in ok:
            values = row.values
            try:
                picked = list(pick(values)) if pick is not None and len(values) == len(names) else None
            except KeyError:  # as many keys but other ones (a system column set to null)
                picked = None
            if picked is None:
                picked = [values.get(n) for n in names]
            for i in bool_at:
                if not picked[i]:
                    picked[i] = 0
            params.append((row.id, *picked))
        insert.run(self.conn, stamp, list(zip(*params, strict=True)))

    def _insert_statement(self, obj: ObjectDef, present: set[str]) -> _Insert:
        key = (obj.name, frozenset(present))
        insert = self._inserts.get(key)
        if insert is None:
            max_params = self.conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            insert = self._inserts[key] = _Insert(obj, present, max_params)
        return insert

    def _update(self, obj: ObjectDef, rows: list[_Row], stamp: str) -> None:
        for row in rows:
            if row.errors:
                continue
            for name, value in row.values.items():
                f = obj.fields[name]
                if value is not None and not f.updateable:
                    row.errors.append(_not_writable(f))
                    break
                if value is None and f.required and f.type != "boolean":
                    row.errors.append(
                        RowError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{name}]", [name])
                    )
                    break
        self._check_unique(obj, rows)
        self._lock_faults(rows)
        groups: dict[tuple[str, ...], list[list[Any]]] = {}
        for row in rows:
            if row.errors:
                continue
            row.key = "updated"
            names = tuple(row.values)
            values = [(v or 0) if obj.fields[n].type == "boolean" else v for n, v in row.values.items()]
            groups.setdefault(names, []).append([*values, stamp, stamp, row.id])
        for names, params in groups.items():
            sets = ", ".join(f"{_q(n)} = ?" for n in (*names, "LastModifiedDate", "SystemModstamp"))
            self.conn.executemany(f"UPDATE {_q(obj.name)} SET {sets} WHERE Id = ?", params)

    def _delete(self, obj: ObjectDef, rows: list[_Row], stamp: str, *, hard: bool) -> None:
        self._lock_faults(rows)
        ids = [r.id for r in rows if not r.errors]
        for row in rows:
            if not row.errors:
                row.key = "deleted"
        for part in _chunks(ids):
            marks = ",".join("?" * len(part))
            if hard:
                self.conn.execute(f"DELETE FROM {_q(obj.name)} WHERE Id IN ({marks})", list(part))
            else:
                self.conn.execute(
                    f"UPDATE {_q(obj.name)} SET IsDeleted = 1, SystemModstamp = ? WHERE Id IN ({marks})",
                    [stamp, *part],
                )
            # Deleting a parent clears the lookups that point at it, as Salesforce does for lookups.
            for child in self.schema.objects.values():
                for f in child.fields.values():
                    if f.type == "reference" and obj.name in f.reference_to:
                        self.conn.execute(
                            f"UPDATE {_q(child.name)} SET {_q(f.name)} = NULL WHERE {_q(f.name)} IN ({marks})",
                            list(part),
                        )

    def undelete(self, obj: ObjectDef, ids: Sequence[str]) -> None:
        with self.lock:
            for part in _chunks(list(ids)):
                marks = ",".join("?" * len(part))
                self.conn.execute(f"UPDATE {_q(obj.name)} SET IsDeleted = 0 WHERE Id IN ({marks})", list(part))


# System columns an insert sets itself, in the order its VALUES lists them.
_INSERT_SYSTEM = ("Id", "IsDeleted", "CreatedDate", "LastModifiedDate", "SystemModstamp")
# Rows per multi-row INSERT statement (fewer when the row has many bound columns).
_INSERT_BLOCK = 256


class _Insert:
    """The INSERT of rows that set a given set of fields, run a block of rows per statement.

    A multi-row ``VALUES`` statement runs about a third faster than ``executemany`` of a
    one-row statement (one statement step per block, not per row), and its parameters are
    laid out with slice assignments, without a tuple per row. The stamp is bound once per
    statement (``?1``), so the SQL is the same for every chunk and sqlite3 reuses it prepared.
    Rows keep their order: a ``VALUES`` list inserts its rows in turn.
    """

    def __init__(self, obj: ObjectDef, present: set[str], max_params: int) -> None:
        # Only the columns some row sets are bound; the others default to NULL, or to 0 for a
        # boolean (never null). Binding None is slow in sqlite3: it goes through adaptation.
        data = [f for f in obj.fields.values() if f.name in present and f.name not in _INSERT_SYSTEM]
        unset_booleans = [
            f.name
            for f in obj.fields.values()
            if f.type == "boolean" and f.name not in present and f.name not in _INSERT_SYSTEM
        ]
        self.names = [f.name for f in data]  # bound after the Id, in this order
        self.booleans = {f.name for f in data if f.type == "boolean"}  # bound as 0 when null
        self.width = 1 + len(self.names)
        self.block = max(1, min(_INSERT_BLOCK, (max_params - 1) // self.width))
        cols = ",".join(_q(n) for n in (*_INSERT_SYSTEM, *self.names, *unset_booleans))
        head = f"INSERT INTO {_q(obj.name)} ({cols}) VALUES "

        def row(first: int) -> str:
            # ?1 is the stamp; this row's values are ?first .. ?first + width - 1.
            values = [f"?{first}", "0", "?1", "?1", "?1"]
            values += [f"?{first + i}" for i in range(1, self.width)]
            values += ["0"] * len(unset_booleans)
            return "(" + ",".join(values) + ")"

        self.one_sql = head + row(2)
        self.block_sql = head + ",".join(row(2 + k * self.width) for k in range(self.block))

    def run(self, conn: sqlite3.Connection, stamp: str, columns: Sequence[Sequence[Any]]) -> None:
        """Insert the rows whose values `columns` hold: the Id column, then one per name."""
        width, block = self.width, self.block
        count = len(columns[0])
        full = count - count % block
        if full:
            flat: list[Any] = [stamp] * (1 + block * width)
            for start in range(0, full, block):
                for j, column in enumerate(columns):
                    flat[1 + j :: width] = column[start : start + block]
                conn.execute(self.block_sql, flat)
        if full < count:
            conn.executemany(self.one_sql, zip(repeat(stamp), *(c[full:] for c in columns), strict=False))


def _required(obj: ObjectDef) -> list[FieldDef]:
    """The fields an insert must set (a boolean is never null, so never missing)."""
    return [f for f in obj.data_fields if f.required and f.type != "boolean"]


def _has_duplicates(f: FieldDef, values: Sequence[Any]) -> bool:
    """Whether two of `values` are the same unique or external id value (text compares folded)."""
    folded = map(str.lower, values) if f.type in TEXT_TYPES else map(_fold, values)
    return len(set(folded)) != len(values)


def _lock_error(record_id: str | None) -> RowError:
    return RowError(
        "UNABLE_TO_LOCK_ROW",
        f"unable to obtain exclusive access to this record or 1 records: {record_id or ''}".rstrip(),
        [],
    )


# What `_convert_columns` does with a column, decided once per batch.
_PLAIN, _ID, _READ_ONLY, _RELATIONSHIP = "plain", "id", "read-only", "relationship"


def _convert_steps(
    op: Operation, columns: list[_Column]
) -> list[tuple[str, str, str, bool, Callable[[Any], Any], Callable[[list[str]], list[Any] | None], _Column]]:
    steps = []
    for col in columns:
        f = col.field
        if f.name == "Id":
            kind = _ID
        elif op in {"delete", "hardDelete"}:
            continue  # a delete reads nothing but the Id
        elif f.system or (op == "insert" and not f.createable):
            kind = _READ_ONLY
        elif col.parent is not None:
            kind = _RELATIONSHIP
        else:
            kind = _PLAIN
        column = column_converter(col.parent_field if col.parent_field is not None else f)
        steps.append((col.key, f.name, kind, f.type not in {"string", "textarea"}, col.convert, column, col))
    return steps


def _fold(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _not_writable(f: FieldDef) -> RowError:
    return RowError(
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        f"Unable to create/update fields: {f.name}. Please check the security settings of this field "
        "and verify that it is read/write for your profile or permission set.",
        [f.name],
    )


def _rolled_back(result: RowResult) -> RowResult:
    if not result.success:
        return RowResult(id=None, errors=result.errors)
    return RowResult(
        id=None,
        errors=[
            RowError(
                "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                "Record rolled back because not all records were valid and the request was using AllOrNone header",
            )
        ],
    )
