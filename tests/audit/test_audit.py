"""Audit: run and chunk records in a real CouchDB-compatible server, through ibmcloudant."""

from __future__ import annotations

import json
import random
import threading
from typing import Any

import pytest
from ibm_cloud_sdk_core import ApiException

from dms.audit import (
    INDEXED_FIELDS,
    MAX_DOCUMENT_BYTES,
    Audit,
    AuditRefused,
    chunk_doc_id,
    chunk_doc_prefix,
    run_doc_id,
    scrub_secrets,
)

DAG = "migrate_sample"
RUN = "manual__2024-05-01T10:00:00+00:00"


def _all_ids(audit: Audit) -> list[str]:
    rows = audit.client.post_all_docs(db=audit.database).get_result()["rows"]
    return [row["id"] for row in rows if not row["id"].startswith("_design/")]


def _generation(rev: str) -> int:
    return int(rev.split("-", 1)[0])


# -- ids (pure) -------------------------------------------------------------------------


def test_doc_ids_are_deterministic_readable_and_never_start_with_underscore() -> None:
    assert run_doc_id("_private_dag", RUN) == "run:_private_dag:manual__2024-05-01T10%3A00%3A00+00%3A00"
    assert chunk_doc_id("d", "r", "Account", 7) == "chunk:d:r:Account:000007"
    assert chunk_doc_id("d", "r", "Account", 7) == chunk_doc_id("d", "r", "Account", 7)
    assert not chunk_doc_id("_d", "_r", "_o", 0).startswith("_")


def test_doc_ids_of_different_parts_never_collide_or_share_a_prefix() -> None:
    # ':' separates the parts, so a part containing ':' or '/' must not shift the boundaries.
    assert run_doc_id("a:b", "c") != run_doc_id("a", "b:c")
    assert not chunk_doc_id("d", "r1:x", "o", 0).startswith(chunk_doc_prefix("d", "r1"))
    assert not chunk_doc_id("d", "r10", "o", 0).startswith(chunk_doc_prefix("d", "r1"))
    assert chunk_doc_id("d", "r", "a/b", 0) == "chunk:d:r:a%2Fb:000000"


@pytest.mark.parametrize("chunk", [-1, 1_000_000, True, "3"])
def test_chunk_index_outside_the_sortable_range_is_refused(chunk: Any) -> None:
    with pytest.raises(AuditRefused, match="chunk index"):
        chunk_doc_id("d", "r", "o", chunk)


# -- the database -----------------------------------------------------------------------


def test_ensure_database_is_idempotent_and_creates_the_indexes(audit: Audit) -> None:
    audit.ensure_database()
    audit.ensure_database()

    assert audit.database in audit.client.get_all_dbs().get_result()
    indexes = audit.client.get_indexes_information(db=audit.database).get_result()["indexes"]
    indexed = {index["def"]["fields"][0].popitem()[0] for index in indexes if index["type"] == "json"}
    assert indexed == set(INDEXED_FIELDS)
    # Twice must not mean two sets of indexes.
    assert len([i for i in indexes if i["type"] == "json"]) == len(INDEXED_FIELDS)


def test_ensure_database_tolerates_a_database_created_by_another_worker_meanwhile(
    audit: Audit, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_head = audit.client.head_database

    def head_then_lose_the_race(**kwargs: Any) -> Any:
        # Our HEAD saw no database; another worker creates it before our PUT (412 file_exists).
        monkeypatch.setattr(audit.client, "head_database", real_head)
        audit.client.put_database(db=audit.database)
        raise ApiException(404, message="not_found")

    monkeypatch.setattr(audit.client, "head_database", head_then_lose_the_race)
    audit.ensure_database()
    assert audit.database in audit.client.get_all_dbs().get_result()


def test_audit_from_conn_id_uses_the_dms_hook_and_the_default_database(cloudant_conn: str) -> None:
    audit = Audit.from_conn_id(cloudant_conn)
    assert audit.database == "dms_audit"
    assert audit.client.service_url.startswith("http://127.0.0.1:")
    audit.write_run(DAG, "from-conn-id", {"state": "queued"})
    assert audit.get_run(DAG, "from-conn-id")["state"] == "queued"


def test_first_write_creates_the_database(audit: Audit) -> None:
    audit.write_run(DAG, RUN, {"state": "running"})
    assert audit.get_run(DAG, RUN)["state"] == "running"


# -- idempotent writes ------------------------------------------------------------------


def test_retried_write_run_overwrites_its_own_document(audit: Audit) -> None:
    audit.write_run(DAG, RUN, {"state": "running", "attempt": 1})
    rev = audit.write_run(DAG, RUN, {"state": "success", "attempt": 2})

    assert _all_ids(audit) == [run_doc_id(DAG, RUN)]
    doc = audit.get_run(DAG, RUN)
    assert doc["_rev"] == rev and _generation(rev) == 2
    assert (doc["state"], doc["attempt"]) == ("success", 2)
    assert (doc["type"], doc["dag_id"], doc["run_id"]) == ("run", DAG, RUN)


def test_retried_write_chunk_overwrites_its_own_document(audit: Audit) -> None:
    audit.write_chunk(DAG, RUN, "Account", 3, {"rows": 100, "loaded": 0, "stale": True})
    audit.write_chunk(DAG, RUN, "Account", 3, {"rows": 100, "loaded": 98})

    assert _all_ids(audit) == [chunk_doc_id(DAG, RUN, "Account", 3)]
    doc = audit.get_chunk(DAG, RUN, "Account", 3)
    assert doc["loaded"] == 98
    assert "stale" not in doc, "a rewrite replaces the record, it does not merge into it"
    assert (doc["type"], doc["object"], doc["chunk"]) == ("chunk", "Account", 3)


def test_unknown_run_reads_as_none(audit: Audit) -> None:
    audit.ensure_database()
    assert audit.get_run(DAG, "never-ran") is None
    assert audit.get_chunks(DAG, "never-ran") == []


def test_reading_before_the_database_exists_finds_nothing(audit: Audit) -> None:
    assert audit.get_run(DAG, RUN) is None
    assert audit.get_chunks(DAG, RUN) == []


# -- reading a run back -----------------------------------------------------------------


def test_get_chunks_returns_every_chunk_of_a_run_in_order_across_pages(
    audit: Audit, monkeypatch: pytest.MonkeyPatch
) -> None:
    wanted = [("Account", i) for i in range(12)] + [("Contact", i) for i in range(3)]
    for object_name, index in random.Random(7).sample(wanted, len(wanted)):
        audit.write_chunk(DAG, RUN, object_name, index, {"rows": 10 * index})
    # Neighbours whose ids share text with this run's: another run, a run id extending it.
    audit.write_chunk(DAG, RUN + "0", "Account", 0, {"rows": -1})
    audit.write_chunk(DAG, RUN + ":x", "Account", 0, {"rows": -1})
    audit.write_run(DAG, RUN, {"state": "running"})

    calls = 0
    real_all_docs = audit.client.post_all_docs

    def counting_all_docs(**kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return real_all_docs(**kwargs)

    monkeypatch.setattr(audit.client, "post_all_docs", counting_all_docs)

    chunks = audit.get_chunks(DAG, RUN, page_size=4)
    assert [(c["object"], c["chunk"]) for c in chunks] == wanted
    assert all(c["run_id"] == RUN and c["rows"] == 10 * c["chunk"] for c in chunks)
    assert calls == 4, "15 chunks in pages of 4 take 4 requests"

    accounts = audit.get_chunks(DAG, RUN, "Account", page_size=5)
    assert [c["chunk"] for c in accounts] == list(range(12))


def test_find_queries_by_indexed_fields_across_pages(audit: Audit) -> None:
    for run in ("r1", "r2", "r3"):
        audit.write_run(DAG, run, {"state": "success"})
    audit.write_run("other_dag", "r1", {"state": "failed"})
    for index in range(3):
        audit.write_chunk(DAG, "r1", "Account", index, {})

    runs = audit.find({"type": "run", "dag_id": DAG}, page_size=2)
    assert sorted(doc["run_id"] for doc in runs) == ["r1", "r2", "r3"]
    chunks = audit.find({"object": "Account"}, fields=["_id", "chunk"])
    assert sorted(doc["chunk"] for doc in chunks) == [0, 1, 2]


# -- concurrency ------------------------------------------------------------------------


def test_concurrent_upserts_of_one_id_lose_no_write_and_the_last_wins(audit: Audit) -> None:
    audit.ensure_database()
    writers, writes_each = 8, 5
    revs: dict[str, dict[str, int]] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(writers)

    def writer(number: int) -> None:
        try:
            start.wait()
            for write in range(writes_each):
                body = {"writer": number, "write": write}
                rev = audit.upsert("run:contended", body)
                with lock:
                    revs[rev] = body
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not errors, errors
    assert len(revs) == writers * writes_each
    doc = audit.get("run:contended")
    # Every write built on the one before it: the revision count is the number of writes.
    assert _generation(doc["_rev"]) == writers * writes_each
    last_rev = max(revs, key=_generation)
    assert doc["_rev"] == last_rev
    assert {"writer": doc["writer"], "write": doc["write"]} == revs[last_rev]


# -- what is never stored ---------------------------------------------------------------


def test_secrets_are_scrubbed_at_any_depth_before_writing(audit: Audit) -> None:
    body = {
        "rows": 3,
        "rows_passed": 2,
        "access_token": "tok-123",
        "Session_Id": "sess-456",
        "source": {
            "password": "pw-789",
            "dsn": "postgresql://etl:dsn-pw@db.example.org/legacy",
            "options": [{"api-key": "key-000", "ok": 1}, {"clientSecret": "cs-111"}],
        },
    }
    snapshot = json.dumps(body, sort_keys=True)
    audit.write_chunk(DAG, RUN, "Account", 0, body)

    stored = audit.get_chunk(DAG, RUN, "Account", 0)
    raw = json.dumps(stored)
    for secret in ("tok-123", "sess-456", "pw-789", "dsn-pw", "key-000", "cs-111"):
        assert secret not in raw
    assert stored["rows"] == 3 and stored["rows_passed"] == 2
    assert stored["source"]["options"] == [{"ok": 1}, {}]
    assert stored["source"]["dsn"] == "postgresql://etl:***@db.example.org/legacy"
    assert json.dumps(body, sort_keys=True) == snapshot, "the caller's dict is left as it was"


def test_scrub_reports_what_it_removed_without_the_values() -> None:
    _, removed = scrub_secrets({"a": {"token": "t"}, "b": [{"password": "p"}]})
    assert removed == ["a.token", "b[0].password"]


@pytest.mark.parametrize("body", [{"_deleted": True}, {"_id": "elsewhere"}, {"_rev": "1-abc"}])
def test_couchdb_reserved_keys_in_a_body_are_refused(audit: Audit, body: dict) -> None:
    with pytest.raises(AuditRefused, match="reserved"):
        audit.write_run(DAG, RUN, body)


def test_design_and_underscore_ids_are_refused(audit: Audit) -> None:
    with pytest.raises(AuditRefused, match="starts with '_'"):
        audit.upsert("_design/dms-audit-type", {"views": {}})


def test_oversized_record_is_refused_before_sending(audit: Audit) -> None:
    with pytest.raises(AuditRefused, match="byte limit"):
        audit.write_chunk(DAG, RUN, "Account", 0, {"rejects": ["x" * 1000] * (MAX_DOCUMENT_BYTES // 1000)})
