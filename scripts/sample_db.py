"""Create the legacy ERP sample database (dms_legacy_erp) and load include/data/legacy_erp/invoices.sql.

    .venv/bin/python -m scripts.sample_db [--host 127.0.0.1] [--port 5432] [--user postgres] [--password ...]

Idempotent: the SQL drops and re-creates its schema. Used by `make demo` and the tests.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SQL = ROOT / "include" / "data" / "legacy_erp" / "invoices.sql"
DATABASE = "dms_legacy_erp"


def load_sample_db(
    host: str = "127.0.0.1",
    port: int = 5432,
    database: str = DATABASE,
    user: str = "postgres",
    password: str | None = None,
) -> None:
    import psycopg
    from psycopg import sql

    login = {"host": host, "port": port, "user": user, "password": password, "autocommit": True}
    with psycopg.connect(dbname="postgres", **login) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone()
        if not exists:
            admin.execute(
                sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0").format(sql.Identifier(database))
            )
    with psycopg.connect(dbname=database, **login) as conn:
        conn.execute(SQL.read_text(encoding="utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--user", default="postgres")
    parser.add_argument("--password", default=None)
    args = parser.parse_args()
    load_sample_db(args.host, args.port, user=args.user, password=args.password)
    print(f"loaded {SQL.relative_to(ROOT)} into {DATABASE} on {args.host}:{args.port}")


if __name__ == "__main__":
    main()
