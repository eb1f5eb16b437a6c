"""Extract: stream the source in chunks into the stage; XCom gets only chunk references."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from airflow.sdk import Context

from dms.operators.base import DmsOperator, resolve_data_path

if TYPE_CHECKING:
    from dms.sources.csv import CsvChunk
    from dms.staging import ChunkKey


class ExtractOperator(DmsOperator):
    """Read one object's source chunk by chunk and stage each raw chunk in Redis.

    Memory is bounded by `chunk_rows`: one chunk is read, staged and released before the
    next. The target's describe is staged too, so the mapped transforms validate against
    the org without each calling Salesforce.
    """

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from dms.hooks.salesforce import DmsSalesforceHook
        from dms.sources.csv import iter_csv_chunks
        from dms.transform import describe_subset

        obj = self.obj
        chunk_rows = int(self.param(context, "chunk_rows", self.spec.chunk_rows))
        dag_id, run_id = self.run_ids(context)
        stage = self.stage()
        if self.param(context, "full_refresh", False):
            removed = stage.clear_run(dag_id, run_id)
            self.log.info("full_refresh: removed %s staged keys of this run", removed)
        sf = DmsSalesforceHook(salesforce_conn_id=self.spec.connections.salesforce).get_conn()
        describe = sf.restful(f"sobjects/{obj.sobject}/describe")
        stage.put_json(f"{dag_id}:{run_id}:{obj.name}:describe", describe_subset(describe))

        path = resolve_data_path(obj.source.path)
        refs: list[dict[str, Any]] = []

        def put(key: ChunkKey, chunk: CsvChunk) -> None:
            stage.put_table(key, "raw", chunk.batch)
            stage.put_json(f"{key.redis_key('malformed')}", chunk.malformed_records())
            self.log.info("staged chunk %s of %s: %s rows", key.chunk, obj.name, chunk.rows)

        # Each chunk is compressed and sent on a second thread while the next one is parsed
        # (both release the GIL), one chunk in flight at most: memory stays at two chunks.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dms-stage") as staging:
            pending: Future[None] | None = None
            for index, chunk in enumerate(iter_csv_chunks(path, obj.source, chunk_rows)):
                if pending is not None:
                    pending.result()
                pending = staging.submit(put, self.chunk_key(context, index), chunk)
                refs.append({"object": obj.name, "chunk": index, "rows": chunk.rows})
            if pending is not None:
                pending.result()
        if not refs:
            # An empty source still reconciles: zero rows in, zero out.
            self.log.warning("%s: the source %s has no data rows", obj.name, obj.source.path)
        return refs
