"""The SQL source reader against a real MariaDB (or MySQL), through the Airflow MySQL provider's hook.

The server is the one at 127.0.0.1:3306 (root without a password), or a private MariaDB that
this module starts and removes (scripts/services.py, ensure_mariadb). Each run creates its
own database, and a user with a password that may only SELECT from it, and drops both
afterwards. The reader connects as that user through an `AIRFLOW_CONN_*` connection of
type "mysql", so through MySqlHook and mysqlclient (MySQLdb), as users run it; the tests of
streaming and of the whole table also run with the provider's other client,
mysql-connector-python.
"""

from __future__ import annotations

import contextlib
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
from dms.sources import SourceContext, iter_chunks
from dms.sources.base import ROW_COLUMN, SourceChunk
from dms.sources.sql import build_statement, iter_sql_chunks, value_text
from dms.spec import SqlSource
from scripts.services import MariaDBServer, ensure_mariadb
from tests.integration.sql_window import check_window_is_start_inclusive_end_exclusive

CONN_ID = "dms_test_mysql"
PASSWORD = "Pw-4b1d2a-never-shown"
CLIENTS = ("mysqlclient", "mysql-connector-python")
ROWS = 25
# updated_at (TIMESTAMP) of row i is BASE + i hours; the last row has none.
BASE = dt.datetime(2026, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=8)))
# The big table: wide rows, far more than the socket buffers hold, so a streamed read leaves
# most of it on the server.
BIG_ROWS = 100_000
BIG_PAD = 500


def _chunks(source: SqlSource, chunk_rows: int, start: Any = None, end: Any = None) -> list[SourceChunk]:
    return list(iter_sql_chunks(source, chunk_rows, start, end))


def _rows(chunks: list[SourceChunk]) -> list[dict[str, str]]:
    return [row for chunk in chunks for row in chunk.batch.to_pylist()]


def _expected_row(i: int) -> dict[str, Any]:
    """Row i (1-based) of accounts, as Python values (updated_at aware, logged naive UTC)."""
    updated = None if i == ROWS else BASE + dt.timedelta(hours=i)
    logged = (BASE + dt.timedelta(hours=i, microseconds=500_000 if i == 6 else 0)).astimezone(dt.UTC)
    return {
        "id": i,
        # Row 4 has characters outside the BMP (4 bytes in UTF-8): utf8mb4 or nothing.
        "name": 'He said "你好",\n再见' if i == 3 else ("𠮷野家🍜" if i == 4 else f"客户{i:02d}号"),
        "qty": None if i == 5 else i * 10,
        # Above 2**53: must not pass through a float on the way.
        "big": 9_007_199_254_740_993 + i,
        "amount": None if i == 5 else Decimal(i) * Decimal("1.25"),
        "ratio": i / 4,
        "active": None if i == 7 else i % 2 == 0,
        "born": dt.date(1990, 1, 1) + dt.timedelta(days=i),
        "updated_at": updated,
        # A DATETIME holds no zone: by convention (the reader's bounds) UTC wall time.
        "logged": None if i == 1 else logged.replace(tzinfo=None),
        "bits": i * 37,
        "dur": dt.timedelta(hours=-26, seconds=-1) if i == 2 else dt.timedelta(hours=i, minutes=30),
        "note": "" if i == 2 else (None if i % 3 else f"备注 {i}"),
    }


def _expected_text(i: int) -> dict[str, str]:
    """Row i as the reader must give it (updated_at is checked as a moment, see _moment)."""
    row = _expected_row(i)
    amount, logged = row["amount"], row["logged"]
    return {
        "id": str(i),
        "name": row["name"],
        "qty": "" if row["qty"] is None else str(row["qty"]),
        "big": str(row["big"]),
        "amount": "" if amount is None else f"{amount:.2f}",
        "ratio": str(int(row["ratio"])) if row["ratio"].is_integer() else repr(row["ratio"]),
        # BOOL is TINYINT(1): the digits, which a field's true_values/false_values take.
        "active": "" if row["active"] is None else str(int(row["active"])),
        "born": row["born"].isoformat(),
        "logged": "" if logged is None else logged.isoformat(),
        "bits": str(row["bits"]),
        "dur": "-26:00:01" if i == 2 else f"{i:02d}:30:00",
        "note": row["note"] or "",
    }


def _moment(text: str) -> dt.datetime | None:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z") if text else None


# ---------------------------------------------------------------- the server and the database


@pytest.fixture(scope="module")
def mariadb_server() -> Iterator[MariaDBServer]:
    """The MariaDB/MySQL on :3306, or a private MariaDB started (and removed) for this module."""
    server = ensure_mariadb()
    yield server
    server.stop()


def _admin(server: MariaDBServer, database: str | None = None) -> Any:
    import MySQLdb

    return MySQLdb.connect(
        host=server.host,
        port=server.port,
        user=server.user,
        passwd=server.password,
        db=database or "",
        charset="utf8mb4",
        autocommit=True,
        connect_timeout=10,
    )


def _query(server: MariaDBServer, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    conn = _admin(server)
    try:
        cursor = conn.cursor()
        cursor.execute(sql, params)
        return list(cursor.fetchall())
    finally:
        conn.close()


class Database:
    """The module's database and the reader's user (SELECT on it only)."""

    def __init__(self, server: MariaDBServer, name: str, user: str) -> None:
        self.server, self.name, self.user = server, name, user

    def connection(self, *, extra: dict[str, Any] | None = None, **overrides: Any) -> str:
        """The Airflow connection (JSON) the reader uses, as MySqlHook reads it."""
        fields = {
            "conn_type": "mysql",
            "host": self.server.host,
            "port": self.server.port,
            "login": self.user,
            "password": PASSWORD,
            "schema": self.name,
            "extra": extra or {},
            **overrides,
        }
        return json.dumps(fields)


@pytest.fixture(scope="module")
def my_database(mariadb_server: MariaDBServer) -> Iterator[Database]:
    """A database of this run: accounts (25 varied rows), `客户 列表`, `odd``name` and big (100,000 rows)."""
    suffix = uuid.uuid4().hex[:12]
    name, user = f"dms_test_{suffix}", f"dms_{suffix}"
    admin = _admin(mariadb_server)
    cursor = admin.cursor()
    # Bounded waits: the teardown's DROP must fail rather than hang the run.
    cursor.execute("SET SESSION lock_wait_timeout = 60")
    cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    try:
        # "%%": the host '%' (any) in a statement with parameters.
        cursor.execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", [PASSWORD])
        cursor.execute(f"GRANT SELECT ON `{name}`.* TO '{user}'@'%'")
        cursor.execute(f"USE `{name}`")
        cursor.execute(
            """CREATE TABLE accounts (
                id INT PRIMARY KEY, name TEXT, qty INT, big BIGINT, amount DECIMAL(12, 2), ratio DOUBLE,
                active BOOL, born DATE, updated_at TIMESTAMP NULL DEFAULT NULL, logged DATETIME(6) NULL,
                bits BIT(10), dur TIME, note VARCHAR(100))"""
        )
        # The TIMESTAMPs are written as wall times of +08:00: the server stores them in UTC,
        # and the reader must give back the same moments whatever zone either session had.
        cursor.execute("SET time_zone = '+08:00'")
        rows = [_expected_row(i) for i in range(1, ROWS + 1)]
        for row in rows:
            if row["updated_at"] is not None:
                row["updated_at"] = row["updated_at"].replace(tzinfo=None)
        cursor.executemany(
            "INSERT INTO accounts VALUES (%(id)s, %(name)s, %(qty)s, %(big)s, %(amount)s, %(ratio)s, %(active)s, "
            "%(born)s, %(updated_at)s, %(logged)s, %(bits)s, %(dur)s, %(note)s)",
            rows,
        )
        cursor.execute("CREATE TABLE `客户 列表` (`编号` INT, `名称` VARCHAR(20))")
        cursor.execute("INSERT INTO `客户 列表` VALUES (1, '甲'), (2, '乙')")
        cursor.execute("CREATE TABLE `odd``name` (`a b` INT, `c``d` VARCHAR(5))")
        cursor.execute("INSERT INTO `odd``name` VALUES (1, 'x')")
        cursor.execute(f"CREATE TABLE big (id INT PRIMARY KEY, pad VARCHAR({BIG_PAD}))")
        # A plain table: MySQL cannot open a TEMPORARY one several times in a query.
        cursor.execute("CREATE TABLE digits (d INT)")
        cursor.executemany("INSERT INTO digits VALUES (%s)", [(d,) for d in range(10)])
        cursor.execute(
            f"INSERT INTO big SELECT 1 + a.d + 10 * b.d + 100 * c.d + 1000 * e.d + 10000 * f.d, REPEAT('x', {BIG_PAD}) "
            "FROM digits a, digits b, digits c, digits e, digits f"
        )
        yield Database(mariadb_server, name, user)
    finally:
        # A reader left open by a failed test holds a metadata lock in its transaction, which
        # DROP DATABASE would wait for: end the reader's sessions first.
        cursor.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", [user])
        for (session,) in cursor.fetchall():
            with contextlib.suppress(Exception):  # it may have ended meanwhile
                cursor.execute(f"KILL {int(session)}")
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cursor.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        admin.close()


@pytest.fixture
def my_conn(my_database: Database, monkeypatch: pytest.MonkeyPatch) -> str:
    """The Airflow connection CONN_ID to the test database, as AIRFLOW_CONN_* (JSON form)."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", my_database.connection())
    return CONN_ID


@pytest.fixture(params=CLIENTS)
def client_conn(request: pytest.FixtureRequest, my_database: Database, monkeypatch: pytest.MonkeyPatch) -> str:
    """CONN_ID through each of the MySQL provider's clients (its "client" extra)."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", my_database.connection(extra={"client": request.param}))
    return CONN_ID


# ---------------------------------------------------------------- reading


def test_table_is_read_as_text_in_exact_chunks_with_row_numbers(my_conn: str) -> None:
    chunks = _chunks(SqlSource(kind="sql", conn_id=my_conn, table="accounts"), chunk_rows=7)
    assert [c.rows for c in chunks] == [7, 7, 7, 4]
    assert all(not c.malformed for c in chunks)
    columns = list(_expected_row(1))
    assert chunks[0].batch.schema == pa.schema([(ROW_COLUMN, pa.int64()), *((n, pa.string()) for n in columns)])
    rows = _rows(chunks)
    assert [r[ROW_COLUMN] for r in rows] == list(range(1, ROWS + 1))
    assert [r["id"] for r in rows] == [str(i) for i in range(1, ROWS + 1)]  # InnoDB: primary key order
    for i, read in enumerate(rows, 1):
        row = dict(read)
        moment = row.pop("updated_at")
        row.pop(ROW_COLUMN)
        assert row == _expected_text(i), f"row {i}"
        assert _moment(moment) == _expected_row(i)["updated_at"], f"row {i}"
    # Spot checks of the forms the transform reads.
    assert rows[0]["ratio"] == "0.25" and rows[3]["ratio"] == "1" and rows[1]["amount"] == "2.50"
    assert rows[2]["name"] == 'He said "你好",\n再见' and rows[3]["name"] == "𠮷野家🍜"
    assert rows[4]["qty"] == "" and rows[4]["amount"] == "" and rows[6]["active"] == ""
    assert rows[0]["active"] == "0" and rows[1]["active"] == "1"
    assert rows[1]["note"] == "" and rows[2]["note"] == "备注 3"
    assert rows[0]["big"] == "9007199254740994"
    # A TIMESTAMP is a moment: given in UTC, with its offset. A DATETIME is wall time, as written.
    assert rows[0]["updated_at"] == "2025-12-31T17:00:00+00:00" and rows[-1]["updated_at"] == ""
    assert rows[1]["logged"] == "2025-12-31T18:00:00" and rows[5]["logged"] == "2025-12-31T22:00:00.500000"
    # BIT(10) as its number, TIME as MySQL writes a duration (negative, past 24 hours).
    assert rows[0]["bits"] == "37" and rows[24]["bits"] == "925"
    assert rows[1]["dur"] == "-26:00:01" and rows[0]["dur"] == "01:30:00" and rows[24]["dur"] == "25:30:00"


def test_chunk_of_one_and_chunk_larger_than_the_table(my_conn: str) -> None:
    source = SqlSource(kind="sql", conn_id=my_conn, table="accounts")
    ones = _chunks(source, chunk_rows=1)
    assert [c.rows for c in ones] == [1] * ROWS
    assert [c.batch.column(ROW_COLUMN)[0].as_py() for c in ones] == list(range(1, ROWS + 1))
    [whole] = _chunks(source, chunk_rows=1000)
    assert whole.rows == ROWS


def test_both_clients_of_the_provider_give_the_same_text(
    my_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # mysql-connector-python converts some types differently (BIT as a number, not bytes).
    results = []
    for client in CLIENTS:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", my_database.connection(extra={"client": client}))
        results.append(_rows(_chunks(SqlSource(kind="sql", conn_id=CONN_ID, table="accounts"), 10)))
    assert len(results[0]) == ROWS and results[1] == results[0]


def test_zero_dates_and_long_times(client_conn: str) -> None:
    # A zero date is no date to the drivers (None); TIME spans -838:59:59 to 838:59:59.
    query = (
        "SELECT CAST('0000-00-00' AS DATE) AS d, CAST('0000-00-00 00:00:00' AS DATETIME) AS t, "
        "CAST('-838:59:59.5' AS TIME(1)) AS tm"
    )
    rows = _rows(_chunks(SqlSource(kind="sql", conn_id=client_conn, query=query), 10))
    assert rows == [{ROW_COLUMN: 1, "d": "", "t": "", "tm": "-838:59:59.500000"}]


def test_a_big_table_is_read_whole_in_fetch_blocks(my_conn: str) -> None:
    # More rows than one fetch (10,000): the chunks still come out exact, and numbered.
    sizes, last = [], None
    for chunk in iter_sql_chunks(
        SqlSource(kind="sql", conn_id=my_conn, query="SELECT id FROM big"), 30_000, None, None
    ):
        sizes.append(chunk.rows)
        last = chunk.batch.slice(chunk.rows - 1).to_pylist()[0]
    assert sizes == [30_000, 30_000, 30_000, 10_000]
    assert last == {ROW_COLUMN: BIG_ROWS, "id": str(BIG_ROWS)}


def test_the_dispatcher_reads_a_sql_source(my_conn: str) -> None:
    source = SqlSource(kind="sql", conn_id=my_conn, table="accounts", change_column="updated_at")
    context = SourceContext(interval_start=BASE + dt.timedelta(hours=1), interval_end=BASE + dt.timedelta(hours=3))
    assert [r["id"] for r in _rows(list(iter_chunks(source, 10, context)))] == ["1", "2"]


def test_database_qualified_chinese_and_backtick_table_names(my_conn: str, my_database: Database) -> None:
    db = my_database.name
    expected = [{ROW_COLUMN: 1, "编号": "1", "名称": "甲"}, {ROW_COLUMN: 2, "编号": "2", "名称": "乙"}]
    for table in ("客户 列表", "`客户 列表`", f"{db}.客户 列表", f"`{db}`.`客户 列表`"):
        assert _rows(_chunks(SqlSource(kind="sql", conn_id=my_conn, table=table), 100)) == expected, table
    # A backtick in a name is doubled, so it cannot end the quoted name early.
    for table in ("odd`name", "`odd``name`", f"{db}.odd`name"):
        rows = _rows(_chunks(SqlSource(kind="sql", conn_id=my_conn, table=table), 100))
        assert rows == [{ROW_COLUMN: 1, "a b": "1", "c`d": "x"}], table


def test_incremental_window_on_a_timestamp_reads_start_inclusive_end_exclusive(my_conn: str) -> None:
    source = SqlSource(kind="sql", conn_id=my_conn, table="accounts", change_column="updated_at")
    check_window_is_start_inclusive_end_exclusive(source, _chunks, _rows, BASE, ROWS)


def test_incremental_window_on_a_datetime_compares_utc_wall_time(my_conn: str) -> None:
    # `logged` holds UTC wall times; aware bounds are compared as UTC, naive ones as written.
    source = SqlSource(kind="sql", conn_id=my_conn, table="accounts", change_column="logged")
    start = pendulum.instance(BASE + dt.timedelta(hours=5)).in_timezone("Asia/Tokyo")
    rows = _rows(_chunks(source, 10, start, BASE + dt.timedelta(hours=8)))
    assert [(r["id"], r["logged"]) for r in rows] == [
        ("5", "2025-12-31T21:00:00"),
        ("6", "2025-12-31T22:00:00.500000"),
        ("7", "2025-12-31T23:00:00"),
    ]
    naive = _rows(_chunks(source, 10, dt.datetime(2025, 12, 31, 22, 0, 0, 500_000), dt.datetime(2026, 1, 1)))
    assert [r["id"] for r in naive] == ["6", "7"]


def test_change_column_without_interval_reads_everything_in_its_order(my_conn: str) -> None:
    source = SqlSource(
        kind="sql",
        conn_id=my_conn,
        query="SELECT id, updated_at FROM accounts ORDER BY id DESC",
        change_column="updated_at",
    )
    ids = [r["id"] for r in _rows(_chunks(source, 10))]
    # By updated_at; MySQL sorts NULL first (PostgreSQL last), and the reader keeps the database's order.
    assert ids == [str(ROWS)] + [str(i) for i in range(1, ROWS)]


def test_query_source_with_percent_signs_a_comment_and_a_window(my_conn: str) -> None:
    # "%" must survive both with bound parameters (doubled for MySQLdb) and without; a comment
    # on the last line must not swallow the subquery's closing parenthesis.
    query = "SELECT id, name, updated_at FROM accounts WHERE id % 2 = 1 AND name LIKE '客户%' -- odd ones\n;"
    source = SqlSource(kind="sql", conn_id=my_conn, query=query, change_column="updated_at")
    rows = _rows(_chunks(source, 10, BASE + dt.timedelta(hours=5), BASE + dt.timedelta(hours=10)))
    assert [(r["id"], r["name"]) for r in rows] == [("5", "客户05号"), ("7", "客户07号"), ("9", "客户09号")]
    assert list(rows[0]) == [ROW_COLUMN, "id", "name", "updated_at"]
    plain = SqlSource(kind="sql", conn_id=my_conn, query="SELECT id FROM accounts WHERE id % 10 = 0 ORDER BY id DESC")
    assert [r["id"] for r in _rows(_chunks(plain, 10))] == ["20", "10"]  # run as written, its order kept
    sql, params = build_statement(
        source, conn_type="mysql", paramstyle="format", interval_start=BASE, interval_end=BASE + dt.timedelta(hours=1)
    )
    assert "id %% 2 = 1 AND name LIKE '客户%%' -- odd ones\n) dms_source WHERE `updated_at` >= %s" in sql
    assert params == [dt.datetime(2025, 12, 31, 16), dt.datetime(2025, 12, 31, 17)]


def test_the_session_reads_utf8mb4_in_utc_with_a_long_write_timeout(
    my_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reader's own session answers, whatever charset the connection's extras asked for:
    # "utf8" (utf8mb3) would turn 𠮷 into "?".
    query = (
        "SELECT @@session.time_zone AS tz, @@session.net_write_timeout AS nwt, @@character_set_results AS cs, "
        "name FROM accounts WHERE id = 4"
    )
    for client, charset in (("mysqlclient", "utf8"), ("mysqlclient", "latin1"), ("mysql-connector-python", None)):
        extra = {"client": client, **({"charset": charset} if charset else {})}
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", my_database.connection(extra=extra))
        rows = _rows(_chunks(SqlSource(kind="sql", conn_id=CONN_ID, query=query), 10))
        assert rows == [{ROW_COLUMN: 1, "tz": "+00:00", "nwt": "3600", "cs": "utf8mb4", "name": "𠮷野家🍜"}], extra


def _reader_sessions(db: Database) -> list[tuple[str, str]]:
    """(command, statement) of the reader's sessions on the server (its user is the reader's alone)."""
    return [
        (command, info)
        for command, info in _query(
            db.server,
            "SELECT COMMAND, INFO FROM information_schema.PROCESSLIST WHERE USER = %s AND ID <> CONNECTION_ID()",
            [db.user],
        )
    ]


def _wait_until_no_reader_session(db: Database) -> list[tuple[str, str]]:
    deadline = time.monotonic() + 10
    while (left := _reader_sessions(db)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def test_rows_stream_from_the_server_and_the_session_ends(client_conn: str, my_database: Database) -> None:
    with contextlib.closing(
        iter_sql_chunks(SqlSource(kind="sql", conn_id=client_conn, table="big"), 5, None, None)
    ) as chunks:
        first = next(chunks)
        assert first.rows == 5 and first.batch.column("id").to_pylist() == ["1", "2", "3", "4", "5"]
        # 50 MB do not fit in the sockets' buffers: the server is still executing the SELECT,
        # blocked sending the rows the reader has not asked for (a buffered cursor would have
        # read them all before handing over the first).
        assert _reader_sessions(my_database) == [("Query", "SELECT * FROM `big`")]
        more = next(chunks)
        assert more.batch.column(ROW_COLUMN).to_pylist() == [6, 7, 8, 9, 10]
    assert _wait_until_no_reader_session(my_database) == [], "closing the reader must end its database session"


def test_stopping_early_does_not_read_the_rest_of_the_result(client_conn: str, my_database: Database) -> None:
    # The server makes a row every 20 ms, so the whole result takes 20 s or more: the first
    # rows must come as soon as the server sends them, and closing must not wait for the rest
    # (a rollback with the result unread makes mysql.connector read it all first).
    query = "SELECT id, pad, SLEEP(0.02) AS nap FROM big WHERE id <= 1000"
    started = time.monotonic()
    chunks = iter_sql_chunks(SqlSource(kind="sql", conn_id=client_conn, query=query), 5, None, None)
    try:
        assert next(chunks).rows == 5
        first = time.monotonic() - started
    finally:
        started = time.monotonic()
        chunks.close()
        closed = time.monotonic() - started
    assert first < 10 and closed < 5, (first, closed)
    assert _wait_until_no_reader_session(my_database) == []


def test_a_finished_read_ends_its_session(my_conn: str, my_database: Database) -> None:
    assert len(_chunks(SqlSource(kind="sql", conn_id=my_conn, table="accounts"), 10)) == 3
    assert _wait_until_no_reader_session(my_database) == []


# ---------------------------------------------------------------- errors


def test_missing_table_names_the_table_and_connection_but_not_the_password(my_conn: str) -> None:
    with pytest.raises(SourceError) as exc:
        _chunks(SqlSource(kind="sql", conn_id=my_conn, table="nope"), 10)
    message = str(exc.value)
    assert "'nope'" in message and my_conn in message and "doesn't exist" in message, message
    assert PASSWORD not in message and "Traceback" not in message
    assert exc.value.__cause__ is None and exc.value.__suppress_context__


def test_sql_errors_are_source_errors_without_the_password(my_conn: str) -> None:
    with pytest.raises(SourceError) as exc:
        _chunks(SqlSource(kind="sql", conn_id=my_conn, query="SELEC id FROM accounts"), 10)
    message = str(exc.value)
    assert "SQL syntax" in message and "SELEC id" in message and my_conn in message, message
    assert PASSWORD not in message
    with pytest.raises(SourceError, match="no_such_column"):
        _chunks(
            SqlSource(kind="sql", conn_id=my_conn, table="accounts", change_column="no_such_column"),
            10,
            BASE,
            BASE + dt.timedelta(hours=1),
        )


def test_connection_failures_never_show_the_password(my_database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    # The database name holds the password, so the server's own message echoes it: it is masked.
    monkeypatch.setenv("AIRFLOW_CONN_DMS_TEST_MYSQL_BAD", my_database.connection(schema=f"missing_{PASSWORD}"))
    with pytest.raises(SourceError) as exc:
        _chunks(SqlSource(kind="sql", conn_id="dms_test_mysql_bad", table="accounts"), 10)
    message = str(exc.value)
    assert "cannot connect" in message and "dms_test_mysql_bad" in message and "missing_***" in message, message
    assert PASSWORD not in message
    # A wrong password: refused, and the one given is not shown either.
    monkeypatch.setenv("AIRFLOW_CONN_DMS_TEST_MYSQL_BAD", my_database.connection(password=PASSWORD + "-wrong"))
    with pytest.raises(SourceError, match="cannot connect.*Access denied") as exc:
        _chunks(SqlSource(kind="sql", conn_id="dms_test_mysql_bad", table="accounts"), 10)
    assert PASSWORD not in str(exc.value)


# ---------------------------------------------------------------- values (no database)


def test_time_values_read_as_mysql_writes_them() -> None:
    assert value_text(dt.timedelta(hours=13, minutes=45, seconds=7)) == "13:45:07"
    assert value_text(dt.timedelta(hours=838, minutes=59, seconds=59)) == "838:59:59"
    assert value_text(-dt.timedelta(minutes=1, microseconds=500)) == "-00:01:00.000500"
    assert value_text(dt.timedelta(0)) == "00:00:00"
