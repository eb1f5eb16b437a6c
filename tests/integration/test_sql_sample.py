"""The SQL sample: invoices from a PostgreSQL database, nightly and incremental, into Invoice__c."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pendulum
import pytest

from scripts.sample_db import DATABASE, load_sample_db
from scripts.services import EmulatorProcess, PostgresServer
from tests.conftest import ROOT

pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.fixture
def legacy_erp(postgres_server: PostgresServer, dms_connections) -> Iterator[None]:
    load_sample_db(postgres_server.host, postgres_server.port)
    os.environ["AIRFLOW_CONN_LEGACY_ERP"] = json.dumps(
        {
            "conn_type": "postgres",
            "host": postgres_server.host,
            "port": postgres_server.port,
            "schema": DATABASE,
            "login": "postgres",
        }
    )
    yield
    os.environ.pop("AIRFLOW_CONN_LEGACY_ERP", None)


def _dag(dag_id: str) -> Any:
    from dms.dag_factory import build_dags

    return build_dags(ROOT / "include" / "migrations")[dag_id]


def _invoices(emulator: EmulatorProcess) -> dict[str, dict[str, Any]]:
    return {r["Legacy_Id__c"]: r for r in emulator.admin("/__emulator/export/Invoice__c")["records"]}


def _summary(env: dict[str, str], dag_id: str, run_id: str) -> dict[str, Any]:
    safe = run_id.replace(":", "_").replace("+", "_")
    return json.loads((Path(env["DMS_RESULTS_DIR"]) / dag_id / safe / "summary.json").read_text())


def _updated_at(postgres_server: PostgresServer) -> dict[str, dt.datetime]:
    import psycopg

    with psycopg.connect(
        host=postgres_server.host, port=postgres_server.port, user="postgres", dbname=DATABASE
    ) as conn:
        return dict(conn.execute("SELECT invoice_no, updated_at FROM erp.invoices").fetchall())


def test_full_refresh_loads_every_invoice_linked_to_its_account(
    emulator: EmulatorProcess, dms_connections, legacy_erp
) -> None:
    assert _dag("dms_legacy_crm_accounts").test().state == "success"
    accounts = {a["Legacy_Id__c"]: a["Id"] for a in emulator.admin("/__emulator/export/Account")["records"]}
    run = _dag("dms_legacy_erp_invoices").test(run_conf={"full_refresh": True})
    assert run.state == "success"
    invoices = _invoices(emulator)
    assert len(invoices) == 40
    first = invoices["INV-2026-0001"]
    assert first["Account__c"] == accounts["C0002"]
    assert (first["Amount__c"], first["Issued_On__c"], first["Status__c"]) == (336243.14, "2026-01-01", "Issued")
    assert (first["Paid__c"], first["Notes__c"]) == (False, "年度服务费")
    assert invoices["INV-2026-0002"]["Paid__c"] is True
    assert invoices["INV-2026-0004"]["Notes__c"] is None  # NULL in the database stays empty

    counts = _summary(dms_connections, "dms_legacy_erp_invoices", run.run_id)["objects"]["invoices"]
    assert (counts["source"], counts["loaded"], counts["rejected"], counts["failed"]) == (43, 40, 3, 0)
    with open(counts["rejects_csv"], encoding="utf-8") as fh:
        rejects = {r["key"]: r for r in csv.DictReader(fh)}
    assert {k: r["code"] for k, r in rejects.items()} == {
        "INV-2026-0041": "MISSING_PARENT",
        "INV-2026-0042": "VALUE_MAP",
        "INV-2026-0043": "FORMAT",
    }
    assert rejects["INV-2026-0041"]["row"] == "41"  # the 41st row the query returned (ordered by updated_at)


def test_scheduled_run_reads_only_its_data_interval(
    emulator: EmulatorProcess, dms_connections, legacy_erp, postgres_server: PostgresServer
) -> None:
    assert _dag("dms_legacy_crm_accounts").test().state == "success"
    dag = _dag("dms_legacy_erp_invoices")
    # The nightly run at 02:00 Shanghai time on 4 January covers 3 Jan 02:00 to 4 Jan 02:00.
    run = dag.test(logical_date=pendulum.datetime(2026, 1, 3, 2, tz="Asia/Shanghai"))
    assert run.state == "success"
    start, end = run.data_interval_start, run.data_interval_end
    assert end - start == dt.timedelta(days=1)
    expected = {k for k, t in _updated_at(postgres_server).items() if start <= t < end}
    assert expected  # the sample has rows on every day
    assert set(_invoices(emulator)) == expected
