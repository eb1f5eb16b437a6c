"""Redis hook for the stage: the provider's hook, kept off the Celery broker's database."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlparse

from airflow.providers.redis.hooks.redis import RedisHook

from dms.errors import FatalError

# Celery's broker conventionally uses db 0; the stage never shares it.
DEFAULT_STAGING_DB = 1
STAGE_READ_SIZE = 1 << 20
# redis-py's own threshold above which an argument is sent as a buffer of its own.
PACK_BUFFER_CUTOFF = 6000


class DmsRedisHook(RedisHook):
    """RedisHook whose default connection is `dms_staging` and whose database is never the broker's."""

    default_conn_name = "dms_staging"
    hook_name = "Redis (DMS staging)"

    def __init__(self, redis_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(redis_conn_id=redis_conn_id, **kwargs)

    def get_conn(self) -> Any:
        if self.redis is not None:
            return self.redis
        client = super().get_conn()
        if self.db is None and not self.cluster:
            # A connection without a db would stage on db 0, next to Celery's queues. The pool
            # opens its connections lazily, so setting the db now applies to every one of them.
            self.db = DEFAULT_STAGING_DB
            client.connection_pool.connection_kwargs["db"] = self.db
        # Staged chunks are megabytes: reading them 64 KiB at a time (redis-py's default) cost
        # about as much as decompressing them (bench/bench_pipeline.py).
        client.connection_pool.connection_kwargs.setdefault("socket_read_size", STAGE_READ_SIZE)
        client.connection_pool.connection_kwargs.setdefault("command_packer", _zero_copy_packer(client))
        broker = os.environ.get("AIRFLOW__CELERY__BROKER_URL", "")
        if broker.startswith("redis"):
            parsed = urlparse(broker)
            broker_db = int((parsed.path or "/0").lstrip("/") or 0)
            if (parsed.hostname, parsed.port or 6379, broker_db) == (self.host, int(self.port or 6379), self.db):
                raise FatalError(
                    f"Redis connection {self.redis_conn_id!r} points at the Celery broker's database {self.db}; "
                    "give it its own 'db' in the connection extra"
                )
        return client


def _zero_copy_packer(client: Any) -> Any:
    """redis-py's own command packer, which sends a memoryview payload as it is.

    With hiredis installed, redis-py packs commands with hiredis, which copies a staged chunk
    twice (into bytes, then into the command) before sending it: about 9 ms of a transform's
    0.3 s (bench/bench_pipeline.py). Replies are still read by hiredis, where it is faster.
    """
    from redis._parsers.encoders import Encoder
    from redis.connection import PythonRespSerializer

    kwargs = client.connection_pool.connection_kwargs
    encoder = Encoder(
        kwargs.get("encoding", "utf-8"), kwargs.get("encoding_errors", "strict"), kwargs.get("decode_responses", False)
    )
    return PythonRespSerializer(PACK_BUFFER_CUTOFF, encoder.encode)
