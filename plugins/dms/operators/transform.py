"""Transform (mapped per chunk): map, cast, validate; stage ready rows and rejects."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context

from dms.errors import FatalError, ReconcileError
from dms.operators.base import DmsOperator, tune_memory

SALT_VARIABLE = "dms_anonymise_salt"


class TransformOperator(DmsOperator):
    """Turn one raw chunk into rows ready for Salesforce and rejected rows with reasons."""

    template_fields = ("chunk",)

    def __init__(self, *, chunk: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.chunk = chunk

    def execute(self, context: Context) -> dict[str, Any]:
        tune_memory()
        import pandas as pd
        import pyarrow as pa

        from dms.transform import transform_chunk

        dag_id, run_id = self.run_ids(context)
        key = self.chunk_key(context, int(self.chunk["chunk"]))
        stage = self.stage()
        raw = stage.get_table(key, "raw")
        describe = stage.get_json(f"{dag_id}:{run_id}:{self.object_name}:describe")
        lookups = stage.get_json(f"{dag_id}:{run_id}:{self.object_name}:lookups")
        value_maps = stage.get_json(f"{dag_id}:{run_id}:{self.object_name}:value_maps")
        result = transform_chunk(self.obj, raw, describe, lookups, value_maps, self._salt())
        malformed = stage.get_json(key.redis_key("malformed")) or []
        rejects = result.rejects
        if malformed:
            rejects = pd.concat([rejects, pd.DataFrame(malformed, columns=rejects.columns)], ignore_index=True)
        # Mapped transforms run one per core: compressing on Arrow's pool would only add CPU.
        stage.put_table(key, "ready", result.table, parallel_compression=False)
        rejected = pa.Table.from_pandas(rejects.astype(str), preserve_index=False)
        stage.put_table(key, "rejects", rejected, parallel_compression=False)
        out = {
            "object": self.object_name,
            "chunk": key.chunk,
            "rows": int(self.chunk["rows"]),
            "ready": result.table.num_rows,
            "rejected": len(rejects),
            # A small histogram for the chunk's audit record; the rows themselves stay in the stage.
            "reject_codes": {str(k): int(v) for k, v in rejects["code"].value_counts().items()},
        }
        if out["ready"] + out["rejected"] != out["rows"]:
            raise ReconcileError(f"chunk {key.chunk} of {self.object_name}: transform lost rows: {out}")
        self.log.info(
            "chunk %s of %s: %s ready, %s rejected", key.chunk, self.object_name, out["ready"], out["rejected"]
        )
        return out

    def _salt(self) -> str | None:
        """The anonymisation key, only when a field hashes or fakes; never logged or returned."""
        if not any(f.anonymise and f.anonymise.method != "mask" for f in self.obj.fields.values()):
            return None
        from airflow.sdk import Variable

        salt = Variable.get(SALT_VARIABLE, default=None)
        if not salt:
            raise FatalError(
                f"{self.obj.name}: anonymise needs the Airflow Variable {SALT_VARIABLE} (a secret that keys the "
                "hashes, so nobody can recompute them); set it, e.g. in airflow_settings.yaml"
            )
        return str(salt)
