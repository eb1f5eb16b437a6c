"""The SQL and Salesforce source readers against real services: PostgreSQL and the emulator.

PostgreSQL is the one at 127.0.0.1:5432 (trust auth, user postgres); each run creates its
own database and drops it afterwards. Without a reachable server the PostgreSQL tests skip
and start nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pendulum
import pyarrow as pa
import pytest

from dms.errors import SourceError
from dms.salesforce.bulk2 import Bulk2Client, Bulk2Error
from dms.sources import SourceContext, iter_chunks
from dms.sources.base import ROW_COLUMN, SourceChunk, to_text
from dms.sources.salesforce import iter_salesforce_chunks, soql_datetime, soql_with_interval
from dms.sources.sql import build_statement, iter_sql_chunks, quote_identifier, value_text
from dms.spec import SalesforceSource, SqlSource
from scripts.services import EmulatorProcess, PostgresServer
from tests.integration.sql_window import check_window_is_start_inclusive_end_exclusive

PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_CONN_ID = "dms_test_pg"
# Trust auth ignores it, which is what lets the tests check it never reaches a message.
PG_PASSWORD = "Pw-7f3c9e-never-shown"
ROWS = 25
# updated_at of row i is BASE + i hours; the last row has none.
BASE = dt.datetime(2026, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=8)))
SF_CONN_ID = "dms_test_sf"


def _chunks(source: SqlSource, chunk_rows: int, start: Any = None, end: Any = None) -> list[SourceChunk]:
    return list(iter_sql_chunks(source, chunk_rows, start, end))


def _rows(chunks: list[SourceChunk]) -> list[dict[str, str]]:
    return [row for chunk in chunks for row in chunk.batch.to_pylist()]


# ---------------------------------------------------------------- PostgreSQL


def _expected_row(i: int) -> dict[str, Any]:
    """Row i (1-based) of crm.accounts, as Python values."""
    return {
        "id": i,
        "name": 'He said "你好",\n再见' if i == 3 else f"客户{i:02d}号",
        "qty": None if i == 5 else i * 10,
        # Above 2**53: must not pass through a float on the way.
        "big": 9_007_199_254_740_993 + i,
        "amount": None if i == 5 else Decimal(i) * Decimal("1.25"),
        "ratio": i / 4,
        "active": None if i == 7 else i % 2 == 0,
        "born": dt.date(1990, 1, 1) + dt.timedelta(days=i),
        "updated_at": None if i == ROWS else BASE + dt.timedelta(hours=i),
        "note": "" if i == 2 else (None if i % 3 else f"备注 {i}"),
    }


def _expected_text(i: int) -> dict[str, str]:
    """Row i as the reader must give it (updated_at is checked as a moment, see _moment)."""
    row = _expected_row(i)
    amount = row["amount"]
    return {
        "id": str(i),
        "name": row["name"],
        "qty": "" if row["qty"] is None else str(row["qty"]),
        "big": str(row["big"]),
        "amount": "" if amount is None else f"{amount:.2f}",
        "ratio": str(int(row["ratio"])) if row["ratio"].is_integer() else repr(row["ratio"]),
        "active": "" if row["active"] is None else ("true" if row["active"] else "false"),
        "born": row["born"].isoformat(),
        "note": row["note"] or "",
    }


def _moment(text: str) -> dt.datetime | None:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z") if text else None


def _admin(dbname: str = "postgres"):
    import psycopg

    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user="postgres", dbname=dbname, autocommit=True, connect_timeout=5
    )


@pytest.fixture(scope="module")
def pg_database(postgres_server: PostgresServer) -> Iterator[str]:
    """A database of this test run, with crm.accounts (25 varied rows) and crm."客户 列表"."""
    global PG_HOST, PG_PORT
    # The machine's PostgreSQL, or a private cluster the session started (tests/integration/conftest.py).
    PG_HOST, PG_PORT = postgres_server.host, postgres_server.port
    name = f"dms_test_{uuid.uuid4().hex[:12]}"
    with _admin() as admin:
        admin.execute(f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0")
    try:
        with _admin(name) as conn:
            conn.execute("CREATE SCHEMA crm")
            conn.execute(
                """CREATE TABLE crm.accounts (
                    id integer PRIMARY KEY, name text, qty integer, big bigint, amount numeric(12, 2),
                    ratio double precision, active boolean, born date, updated_at timestamptz, note text)"""
            )
            with conn.cursor() as cur:
                rows = [_expected_row(i) for i in range(1, ROWS + 1)]
                cur.executemany(
                    "INSERT INTO crm.accounts VALUES (%(id)s, %(name)s, %(qty)s, %(big)s, %(amount)s, %(ratio)s, "
                    "%(active)s, %(born)s, %(updated_at)s, %(note)s)",
                    rows,
                )
            conn.execute('CREATE TABLE crm."客户 列表" ("编号" integer, "名称" text)')
            conn.execute("""INSERT INTO crm."客户 列表" VALUES (1, '甲'), (2, '乙')""")
        yield name
    finally:
        with _admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_conn(pg_database: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The Airflow connection PG_CONN_ID to the test database, as AIRFLOW_CONN_* (JSON form)."""
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{PG_CONN_ID.upper()}",
        json.dumps(
            {
                "conn_type": "postgres",
                "host": PG_HOST,
                "port": PG_PORT,
                "login": "postgres",
                "password": PG_PASSWORD,
                "schema": pg_database,
            }
        ),
    )
    return PG_CONN_ID


def test_table_is_read_as_text_in_exact_chunks_with_row_numbers(pg_conn: str) -> None:
    chunks = _chunks(SqlSource(kind="sql", conn_id=pg_conn, table="crm.accounts"), chunk_rows=7)
    assert [c.rows for c in chunks] == [7, 7, 7, 4]
    assert all(not c.malformed for c in chunks)
    columns = ["id", "name", "qty", "big", "amount", "ratio", "active", "born", "updated_at", "note"]
    assert chunks[0].batch.schema == pa.schema([(ROW_COLUMN, pa.int64()), *((n, pa.string()) for n in columns)])
    rows = _rows(chunks)
    assert [r[ROW_COLUMN] for r in rows] == list(range(1, ROWS + 1))
    # A fresh table is scanned in insertion order, so position i holds id i.
    assert [r["id"] for r in rows] == [str(i) for i in range(1, ROWS + 1)]
    for i, row in enumerate(rows, 1):
        moment = row.pop("updated_at")
        row.pop(ROW_COLUMN)
        assert row == _expected_text(i), f"row {i}"
        assert _moment(moment) == _expected_row(i)["updated_at"], f"row {i}"
    # Spot checks of the forms the transform reads.
    assert rows[0]["ratio"] == "0.25" and rows[3]["ratio"] == "1" and rows[1]["amount"] == "2.50"
    assert rows[2]["name"] == 'He said "你好",\n再见'
    assert rows[4]["qty"] == "" and rows[4]["amount"] == "" and rows[6]["active"] == ""
    assert rows[1]["note"] == "" and rows[2]["note"] == "备注 3"
    assert rows[0]["big"] == "9007199254740994"
    assert _moment(_rows(chunks)[0]["updated_at"]) is not None
    assert chunks[0].batch.column("updated_at")[0].as_py()[-6] in "+-"  # the offset, +HH:MM


def test_chunk_of_one_and_chunk_larger_than_the_table(pg_conn: str) -> None:
    source = SqlSource(kind="sql", conn_id=pg_conn, table="crm.accounts")
    ones = _chunks(source, chunk_rows=1)
    assert [c.rows for c in ones] == [1] * ROWS
    assert [c.batch.column(ROW_COLUMN)[0].as_py() for c in ones] == list(range(1, ROWS + 1))
    [whole] = _chunks(source, chunk_rows=1000)
    assert whole.rows == ROWS


def test_the_dispatcher_reads_a_sql_source(pg_conn: str) -> None:
    source = SqlSource(kind="sql", conn_id=pg_conn, table="crm.accounts", change_column="updated_at")
    context = SourceContext(interval_start=BASE + dt.timedelta(hours=1), interval_end=BASE + dt.timedelta(hours=3))
    assert [r["id"] for r in _rows(list(iter_chunks(source, 10, context)))] == ["1", "2"]


def test_schema_qualified_mixed_case_and_chinese_table_names(pg_conn: str) -> None:
    # Plain names are folded as PostgreSQL folds unquoted ones; others are quoted as written.
    assert len(_rows(_chunks(SqlSource(kind="sql", conn_id=pg_conn, table="CRM.Accounts"), 100))) == ROWS
    for table in ("crm.客户 列表", 'crm."客户 列表"', '"crm"."客户 列表"'):
        rows = _rows(_chunks(SqlSource(kind="sql", conn_id=pg_conn, table=table), 100))
        assert rows == [{ROW_COLUMN: 1, "编号": "1", "名称": "甲"}, {ROW_COLUMN: 2, "编号": "2", "名称": "乙"}], table


def test_incremental_window_reads_exactly_start_inclusive_end_exclusive(pg_conn: str) -> None:
    source = SqlSource(kind="sql", conn_id=pg_conn, table="crm.accounts", change_column="updated_at")
    check_window_is_start_inclusive_end_exclusive(source, _chunks, _rows, BASE, ROWS)


def test_change_column_without_interval_reads_everything_in_its_order(pg_conn: str) -> None:
    source = SqlSource(
        kind="sql",
        conn_id=pg_conn,
        query="SELECT id, updated_at FROM crm.accounts ORDER BY id DESC",
        change_column="updated_at",
    )
    ids = [r["id"] for r in _rows(_chunks(source, 10))]
    assert ids == [str(i) for i in range(1, ROWS + 1)]  # by updated_at; its NULL last


def test_query_source_with_percent_signs_and_a_window(pg_conn: str) -> None:
    # "%" must survive both with bound parameters (doubled for the driver) and without.
    query = "SELECT id, name, updated_at FROM crm.accounts WHERE id % 2 = 1 AND name LIKE '客户%';"
    source = SqlSource(kind="sql", conn_id=pg_conn, query=query, change_column="updated_at")
    rows = _rows(_chunks(source, 10, BASE + dt.timedelta(hours=5), BASE + dt.timedelta(hours=10)))
    assert [(r["id"], r["name"]) for r in rows] == [("5", "客户05号"), ("7", "客户07号"), ("9", "客户09号")]
    assert list(rows[0]) == [ROW_COLUMN, "id", "name", "updated_at"]
    query = "SELECT id FROM crm.accounts WHERE id % 10 = 0 ORDER BY id DESC"
    plain = SqlSource(kind="sql", conn_id=pg_conn, query=query)
    assert [r["id"] for r in _rows(_chunks(plain, 10))] == ["20", "10"]  # run as written, its order kept


def test_rows_stream_through_a_server_side_cursor_and_the_session_ends(pg_conn: str, pg_database: str) -> None:
    chunks = iter_sql_chunks(SqlSource(kind="sql", conn_id=pg_conn, table="crm.accounts"), 5, None, None)
    first = next(chunks)
    assert first.rows == 5
    with _admin() as admin:
        sessions = admin.execute(
            "SELECT state, query FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [pg_database],
        ).fetchall()
    # The reader fetched one block of 5 from a DECLAREd cursor, not the whole table.
    assert [(state, query.split()[:3]) for state, query in sessions] == [
        ("idle in transaction", ["FETCH", "FORWARD", "5"])
    ]
    chunks.close()
    deadline = time.monotonic() + 10
    while True:
        with _admin() as admin:
            left = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [pg_database]
            ).fetchone()[0]
        if left == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert left == 0, "closing the reader must close its database session"


def test_missing_table_names_the_table_and_connection_but_not_the_password(pg_conn: str) -> None:
    with pytest.raises(SourceError) as exc:
        _chunks(SqlSource(kind="sql", conn_id=pg_conn, table="crm.nope"), 10)
    message = str(exc.value)
    assert "crm.nope" in message and pg_conn in message and "does not exist" in message
    assert PG_PASSWORD not in message and "Traceback" not in message
    assert exc.value.__cause__ is None and exc.value.__suppress_context__


def test_sql_errors_are_source_errors_without_the_password(pg_conn: str) -> None:
    with pytest.raises(SourceError) as exc:
        _chunks(SqlSource(kind="sql", conn_id=pg_conn, query="SELEC id FROM crm.accounts"), 10)
    assert "syntax error" in str(exc.value) and "SELEC id" in str(exc.value)
    assert PG_PASSWORD not in str(exc.value)
    with pytest.raises(SourceError, match="no_such_column"):
        _chunks(
            SqlSource(kind="sql", conn_id=pg_conn, table="crm.accounts", change_column="no_such_column"),
            10,
            BASE,
            BASE + dt.timedelta(hours=1),
        )


def test_unknown_connection_is_a_source_error_naming_it() -> None:
    with pytest.raises(SourceError, match="'dms_no_such_connection'.*not defined"):
        _chunks(SqlSource(kind="sql", conn_id="dms_no_such_connection", table="t"), 10)


def test_connection_failures_never_show_the_password(pg_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The database name holds the password, so PostgreSQL's own message echoes it: it is masked.
    monkeypatch.setenv(
        "AIRFLOW_CONN_DMS_TEST_PG_BAD",
        json.dumps(
            {
                "conn_type": "postgres",
                "host": PG_HOST,
                "port": PG_PORT,
                "login": "postgres",
                "password": PG_PASSWORD,
                "schema": f"missing_{PG_PASSWORD}",
            }
        ),
    )
    with pytest.raises(SourceError) as exc:
        _chunks(SqlSource(kind="sql", conn_id="dms_test_pg_bad", table="crm.accounts"), 10)
    message = str(exc.value)
    assert "cannot connect" in message and "dms_test_pg_bad" in message and "missing_***" in message
    assert PG_PASSWORD not in message


def test_a_connection_that_is_not_a_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DMS_TEST_NOT_DB", json.dumps({"conn_type": "redis", "host": "127.0.0.1"}))
    with pytest.raises(SourceError, match="'dms_test_not_db'.*'redis' connection is not a database connection"):
        _chunks(SqlSource(kind="sql", conn_id="dms_test_not_db", table="t"), 10)
    monkeypatch.setenv("AIRFLOW_CONN_DMS_TEST_NO_HOOK", json.dumps({"conn_type": "no_such_type", "host": "x"}))
    with pytest.raises(SourceError, match="no database hook for connection type 'no_such_type'"):
        _chunks(SqlSource(kind="sql", conn_id="dms_test_no_hook", table="t"), 10)


# ---------------------------------------------------------------- statements and values (no database)


def test_statement_binds_the_interval_and_quotes_for_each_dialect() -> None:
    source = SqlSource(kind="sql", conn_id="x", table='sales.Order "Lines"', change_column="Modified At")
    start, end = dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    sql, params = build_statement(source, conn_type="postgres", interval_start=start, interval_end=end)
    assert sql == (
        'SELECT * FROM "sales"."Order ""Lines""" WHERE "Modified At" >= %(start)s AND "Modified At" < %(end)s '
        'ORDER BY "Modified At"'
    )
    assert params == {"start": start, "end": end}
    sql, params = build_statement(
        source, conn_type="mysql", paramstyle="format", interval_start=start, interval_end=end
    )
    assert sql.startswith('SELECT * FROM `sales`.`Order "Lines"` WHERE `Modified At` >= %s AND')
    # MySQL's DATETIME holds no zone: the bounds go as naive UTC.
    assert params == [dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 2)]
    assert quote_identifier("a`b", conn_type="mysql") == "`a``b`"
    assert quote_identifier('x"; DROP TABLE t; --', conn_type="postgres") == '"x""; DROP TABLE t; --"'
    with pytest.raises(ValueError, match="unterminated"):
        quote_identifier('"open', conn_type="postgres")
    assert build_statement(SqlSource(kind="sql", conn_id="x", query="SELECT 1;"), conn_type="postgres") == (
        "SELECT 1",
        None,
    )


@pytest.mark.parametrize(
    "value, arrow",
    [
        (42, pa.array([42])),
        (-7, pa.array([-7], pa.int16())),
        (3.0, pa.array([3.0])),
        (0.1, pa.array([0.1])),
        (1e16, pa.array([1e16])),
        (1e-7, pa.array([1e-7])),
        (
            dt.datetime(2024, 5, 31, 13, 45, 7, 500),
            pa.array([dt.datetime(2024, 5, 31, 13, 45, 7, 500)], pa.timestamp("us")),
        ),
        (True, pa.array([True])),
        (False, pa.array([False])),
        (dt.date(2024, 2, 29), pa.array([dt.date(2024, 2, 29)])),
        (dt.datetime(2024, 5, 31, 13, 45, 7), pa.array([dt.datetime(2024, 5, 31, 13, 45, 7)], pa.timestamp("s"))),
        (
            dt.datetime(2024, 5, 31, 13, 45, 7, tzinfo=dt.timezone(dt.timedelta(hours=8))),
            pa.array([dt.datetime(2024, 5, 31, 5, 45, 7)], pa.timestamp("s", tz="+08:00")),
        ),
        ("中文", pa.array(["中文"])),
        (None, pa.array([None], pa.int64())),
        (Decimal("12.50"), pa.array([Decimal("12.50")], pa.decimal128(12, 2))),
    ],
)
def test_values_read_as_to_text_reads_the_same_arrow_value(value: Any, arrow: pa.Array) -> None:
    expected = to_text(pa.record_batch([arrow], names=["v"])).column(0)[0].as_py()
    assert value_text(value) == expected


def test_other_database_values_have_a_stable_text() -> None:
    assert value_text(Decimal("1E+3")) == "1000"
    assert value_text(b"\xe4\xb8\xad") == "中" and value_text(b"\xff\x00") == "\\xff00"
    assert value_text({"a": [1, "乙"]}) == '{"a": [1, "乙"]}'
    assert value_text(uuid.UUID(int=1)) == "00000000-0000-0000-0000-000000000001"
    assert value_text(pendulum.datetime(2026, 1, 1, 8, tz="Asia/Shanghai")) == "2026-01-01T08:00:00+08:00"


# ---------------------------------------------------------------- Salesforce (the emulator)


@pytest.fixture
def sf_conn(emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch) -> str:
    """A clean emulator org behind the Airflow connection SF_CONN_ID."""
    emulator.admin("/__emulator/reset", "POST")
    monkeypatch.setenv(f"AIRFLOW_CONN_{SF_CONN_ID.upper()}", json.dumps(emulator.salesforce_connection()))
    return SF_CONN_ID


def _bulk_client(conn_id: str) -> Bulk2Client:
    from dms.hooks.salesforce import DmsSalesforceHook

    return Bulk2Client(DmsSalesforceHook(salesforce_conn_id=conn_id).get_conn())


def _insert_accounts(client: Bulk2Client, rows: list[dict[str, str]]) -> None:
    """Insert Accounts with a Bulk API 2.0 ingest job, as a user loading the org would."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    job = client.create_job("Account", "insert")
    client.upload(job["id"], out.getvalue().encode())
    client.set_state(job["id"], "UploadComplete")
    done = client.wait(job["id"], poll_seconds=0.05)
    assert done["state"] == "JobComplete" and done["numberRecordsFailed"] == 0, done


def _account(i: int) -> dict[str, str]:
    return {
        "Name": f"客户{i:02d}",
        "Description": 'Line one, "quoted"\nline two 第二行' if i == 3 else "",
        "AnnualRevenue": f"{i * 1000}.5",
        "Active__c": "true" if i % 2 == 0 else "false",
        "Last_Activity__c": f"2026-01-01T{i:02d}:00:00.000Z",
        "NumberOfEmployees": "" if i % 4 == 0 else str(i),
    }


class _Spy:
    """Passes calls through to the real Bulk2Client method and remembers them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.calls: list[tuple[tuple, dict, Any]] = []
        real = getattr(Bulk2Client, name)

        def spy(client: Bulk2Client, *args: Any, **kwargs: Any) -> Any:
            result = real(client, *args, **kwargs)
            self.calls.append((args, kwargs, result))
            return result

        monkeypatch.setattr(Bulk2Client, name, spy)


def test_soql_results_are_read_page_by_page_into_exact_chunks(sf_conn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    client = _bulk_client(sf_conn)
    _insert_accounts(client, [_account(i) for i in range(23)])
    pages = _Spy(monkeypatch, "query_results")
    created = _Spy(monkeypatch, "create_query_job")
    soql = (
        "SELECT Name, Description, AnnualRevenue, Active__c, Last_Activity__c, NumberOfEmployees FROM Account "
        "ORDER BY Name"
    )
    source = SalesforceSource(kind="salesforce", soql=soql)
    chunks = list(iter_salesforce_chunks(source, 4, sf_conn, None, None, page_records=5, poll_seconds=0.05))
    assert [c.rows for c in chunks] == [4, 4, 4, 4, 4, 3]
    assert len(pages.calls) == 5 and all(kw["max_records"] == 5 for _, kw, _ in pages.calls)
    assert [kw["locator"] for _, kw, _ in pages.calls][0] is None and pages.calls[-1][2][1] is None
    names = ["Name", "Description", "AnnualRevenue", "Active__c", "Last_Activity__c", "NumberOfEmployees"]
    assert chunks[0].batch.schema == pa.schema([(ROW_COLUMN, pa.int64()), *((n, pa.string()) for n in names)])
    rows = _rows(chunks)
    assert [r[ROW_COLUMN] for r in rows] == list(range(1, 24))
    assert [r["Name"] for r in rows] == [f"客户{i:02d}" for i in range(23)]
    assert rows[3]["Description"] == 'Line one, "quoted"\nline two 第二行'
    assert rows[0]["Description"] == "" and rows[4]["NumberOfEmployees"] == "" and rows[5]["NumberOfEmployees"] == "5"
    assert [r["Active__c"] for r in rows[:3]] == ["true", "false", "true"]
    assert float(rows[7]["AnnualRevenue"]) == 7000.5
    assert rows[7]["Last_Activity__c"].startswith("2026-01-01T07:00:00")
    # The finished job is deleted: nothing is left behind in the org.
    [(_, _, job)] = created.calls
    with pytest.raises(Bulk2Error):
        client.get_query_job(job["id"])


def test_soql_incremental_window_on_a_datetime_field(sf_conn: str) -> None:
    client = _bulk_client(sf_conn)
    _insert_accounts(client, [_account(i) for i in range(23)])
    start = pendulum.datetime(2026, 1, 1, 13, tz="Asia/Shanghai")  # 05:00Z
    end = dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC)
    source = SalesforceSource(
        kind="salesforce", soql="SELECT Name FROM Account ORDER BY Name", change_column="Last_Activity__c"
    )
    chunks = list(iter_salesforce_chunks(source, 2, sf_conn, start, end, page_records=3, poll_seconds=0.05))
    assert [c.rows for c in chunks] == [2, 2, 1]
    assert [r["Name"] for r in _rows(chunks)] == [f"客户{i:02d}" for i in range(5, 10)]
    # Added to a WHERE of its own, before the ORDER BY.
    source = SalesforceSource(
        kind="salesforce",
        soql="SELECT Name FROM Account WHERE Active__c = true OR Name = '客户07' ORDER BY Name DESC",
        change_column="Last_Activity__c",
    )
    names = [r["Name"] for r in _rows(list(iter_salesforce_chunks(source, 10, sf_conn, start, end, poll_seconds=0.05)))]
    assert names == ["客户08", "客户07", "客户06"]


def test_soql_incremental_window_on_created_date(sf_conn: str) -> None:
    client = _bulk_client(sf_conn)
    _insert_accounts(client, [_account(i) for i in range(3)])
    time.sleep(0.05)
    cut = dt.datetime.now(dt.UTC)
    time.sleep(0.05)
    _insert_accounts(client, [_account(i) for i in range(10, 12)])
    source = SalesforceSource(kind="salesforce", soql="SELECT Name FROM Account", change_column="CreatedDate")
    later = list(iter_salesforce_chunks(source, 10, sf_conn, cut, cut + dt.timedelta(hours=1), poll_seconds=0.05))
    assert sorted(r["Name"] for r in _rows(later)) == ["客户10", "客户11"]
    earlier = list(iter_salesforce_chunks(source, 10, sf_conn, cut - dt.timedelta(hours=1), cut, poll_seconds=0.05))
    assert sorted(r["Name"] for r in _rows(earlier)) == ["客户00", "客户01", "客户02"]


def test_the_dispatcher_reads_a_salesforce_source_through_the_spec_connection(sf_conn: str) -> None:
    _insert_accounts(_bulk_client(sf_conn), [_account(i) for i in range(2)])
    source = SalesforceSource(kind="salesforce", soql="SELECT Name FROM Account ORDER BY Name")
    chunks = list(iter_chunks(source, 10, SourceContext(salesforce_conn_id=sf_conn)))
    assert _rows(chunks) == [{ROW_COLUMN: 1, "Name": "客户00"}, {ROW_COLUMN: 2, "Name": "客户01"}]


def test_empty_result_reads_nothing(sf_conn: str) -> None:
    source = SalesforceSource(kind="salesforce", soql="SELECT Id, Name FROM Account")
    assert list(iter_salesforce_chunks(source, 10, sf_conn, None, None, poll_seconds=0.05)) == []


def test_bad_soql_is_a_source_error_with_salesforces_reason(sf_conn: str) -> None:
    for soql, reason in (
        ("SELECT Name, Nope__c FROM Account", "Nope__c"),
        ("SELECT Name FROM NoSuchObject__c", "NoSuchObject__c"),
        ("SELECT Name FROM", "MALFORMED_QUERY"),
    ):
        source = SalesforceSource(kind="salesforce", soql=soql)
        with pytest.raises(SourceError) as exc:
            list(iter_salesforce_chunks(source, 10, sf_conn, None, None, poll_seconds=0.05))
        message = str(exc.value)
        assert reason in message and "refused the query" in message and sf_conn in message, message


def test_unknown_salesforce_connection_is_a_source_error(emulator: EmulatorProcess) -> None:
    source = SalesforceSource(kind="salesforce", soql="SELECT Id FROM Account")
    with pytest.raises(SourceError, match="'dms_no_such_sf'"):
        list(iter_salesforce_chunks(source, 10, "dms_no_such_sf", None, None))


def test_soql_interval_condition_goes_into_the_right_clause() -> None:
    start, end = dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 1, 2, 0, 0, 0, 250_400, tzinfo=dt.UTC)
    window = "LastModifiedDate >= 2026-01-01T00:00:00Z AND LastModifiedDate < 2026-01-02T00:00:00.251Z"
    assert soql_with_interval("SELECT Id FROM Account", "LastModifiedDate", start, end) == (
        f"SELECT Id FROM Account WHERE {window}"
    )
    # "Order" is an sObject here, not ORDER BY; the WHERE's OR stays inside its parentheses;
    # words inside strings and subqueries are not clauses.
    assert soql_with_interval(
        "SELECT Id, (SELECT Id FROM OrderItems WHERE Quantity > 1 ORDER BY Id) FROM Order "
        "WHERE Name = 'x ORDER BY y' OR Status = 'Draft' WITH SECURITY_ENFORCED ORDER BY Name LIMIT 10",
        "LastModifiedDate",
        start,
        end,
    ) == (
        "SELECT Id, (SELECT Id FROM OrderItems WHERE Quantity > 1 ORDER BY Id) FROM Order "
        f"WHERE (Name = 'x ORDER BY y' OR Status = 'Draft') AND {window} WITH SECURITY_ENFORCED ORDER BY Name LIMIT 10"
    )
    assert soql_with_interval("SELECT Id FROM Account LIMIT 5", "LastModifiedDate", None, None) == (
        "SELECT Id FROM Account LIMIT 5"
    )
    assert soql_datetime(pendulum.datetime(2026, 1, 1, 8, tz="Asia/Shanghai")) == "2026-01-01T00:00:00Z"
    with pytest.raises(SourceError, match="not a SOQL field name"):
        list(
            iter_salesforce_chunks(
                SalesforceSource(kind="salesforce", soql="SELECT Id FROM Account", change_column="x) OR (Id != null"),
                10,
                "unused",
                start,
                end,
            )
        )
