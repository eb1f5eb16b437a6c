"""The stage: chunks in Redis as Arrow IPC (zstd), and the load ledger.

Arrow IPC rather than pickle, because unpickling bytes from a shared cache runs code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dms.errors import FatalError

if TYPE_CHECKING:
    import pyarrow as pa
    import redis

DEFAULT_TTL_SECONDS = 3 * 24 * 3600


class StageMissingError(FatalError):
    """A staged chunk is gone (expired, or Redis lost its data): the step before must run again."""


def stage_missing_message(key: ChunkKey, kind: str, ttl_seconds: int) -> str:
    """What a task says when a chunk's staged table is gone: which one, why it may be, what to do.

    Staged data is never rebuilt inside a later step: that step would have to re-read the
    source up to this chunk. The run fails instead, and the remedy re-stages the whole object
    in order; the ledgers that went with the stage are mirrored in the audit store, so the
    re-run's loads skip what this run loaded already.
    """
    # Lock-retry and relink ledgers live under "<object>~..."; the task group is the object.
    obj = key.object_name.split("~", 1)[0]
    return (
        f"run {key.run_id} of {key.dag_id}: the staged {kind!r} table of chunk {key.chunk} of {obj} is missing "
        f"from Redis (Redis restarted or failed over without its data, evicted it, or the stage outlived its "
        f"{ttl_seconds // 3600} h TTL). To stage the source again, clear this run's task {obj}.extract together "
        "with its downstream tasks (the chunks it loaded already are not sent again), or trigger a new run (which "
        "loads every row again)."
    )


@dataclass(frozen=True)
class ChunkKey:
    """Where one chunk of one object of one run lives."""

    dag_id: str
    run_id: str
    object_name: str
    chunk: int

    def redis_key(self, kind: str) -> str:
        return f"dms:stage:{self.dag_id}:{self.run_id}:{self.object_name}:{kind}:{self.chunk:06d}"

    @property
    def ledger_key(self) -> str:
        return f"dms:ledger:{self.dag_id}:{self.run_id}:{self.object_name}:{self.chunk:06d}"


class Stage:
    """Put and get Arrow tables and small JSON documents under a run's keys."""

    def __init__(self, client: redis.Redis, ttl_seconds: int = DEFAULT_TTL_SECONDS) -> None:
        self.client = client
        self.ttl = ttl_seconds

    def put_table(
        self, key: ChunkKey, kind: str, table: pa.Table | pa.RecordBatch, *, parallel_compression: bool = True
    ) -> int:
        """Store a table; return its size in bytes.

        `parallel_compression` lets Arrow compress the columns on its thread pool. A task whose
        cores are all busy already (a mapped transform, two per two cores) should pass False:
        the pool took 40-50% more CPU per chunk (a transform's ready rows: 31 against 42-49 ms).
        The extract, which stages on a second thread while its parser holds one core, keeps it
        (0.84-0.89 against 0.88-0.94 s per 1M rows).
        """
        import pyarrow as pa

        sink = pa.BufferOutputStream()
        options = pa.ipc.IpcWriteOptions(compression="zstd", use_threads=parallel_compression)
        with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
            writer.write(table)
        # Sent as a memoryview: with DmsRedisHook's command packer, redis-py passes it to the
        # socket as it is, with no copy of the payload into a bytes object.
        # zstd rather than LZ4, although FACTS.md has LZ4 twice as fast on its test data: on
        # the Chinese text of bench/bench_pipeline.py's GB18030 accounts, LZ4 makes a 100k-row
        # chunk 9.2 MB against zstd's 5.0 MB, and moving the bigger payload through Redis ate
        # the faster compression (put + get 60-80 ms with either), for 1.8x the Redis memory.
        payload = sink.getvalue()
        self.client.set(key.redis_key(kind), memoryview(payload), ex=self.ttl)
        return payload.size

    def get_table(self, key: ChunkKey, kind: str) -> pa.Table:
        import pyarrow as pa

        payload = self.client.get(key.redis_key(kind))
        if payload is None:
            raise StageMissingError(stage_missing_message(key, kind, self.ttl))
        with pa.ipc.open_stream(pa.py_buffer(payload)) as reader:
            return reader.read_all()

    def put_json(self, name: str, value: Any) -> None:
        self.client.set(f"dms:meta:{name}", json.dumps(value), ex=self.ttl)

    def get_json(self, name: str) -> Any:
        raw = self.client.get(f"dms:meta:{name}")
        return None if raw is None else json.loads(raw)

    def put_epoch(self, dag_id: str, run_id: str, object_name: str, epoch: str) -> None:
        """Stage the object's load epoch in the run (see `dms.audit.Audit.new_epoch`), so loads need not ask."""
        self.put_json(f"{dag_id}:{run_id}:{object_name}:epoch", epoch)

    def epoch(self, dag_id: str, run_id: str, object_name: str) -> str | None:
        """The staged load epoch, or None when the extract staged none (or Redis lost it)."""
        value = self.get_json(f"{dag_id}:{run_id}:{object_name}:epoch")
        return None if value is None else str(value)

    # ------------------------------------------------------------ ledger

    def ledger(self, key: ChunkKey) -> dict[str, str]:
        raw = self.client.hgetall(key.ledger_key)
        return {
            k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v for k, v in raw.items()
        }

    def record(self, key: ChunkKey, **fields: Any) -> None:
        """Write ledger fields; the job id is written before an upload so a retry can find the job."""
        self.client.hset(key.ledger_key, mapping={k: str(v) for k, v in fields.items()})
        self.client.expire(key.ledger_key, self.ttl)

    def clear_run(self, dag_id: str, run_id: str, object_name: str) -> int:
        """Delete one object's stage keys, ledgers and key sets in a run (for a full refresh).

        Per object: the objects of a spec extract in parallel, and one must not wipe what
        another has just staged. The key sets go too: a full refresh may cut the source into
        other chunks, and a key claimed under the old chunking would look like a duplicate of
        itself.
        """
        count = 0
        patterns = (
            f"dms:stage:{dag_id}:{run_id}:{object_name}:*",
            f"dms:ledger:{dag_id}:{run_id}:{object_name}:*",
            f"dms:ledger:{dag_id}:{run_id}:{object_name}~*",
        )
        for pattern in patterns:
            for k in self.client.scan_iter(match=pattern, count=1000):
                count += self.client.delete(k)
        count += self.client.delete(
            f"dms:keys:{dag_id}:{run_id}:{object_name}", f"dms:keys-claimed:{dag_id}:{run_id}:{object_name}"
        )
        return count
