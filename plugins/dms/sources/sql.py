"""A table or query of a database, streamed through its Airflow connection in chunks of text.

The connection's own provider hook connects (PostgreSQL, MySQL/MariaDB and any other DB-API
hook), so the user configures the database once, in Airflow. Rows are fetched through a
server-side cursor where the driver has one (a named cursor for psycopg, SSCursor for
MySQLdb), a block at a time, so memory is bounded by the chunk and not by the table.

Values become text by the rules of `dms.sources.base.to_text`, so a number or a date reads
the same whether it came from a database or a Parquet export: integers as digits, whole
floats without ".0", decimals as written by the database ("12.50"), booleans true/false,
dates YYYY-MM-DD, timestamps ISO 8601 (a fraction only when there is one, +HH:MM when they
have a zone) and NULL as "". Row numbers are 1-based positions in
the result.

MySQL and MariaDB differ in ways the reader evens out. Their session is set to UTC, so a
TIMESTAMP (stored in UTC, shown in the session's zone) reads as a UTC moment (+00:00) and
compares right with the interval's bounds; NOW() in a query is UTC too. DATETIME has no zone
and reads as written. The connection reads utf8mb4 whatever charset it was given, since
"utf8" (utf8mb3) turns characters outside the BMP such as 𠮷 into "?". BOOL is TINYINT(1)
and reads as the digits 1/0 (a field's true_values/false_values take them), BIT(n) as its
number, TIME (a duration, possibly negative or past 24 h) as [-]HH:MM:SS[.ffffff], and a zero
date ("0000-00-00"), which the drivers cannot represent, as "". NULLs sort first in MySQL and
last in PostgreSQL: a change-column read without an interval keeps the database's order.

With `change_column` and a data interval, only the rows whose change column lies in
[start, end) are read, with the bounds as bound parameters; such a read is ordered by the
change column so that a re-run reads the same rows in the same order.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any
from uuid import UUID

import pyarrow as pa

from dms.errors import SourceError
from dms.sources.base import ROW_COLUMN, SourceChunk, float_text, rechunk
from dms.spec import SqlSource

# Rows fetched from the server at a time (fewer for a smaller chunk): enough to amortise a
# round trip, few enough that the Python tuples of one block stay small next to the chunk.
MAX_FETCH_ROWS = 10_000
# The alias of a query wrapped as a subquery (without AS, which Oracle refuses).
_SUBQUERY_ALIAS = "dms_source"
_PLAIN_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*\Z")
# conn_type -> how the database folds an unquoted identifier. Quoting a name keeps it from
# being folded, so a plain name is folded here first: `table: Accounts` then finds the table
# `accounts` that `CREATE TABLE Accounts` made in PostgreSQL, as it would unquoted in psql.
_FOLD = {"postgres": str.lower, "redshift": str.lower, "oracle": str.upper, "snowflake": str.upper}
_MYSQL_TYPES = {"mysql", "mariadb"}
# The MySQL DB-API drivers: MySQLdb (mysqlclient, the MySQL provider's default), PyMySQL and
# mysql.connector (the provider's "client": "mysql-connector-python" extra).
_MYSQL_DRIVERS = {"MySQLdb", "pymysql", "mysql.connector"}
_MYSQL_SESSION = (
    # TIMESTAMP values are stored in UTC and converted to the session's zone (the server's by
    # default): in UTC they read as UTC moments, and the interval's bounds, sent as naive UTC
    # (see _bound_value), compare right with them whatever zone the server runs in.
    "SET time_zone = '+00:00', "
    # A streamed result keeps the server writing to the client while the pipeline stages the
    # previous chunk; once it cannot write for net_write_timeout (60 s by default) it drops the
    # connection mid-read ("Lost connection to MySQL server during query").
    "net_write_timeout = 3600"
)
# Column type codes of the MySQL protocol, the same in every MySQL driver's description.
_MYSQL_TIMESTAMP, _MYSQL_BIT = 7, 16


def iter_sql_chunks(
    source: SqlSource,
    chunk_rows: int,
    interval_start: dt.datetime | None,
    interval_end: dt.datetime | None,
) -> Iterator[SourceChunk]:
    """Stream the table or query of `source` as `SourceChunk`s of `chunk_rows` rows.

    Nothing connects until the first chunk is asked for. Every problem (unknown connection,
    a connection that is not a database, a missing table, an SQL error) raises `SourceError`
    naming the connection and the table or query; the connection's password never appears.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
    yield from rechunk(_batches(source, min(chunk_rows, MAX_FETCH_ROWS), interval_start, interval_end), chunk_rows)


def describe(source: SqlSource) -> str:
    """How errors name a SQL source: its connection and its table, or the start of its query."""
    if source.table is not None:
        return f"SQL source (connection {source.conn_id!r}, table {source.table!r})"
    query = " ".join((source.query or "").split())
    return f"SQL source (connection {source.conn_id!r}, query {query[:120] + ('…' if len(query) > 120 else '')!r})"


# ---------------------------------------------------------------- statement


def build_statement(
    source: SqlSource,
    *,
    conn_type: str,
    quote_format: str = '"{}"',
    paramstyle: str = "pyformat",
    interval_start: dt.datetime | None = None,
    interval_end: dt.datetime | None = None,
) -> tuple[str, dict[str, Any] | list[Any] | None]:
    """The SELECT to run and its parameters (None when it has none).

    A table is read with ``SELECT *`` (its name quoted; "schema.table" is two names). A query
    runs as written, unless a change column filters or orders it: then it is wrapped as a
    subquery. The interval's bounds are always bound parameters, never text in the SQL.
    """
    if source.table is not None:
        sql = f"SELECT * FROM {quote_identifier(source.table, conn_type=conn_type, quote_format=quote_format)}"
    else:
        # A trailing ";" is fine on its own but not inside the subquery.
        sql = (source.query or "").strip().rstrip(";").rstrip()
    if not source.change_column:
        return sql, None
    if source.query is not None:
        # The newline ends a "-- comment" on the query's last line, which would swallow the ")".
        sql = f"SELECT * FROM ({sql}\n) {_SUBQUERY_ALIAS}"
    column = quote_identifier(source.change_column, conn_type=conn_type, quote_format=quote_format)
    # Half-open [start, end): a row changed exactly at `end` belongs to the next run.
    bounds = [
        (name, op, value)
        for name, op, value in (("start", ">=", interval_start), ("end", "<", interval_end))
        if value is not None
    ]
    if not bounds:
        return f"{sql} ORDER BY {column}", None
    if paramstyle in ("format", "pyformat"):
        # With parameters these drivers read every "%" as a placeholder, so the ones the
        # user wrote (LIKE 'a%', x % 2) must be doubled; without parameters they are left alone.
        sql, column = sql.replace("%", "%%"), column.replace("%", "%%")
    values = {name: _bound_value(value, conn_type) for name, _, value in bounds}
    marks = {
        "pyformat": lambda name, _: f"%({name})s",
        "named": lambda name, _: f":{name}",
        "format": lambda _, __: "%s",
        "qmark": lambda _, __: "?",
        "numeric": lambda _, position: f":{position}",
    }
    if paramstyle not in marks:
        raise SourceError(f"{describe(source)}: the database driver's parameter style {paramstyle!r} is not supported")
    where = " AND ".join(
        f"{column} {op} {marks[paramstyle](name, position)}" for position, (name, op, _) in enumerate(bounds, 1)
    )
    params: dict[str, Any] | list[Any] = values if paramstyle in ("pyformat", "named") else list(values.values())
    return f"{sql} WHERE {where} ORDER BY {column}", params


def quote_identifier(name: str, *, conn_type: str, quote_format: str = '"{}"') -> str:
    """`name` ("table" or "schema.table") quoted for the database, safe whatever it contains.

    A part already quoted by the user is kept as written; a plain part is folded the way the
    database folds unquoted names (see `_FOLD`); anything else is quoted as written, with
    its quote characters doubled, so no name can end the identifier early.
    """
    if conn_type in _MYSQL_TYPES:
        opening, closing = "`", "`"
    else:
        opening, _, closing = quote_format.partition("{}")
        if len(opening) != 1 or len(closing) != 1:
            opening, closing = '"', '"'
    fold = _FOLD.get(conn_type)
    quoted = []
    for part in _split_identifier(name, opening, closing):
        if len(part) >= 2 and part[0] == opening and part[-1] == closing:
            quoted.append(part)
            continue
        if not part:
            raise ValueError(f"{name!r} is not a valid table or column name")
        if fold is not None and _PLAIN_IDENTIFIER.match(part):
            part = fold(part)
        escaped = part.replace(closing, closing * 2)
        quoted.append(f"{opening}{escaped}{closing}")
    return ".".join(quoted)


def _split_identifier(name: str, opening: str, closing: str) -> list[str]:
    """Split on the dots that are not inside a quoted part, checking the quoting is well formed."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(name):
        char = name[i]
        if char == opening and not current:
            end = i + 1
            while True:
                end = name.find(closing, end)
                if end < 0:
                    raise ValueError(f"{name!r} has an unterminated quoted name")
                if name[end + 1 : end + 2] == closing:  # a doubled quote inside the name
                    end += 2
                    continue
                break
            current.append(name[i : end + 1])
            i = end + 1
            if i < len(name) and name[i] != ".":
                raise ValueError(f"{name!r}: expected '.' after the quoted name {name[:i]!r}")
            continue
        if char == ".":
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current).strip())
    return parts


def _bound_value(value: dt.datetime, conn_type: str) -> dt.datetime:
    # Airflow's interval bounds are pendulum DateTimes; drivers adapt plain datetimes surely.
    plain = dt.datetime.fromisoformat(value.isoformat())
    if conn_type in ("postgres", "redshift") or plain.tzinfo is None:
        return plain  # psycopg compares an aware datetime with timestamp and timestamptz alike
    # Other drivers write an aware datetime's offset into the literal, which MySQL refuses;
    # their DATETIME columns conventionally hold UTC.
    return plain.astimezone(dt.UTC).replace(tzinfo=None)


# ---------------------------------------------------------------- reading


def _batches(
    source: SqlSource, fetch_rows: int, interval_start: dt.datetime | None, interval_end: dt.datetime | None
) -> Iterator[pa.RecordBatch]:
    label = describe(source)
    hook, conn_type, secrets = _hook(source, label)
    try:
        conn = hook.get_conn()
    except Exception as exc:
        raise SourceError(f"{label}: cannot connect: {_message(exc, secrets)}") from None
    mysql = False
    try:
        driver = _driver_module(conn)
        mysql = getattr(driver, "__name__", "") in _MYSQL_DRIVERS
        paramstyle = getattr(driver, "paramstyle", "pyformat") if driver is not None else "pyformat"
        try:
            sql, params = build_statement(
                source,
                conn_type=conn_type,
                quote_format=getattr(hook, "escape_word_format", '"{}"'),
                paramstyle=paramstyle,
                interval_start=interval_start,
                interval_end=interval_end,
            )
        except ValueError as exc:
            raise SourceError(f"{label}: {exc}") from None
        rows_read = 0
        try:
            if mysql:
                _prepare_mysql_session(conn, driver.__name__)
            cursor = _server_cursor(conn, driver, fetch_rows)
            if params is None:
                cursor.execute(sql)
            else:
                cursor.execute(sql, params)
            if cursor.description is None:
                raise SourceError(f"{label}: the statement returns no rows (is it a SELECT?)")
            names = _column_names(cursor.description, label)
            texts = _mysql_column_texts(cursor.description) if mysql else [value_text] * len(names)
            while True:
                rows = cursor.fetchmany(fetch_rows)
                if not rows:
                    break
                yield _to_batch(names, rows, texts)
                rows_read += len(rows)
            cursor.close()
        except SourceError:
            raise
        except Exception as exc:
            where = f" after {rows_read} rows" if rows_read else ""
            raise SourceError(f"{label}: the database refused the read{where}: {_message(exc, secrets)}") from None
    finally:
        # Hanging up ends a MySQL session and its transaction; a rollback first would make
        # mysql.connector read the rest of an unfinished streamed result (maybe the whole table)
        # just to bring the connection back in step.
        _close(conn, rollback=not mysql)


def _hook(source: SqlSource, label: str) -> tuple[Any, str, list[str]]:
    """The connection's provider hook, its conn_type and the secrets to keep out of messages."""
    from airflow.sdk import BaseHook

    try:
        connection = BaseHook.get_connection(source.conn_id)
    except Exception as exc:
        raise SourceError(f"{label}: the Airflow connection is not defined ({type(exc).__name__})") from None
    secrets = [connection.password] if connection.password else []
    secrets += [str(v) for k, v in connection.extra_dejson.items() if v and _secret_key(k)]
    try:
        hook = connection.get_hook()
    except Exception as exc:
        raise SourceError(
            f"{label}: no database hook for connection type {connection.conn_type!r}: {_message(exc, secrets)}"
        ) from None
    from airflow.providers.common.sql.hooks.sql import DbApiHook

    # Every SQL provider's hook is a DbApiHook; an HTTP or Redis hook also has get_conn.
    if not isinstance(hook, DbApiHook):
        raise SourceError(f"{label}: a {connection.conn_type!r} connection is not a database connection")
    return hook, (connection.conn_type or "").lower(), secrets


def _secret_key(key: str) -> bool:
    return any(word in key.lower() for word in ("password", "secret", "token", "key"))


def _driver_module(conn: Any) -> Any:
    """The DB-API module of a connection (psycopg, psycopg2, MySQLdb...), for its paramstyle.

    The shortest enclosing package that declares a paramstyle: the root package for most
    drivers, but mysql.connector's connections live under `mysql`, which declares none.
    """
    parts = type(conn).__module__.split(".")
    for length in range(1, len(parts) + 1):
        try:
            module = importlib.import_module(".".join(parts[:length]))
        except ImportError:
            return None
        if hasattr(module, "paramstyle"):
            return module
    return None


def _prepare_mysql_session(conn: Any, driver_name: str) -> None:
    """utf8mb4, UTC and a long write timeout for a MySQL/MariaDB read (see _MYSQL_SESSION)."""
    # The charset through the driver, so that it also decodes with it: a charset of the
    # connection's extras or the client library's default (latin1 in old ones, "utf8" =
    # utf8mb3 in some setups) would turn 4-byte characters into "?".
    if driver_name == "mysql.connector":
        if conn.charset != "utf8mb4":
            conn.set_charset_collation("utf8mb4")
    elif conn.character_set_name() != "utf8mb4":
        conn.set_character_set("utf8mb4")
    cursor = conn.cursor()
    try:
        cursor.execute(_MYSQL_SESSION)
    finally:
        cursor.close()


def _server_cursor(conn: Any, driver: Any, fetch_rows: int) -> Any:
    """A cursor that leaves the result on the server and hands it over a block at a time."""
    name = getattr(driver, "__name__", "")
    if name in ("psycopg", "psycopg2"):
        # A named cursor is a server-side DECLAREd cursor; it lives in a transaction, so
        # the connection must not be in autocommit mode.
        if getattr(conn, "autocommit", False):
            conn.autocommit = False
        cursor = conn.cursor(name="dms_sql_source")
        cursor.itersize = fetch_rows
        return cursor
    if name in ("MySQLdb", "pymysql"):
        # The default MySQL cursors buffer the whole result in the client.
        return conn.cursor(importlib.import_module(f"{name}.cursors").SSCursor)
    if name == "mysql.connector":
        # Unbuffered unless the connection was opened with buffered=True; ask for it anyway.
        return conn.cursor(buffered=False)
    return conn.cursor()


def _column_names(description: Sequence[Sequence[Any]], label: str) -> list[str]:
    names = [str(column[0]) for column in description]
    if not names:
        raise SourceError(f"{label}: the result has no columns")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SourceError(f"{label}: the result has several columns named {repeated}; give them distinct aliases")
    if ROW_COLUMN in names:
        raise SourceError(f"{label}: the column name {ROW_COLUMN!r} is reserved for row numbers; alias it")
    return names


def _mysql_column_texts(description: Sequence[Sequence[Any]]) -> list[Callable[[Any], str]]:
    """How each column's values become text, where a MySQL type needs more than its Python value."""
    texts: list[Callable[[Any], str]] = []
    for column in description:
        type_code = column[1]
        if type_code == _MYSQL_TIMESTAMP:
            texts.append(_utc_timestamp_text)
        elif type_code == _MYSQL_BIT:
            texts.append(_bit_text)
        else:
            texts.append(value_text)
    return texts


def _utc_timestamp_text(value: Any) -> str:
    # The drivers give a TIMESTAMP as a naive datetime in the session's zone, UTC (_MYSQL_SESSION).
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value_text(value)


def _bit_text(value: Any) -> str:
    # MySQLdb and PyMySQL give BIT(n) as big-endian bytes (b"\x01" would read as a control
    # character); mysql.connector gives the number already.
    if isinstance(value, bytes | bytearray):
        return str(int.from_bytes(value, "big"))
    return value_text(value)


def _to_batch(names: list[str], rows: Sequence[Any], texts: Sequence[Callable[[Any], str]]) -> pa.RecordBatch:
    if isinstance(rows[0], Mapping):  # a dict cursor set in the connection's extras
        rows = [tuple(row.values()) for row in rows]
    columns = zip(*rows, strict=True)
    arrays = [pa.array([text(v) for v in column], pa.string()) for text, column in zip(texts, columns, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _close(conn: Any, *, rollback: bool = True) -> None:
    # The read changed nothing: end its transaction (and server-side cursor) and hang up.
    # A failure here must not hide the real error of the read.
    for step in ("rollback", "close") if rollback else ("close",):
        with contextlib.suppress(Exception):
            getattr(conn, step)()


def _message(exc: BaseException, secrets: list[str]) -> str:
    """The first line of a driver's error (the rest is a caret under the SQL), with secrets masked."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text[:1000]


# ---------------------------------------------------------------- values


def value_text(value: Any) -> str:
    """One database value as the text `to_text` makes of the same value in an Arrow column."""
    if value is None:
        return ""
    kind = type(value)
    if kind is str:
        return value
    convert = _CONVERTERS.get(kind)
    if convert is None:
        convert = _converter_for(kind)
        _CONVERTERS[kind] = convert
    return convert(value)


def _decimal_text(value: Decimal) -> str:
    # "f" keeps the scale the database gave (12.50) and never uses an exponent (1E+3).
    return format(value, "f")


def _datetime_text(value: dt.datetime) -> str:
    # Python's ISO form is to_text's: a fraction only when there is one, +HH:MM when zoned.
    # Called on the base class so that subclasses (pendulum) cannot change the form.
    return dt.datetime.isoformat(value)


def _bytes_text(value: bytes | bytearray | memoryview) -> str:
    data = bytes(value)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # Not text (an image, a hash): PostgreSQL's hex form, rather than failing the read
        # for a column the spec may not even map.
        return "\\x" + data.hex()


def _timedelta_text(value: dt.timedelta) -> str:
    # MySQL's TIME is a duration, which the drivers give as a timedelta: written as MySQL
    # writes it ([-]HH:MM:SS[.ffffff], hours past 24 allowed), which for a time of day is
    # time.isoformat's form, not str(timedelta)'s "-2 days, 21:59:59".
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    seconds, fraction = divmod(abs(micros), 1_000_000)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{'-' if micros < 0 else ''}{hours:02d}:{minutes:02d}:{seconds:02d}"
    return f"{text}.{fraction:06d}" if fraction else text


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


_CONVERTERS: dict[type, Any] = {
    bool: lambda v: "true" if v else "false",
    int: lambda v: str(int(v)),
    float: float_text,
    Decimal: _decimal_text,
    dt.datetime: _datetime_text,
    dt.date: dt.date.isoformat,
    dt.time: dt.time.isoformat,
    dt.timedelta: _timedelta_text,
    bytes: _bytes_text,
    bytearray: _bytes_text,
    memoryview: _bytes_text,
    UUID: str,
    dict: _json_text,
    list: _json_text,
    tuple: _json_text,
}


# The types _converter_for tries, in order (see there).
_BASE_TYPES = (
    bool,
    int,
    float,
    Decimal,
    dt.datetime,
    dt.date,
    dt.time,
    dt.timedelta,
    bytes,
    bytearray,
    memoryview,
    UUID,
)


def _converter_for(kind: type) -> Any:
    # Subclasses (pendulum's DateTime, numpy's float64, IntEnum...) by their base type;
    # the order matters: bool before int, datetime before date.
    for base in _BASE_TYPES:
        if issubclass(kind, base):
            return _CONVERTERS[base]
    if issubclass(kind, str):
        return str
    if issubclass(kind, (Mapping, list, tuple)):
        return _json_text
    return str
