"""Extract: stream the source in chunks into the stage; XCom gets only chunk references."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import Context

from dms.errors import FatalError
from dms.operators.base import DmsOperator, resolve_data_path, tune_memory

# A lookup's map is staged as one JSON document and read by every transform.
MAX_LOOKUP_RECORDS = 200_000

if TYPE_CHECKING:
    from dms.sources import SourceChunk, SourceContext
    from dms.staging import ChunkKey


class ExtractOperator(DmsOperator):
    """Read one object's source chunk by chunk and stage each raw chunk in Redis.

    Memory is bounded by `chunk_rows`: one chunk is read, staged and released before the
    next. The target's describe is staged too, so the mapped transforms validate against
    the org without each calling Salesforce.
    """

    def execute(self, context: Context) -> list[dict[str, Any]]:
        tune_memory(system_pool=False)
        from dms.hooks.salesforce import DmsSalesforceHook
        from dms.sources import SourceContext, iter_chunks
        from dms.spec import FILE_SOURCES
        from dms.transform import describe_subset

        obj = self.obj
        chunk_rows = int(self.param(context, "chunk_rows", self.spec.chunk_rows))
        dag_id, run_id = self.run_ids(context)
        stage = self.stage()
        if self.param(context, "full_refresh", False):
            removed = stage.clear_run(dag_id, run_id, obj.name)
            # The audit store mirrors the ledgers for when Redis loses them; a new epoch makes the
            # loads disregard that mirror, and the chunks' final records, of the epoch before.
            epoch = self.audit().new_epoch(dag_id, run_id, obj.name)
            self.log.info(
                "full_refresh: removed %s staged keys of %s in this run; load epoch %s", removed, obj.name, epoch
            )
        else:
            epoch = self.audit().get_epoch(dag_id, run_id, obj.name)
        stage.put_epoch(dag_id, run_id, obj.name, epoch)
        sf = DmsSalesforceHook(salesforce_conn_id=self.spec.connections.salesforce).get_conn()
        describe = sf.restful(f"sobjects/{obj.sobject}/describe")
        stage.put_json(f"{dag_id}:{run_id}:{obj.name}:describe", describe_subset(describe))
        stage.put_json(f"{dag_id}:{run_id}:{obj.name}:lookups", self._lookups(sf))
        stage.put_json(f"{dag_id}:{run_id}:{obj.name}:value_maps", self._value_maps())

        source = obj.source
        start, end = context.get("data_interval_start"), context.get("data_interval_end")
        if not (start and end and start < end) or self.param(context, "full_refresh", False):
            # A manual run of an unscheduled DAG has no interval (or an empty one), and a full
            # refresh asks for everything: read the whole source, not one interval's changes.
            start = end = None
        where = SourceContext(
            path=self._source_path(context) if isinstance(source, FILE_SOURCES) else None,
            interval_start=start,
            interval_end=end,
            salesforce_conn_id=self.spec.connections.salesforce,
        )
        retry_of = str(self.param(context, "retry_failed_from", "") or "").strip()
        wanted = self._rows_to_retry(dag_id, retry_of) if retry_of else None
        refs: list[dict[str, Any]] = []

        def put(key: ChunkKey, chunk: SourceChunk) -> None:
            stage.put_table(key, "raw", chunk.batch)
            stage.put_json(f"{key.redis_key('malformed')}", chunk.malformed_records())
            self.log.info("staged chunk %s of %s: %s rows", key.chunk, obj.name, chunk.rows)

        # Each chunk is compressed and sent on a second thread while the next one is parsed
        # (both release the GIL), one chunk in flight at most: memory stays at two chunks.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dms-stage") as staging:
            pending: Future[None] | None = None
            for index, chunk in enumerate(iter_chunks(source, chunk_rows, where)):
                if index == 0:
                    self._check_columns(chunk.batch.schema.names[1:], where)
                if wanted is not None:
                    chunk = _only_rows(chunk, wanted)
                if pending is not None:
                    pending.result()
                pending = staging.submit(put, self.chunk_key(context, index), chunk)
                refs.append({"object": obj.name, "chunk": index, "rows": chunk.rows})
            if pending is not None:
                pending.result()
        if not refs:
            # An empty source still reconciles: zero rows in, zero out.
            self.log.warning("%s: the source has no data rows", obj.name)
        return refs

    def _source_path(self, context: Context) -> Path:
        """The object's file: the `source_files` Param's path for it, else the spec's; inside the data root."""
        chosen = self.param(context, "source_files", {}) or {}
        if not isinstance(chosen, dict):
            raise FatalError(f"Param source_files: expected an object of object name -> path, not {chosen!r}")
        unknown = sorted(set(chosen) - {o.name for o in self.spec.objects})
        if unknown:
            raise FatalError(f"Param source_files: no object named {unknown} in the spec {self.spec_file}")
        if self.obj.name not in chosen:
            return resolve_data_path(self.obj.source.path)
        relative = str(chosen[self.obj.name]).strip()
        try:
            return resolve_data_path(relative)
        except FatalError as exc:
            raise FatalError(f"Param source_files.{self.obj.name}: {exc}") from None

    def _check_columns(self, columns: list[str], where: SourceContext) -> None:
        """Fail before anything is staged when the source lacks a column the spec reads.

        Every row would be rejected for the same reason, which only a change to the spec (or
        the right file) can fix. Columns the spec does not read are only logged.
        """
        present = set(columns)
        index = self.spec.objects.index(self.obj)
        at = f"objects[{index}] (name: {self.obj.name})"
        missing: dict[str, list[str]] = {}
        for name, field in self.obj.fields.items():
            key = "expr" if field.expr is not None else "source"
            for column in field.columns:
                if column not in present:
                    missing.setdefault(column, []).append(f"{at}.fields.{name}.{key}")
        if self.obj.key is not None and self.obj.key not in present:
            missing.setdefault(self.obj.key, []).append(f"{at}.key")
        source = where.path or f"the {self.obj.source.kind} source"
        if missing:
            listing = "; ".join(f"{column!r} (read by {', '.join(paths)})" for column, paths in missing.items())
            raise FatalError(
                f"{source}: missing column(s) {listing} of the spec {self.spec_file}; the source has the columns "
                f"{_cut(columns)}"
            )
        used = {c for f in self.obj.fields.values() for c in f.columns} | {self.obj.key}
        extra = [c for c in columns if c not in used]
        if extra:
            self.log.info("%s: %s column(s) the spec does not read, ignored: %s", source, len(extra), _cut(extra))

    def _lookups(self, sf: Any) -> dict[str, dict[str, Any]]:
        """For each `lookup` field, the existing records' Ids by matched value, queried once per run.

        Meant for small reference objects (Users, RecordTypes, Queues); values are lower-cased
        because SOQL compares text case-insensitively. A value more than one record has is
        listed as ambiguous, so its rows are rejected rather than linked to an arbitrary one.
        """
        out: dict[str, dict[str, Any]] = {}
        for name, field in self.obj.fields.items():
            lookup = field.lookup
            if lookup is None:
                continue
            soql = f"SELECT Id, {lookup.field} FROM {lookup.sobject}"
            if lookup.where:
                soql += f" WHERE {lookup.where}"
            ids: dict[str, str] = {}
            ambiguous: set[str] = set()
            count = 0
            for record in sf.query_all_iter(soql):
                value = record.get(lookup.field)
                if value in (None, ""):
                    continue
                count += 1
                if count > MAX_LOOKUP_RECORDS:
                    raise FatalError(
                        f"{self.obj.name}.{name}: the lookup on {lookup.sobject}.{lookup.field} matches more than "
                        f"{MAX_LOOKUP_RECORDS} records; narrow it with 'where', or load the parent by external id"
                    )
                key = str(value).strip().lower()
                if key in ids and ids[key] != record["Id"]:
                    ambiguous.add(key)
                ids[key] = record["Id"]
            out[name] = {"ids": ids, "ambiguous": sorted(ambiguous)}
            self.log.info("lookup %s: %s %s records by %s", name, len(ids), lookup.sobject, lookup.field)
        return out

    def _value_maps(self) -> dict[str, dict[str, str]]:
        """Each field's `value_map_file`, read once per run: {source value: target value}."""
        import csv

        out: dict[str, dict[str, str]] = {}
        for name, field in self.obj.fields.items():
            if field.value_map_file is None:
                continue
            path = resolve_data_path(field.value_map_file)
            mapping: dict[str, str] = {}
            with open(path, encoding="utf-8-sig", newline="") as handle:
                rows = csv.reader(handle)
                header = next(rows, None)
                for line, row in enumerate(rows, start=2):
                    if not row or not any(cell.strip() for cell in row):
                        continue
                    if len(row) != 2:
                        raise FatalError(
                            f"{field.value_map_file}: row {line} has {len(row)} columns; a value map has two "
                            f"(source value, target value) after the header {header}"
                        )
                    source, target = row[0].strip(), row[1].strip()
                    if source in mapping and mapping[source] != target:
                        raise FatalError(
                            f"{field.value_map_file}: row {line} maps {source!r} again, to {target!r} "
                            f"(before: {mapping[source]!r})"
                        )
                    mapping[source] = target
            out[name] = mapping
        return out

    def _rows_to_retry(self, dag_id: str, run_id: str) -> set[int]:
        """The source rows that run `run_id` rejected or failed to load, from its audit record."""
        from dms.row_results import read_attachment

        audit = self.audit()
        if audit.get_run(dag_id, run_id) is None:
            raise FatalError(f"retry_failed_from: no run {run_id!r} of {dag_id} in the audit store")
        rows: set[int] = set()
        for doc in audit.find_chunks(dag_id, run_id, [self.obj.name, f"{self.obj.name}.relink"]):
            for attachment in ("rejects.csv.gz", "failures.csv.gz"):
                if attachment in (doc.get("_attachments") or {}):
                    data = audit.get_attachment(doc["_id"], attachment)
                    rows.update(int(r["row"]) for r in read_attachment(data))
        self.log.info("retry_failed_from %s: %s rows of %s to retry", run_id, len(rows), self.obj.name)
        return rows


def _cut(names: list[str], shown: int = 20) -> str:
    """A column list for a message; a wide export's hundreds of columns are cut short."""
    return repr(names[:shown])[:-1] + (f", … ({len(names) - shown} more)]" if len(names) > shown else "]")


def _only_rows(chunk: SourceChunk, wanted: set[int]) -> SourceChunk:
    """The part of a chunk whose row numbers are in `wanted` (malformed rows included)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from dms.sources import SourceChunk

    mask = pc.is_in(chunk.batch.column(0), value_set=pa.array(sorted(wanted), type=pa.int64()))
    return SourceChunk(chunk.batch.filter(mask), [m for m in chunk.malformed if m.row in wanted])
