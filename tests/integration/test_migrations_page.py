"""The Migrations page (plugins/dms/plugin.py) inside Airflow's real API app.

The app is Airflow's own (``create_app``), which finds the plugin through the plugins
folder and mounts it under /dms; audit records are written with ``Audit`` into the
session's pouchdb-server; users log in through the SimpleAuthManager's ``/auth/token``
with the password Airflow generated, as the UI does. Nothing here is mocked.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dms.audit import Audit
from scripts.audit_server import AuditServer
from scripts.services import free_port

pytestmark = pytest.mark.usefixtures("airflow_db")

DAG_ID = "dms_legacy_crm_accounts"
OTHER_DAG_ID = "dms_legacy_crm_full"
RUN_ID = "manual__2026-01-02T03:04:05.678+00:00"
_databases = itertools.count()


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def airflow_app(airflow_db: None) -> Iterator[Any]:
    """Airflow's API app (core part), as the api-server builds it, with its plugins mounted."""
    from airflow.api_fastapi.app import create_app, purge_cached_app

    app = create_app(apps="core")
    yield app
    purge_cached_app()


@pytest.fixture
def client(airflow_app: Any) -> Iterator[TestClient]:
    # Cookies stay per test: a client that logged in never leaks its cookie into another test.
    with TestClient(airflow_app) as test_client:
        yield test_client


@pytest.fixture
def token(client: TestClient) -> str:
    """A JWT from Airflow's login endpoint, for the admin user and the password Airflow generated."""
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    password = SimpleAuthManager.get_passwords()["admin"]
    response = client.post("/auth/token", json={"username": "admin", "password": password})
    assert response.status_code == 201, response.text
    return response.json()["access_token"]


@pytest.fixture
def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "results"
    root.mkdir()
    monkeypatch.setenv("DMS_RESULTS_DIR", str(root))
    return root.resolve()


@pytest.fixture
def audit(audit_server: AuditServer, monkeypatch: pytest.MonkeyPatch, results: Path) -> Audit:
    """An Audit on a database of this test's own, which the page reads too."""
    from dms.hooks.cloudant import DmsCloudantHook

    database = f"dms_audit_page_{next(_databases)}"
    monkeypatch.setenv("AIRFLOW_CONN_CLOUDANT_DEFAULT", json.dumps({"conn_type": "cloudant", "host": audit_server.url}))
    monkeypatch.setenv("DMS_AUDIT_DATABASE", database)
    return Audit(DmsCloudantHook().get_conn(), database)


def write_run(
    audit: Audit,
    results: Path,
    dag_id: str,
    run_id: str,
    objects: dict[str, dict[str, int]],
    *,
    status: str = "success",
    problems: list[str] | None = None,
) -> Path:
    """A run record and its reports, laid out the way ReconcileOperator writes them."""
    from dms.operators.reconcile import write_csv

    out_dir = results / dag_id / run_id.replace(":", "_").replace("+", "_")
    summary: dict[str, Any] = {"dag_id": dag_id, "run_id": run_id, "dry_run": False, "objects": {}}
    for name, counts in objects.items():
        paths = {kind: out_dir / f"{name}_{kind}.csv" for kind in ("rejects", "errors", "success")}
        write_csv(paths["rejects"], ["row", "key", "field", "reason", "code"], [[8, "C0007", "Name", "empty", "REQ"]])
        write_csv(paths["errors"], ["row", "key", "salesforce_id", "error_code", "message"], [])
        write_csv(paths["success"], ["row", "key", "salesforce_id", "created"], [[2, "C0001", "001000000000001", True]])
        summary["objects"][name] = {
            **counts,
            "rejects_csv": str(paths["rejects"]),
            "errors_csv": str(paths["errors"]),
            "success_csv": str(paths["success"]),
        }
    summary["status"] = status
    summary["problems"] = problems or []
    audit.write_run(dag_id, run_id, {"type": "run", **summary, "spec": dag_id.removeprefix("dms_")})
    return out_dir


ACCOUNTS = {"source": 12, "ready": 8, "rejected": 4, "loaded": 8, "failed": 0, "created": 8, "chunks": 3}
CONTACTS = {"source": 30, "ready": 27, "rejected": 3, "loaded": 25, "failed": 2, "created": 25, "chunks": 1}


def _files_url(dag_id: str, run_id: str, object_name: str, kind: str) -> str:
    from urllib.parse import quote

    return f"/dms/api/runs/{quote(dag_id, safe='')}/{quote(run_id, safe='')}/files/{object_name}/{kind}.csv"


# -- authentication ------------------------------------------------------------------------


def test_requests_without_a_valid_airflow_token_are_refused(client: TestClient, audit: Audit, results: Path) -> None:
    import jwt
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    write_run(audit, results, DAG_ID, RUN_ID, {"accounts": ACCOUNTS})
    urls = ["/dms/api/runs", f"/dms/api/runs/{DAG_ID}/{RUN_ID}", _files_url(DAG_ID, RUN_ID, "accounts", "rejects")]
    admin = SimpleAuthManagerUser(username="admin", role="admin")
    expired = get_auth_manager().generate_jwt(admin, expiration_time_in_seconds=-60)
    forged = jwt.encode({"sub": "admin", "role": "admin", "aud": "apache-airflow"}, "not-the-secret-" * 5, "HS512")
    for url in urls:
        assert client.get(url).status_code == 401, url
        assert client.get(url, headers={"Authorization": "Bearer not-a-jwt"}).status_code == 403, url
        assert client.get(url, headers={"Authorization": f"Bearer {forged}"}).status_code == 403, url
        assert client.get(url, headers={"Authorization": f"Bearer {expired}"}).status_code == 401, url
        client.cookies.set("_token", forged)
        assert client.get(url).status_code == 403, url
        client.cookies.clear()

    # The page sends an anonymous browser to Airflow's login, and back to the page after it.
    page = client.get("/dms/migrations?dag=x", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/auth/login?next=%2Fdms%2Fmigrations%3Fdag%3Dx"
    assert "12" not in page.text


def test_the_ui_cookie_authenticates_the_page(client: TestClient, token: str, audit: Audit, results: Path) -> None:
    write_run(audit, results, DAG_ID, RUN_ID, {"accounts": ACCOUNTS})
    client.cookies.set("_token", token)
    assert client.get("/dms/api/runs").status_code == 200
    page = client.get("/dms/migrations")
    assert page.status_code == 200
    assert "<form" in page.text and "id='dms-objects'" in page.text


# -- listing and counts --------------------------------------------------------------------


def test_listing_has_every_run_newest_first_with_status_and_counts(
    client: TestClient, auth: dict[str, str], audit: Audit, results: Path
) -> None:
    write_run(audit, results, DAG_ID, "manual__first", {"accounts": ACCOUNTS})
    write_run(
        audit,
        results,
        OTHER_DAG_ID,
        RUN_ID,
        {"accounts": ACCOUNTS, "contacts": CONTACTS},
        status="failed",
        problems=["contacts: 2 of 30 rows failed in Salesforce (6.67% > max_error_rate 0.00%)"],
    )
    # Chunk records share the database; they are not runs.
    audit.write_chunk(DAG_ID, "manual__first", "accounts", 0, {"rows": 5})

    response = client.get("/dms/api/runs", headers=auth)
    assert response.status_code == 200
    runs = response.json()["runs"]
    assert [(r["dag_id"], r["run_id"], r["status"]) for r in runs] == [
        (OTHER_DAG_ID, RUN_ID, "failed"),
        (DAG_ID, "manual__first", "success"),
    ]
    newest = runs[0]
    assert newest["objects"]["contacts"] == CONTACTS
    assert newest["objects"]["accounts"] == ACCOUNTS
    assert newest["totals"] == {"source": 42, "loaded": 33, "rejected": 7, "failed": 2}
    assert newest["links"]["airflow"] == f"/dags/{OTHER_DAG_ID}/runs/manual__2026-01-02T03%3A04%3A05.678%2B00%3A00"
    # Server paths stay on the server.
    assert "_csv" not in response.text and str(results) not in response.text

    only = client.get("/dms/api/runs", params={"dag_id": DAG_ID}, headers=auth).json()["runs"]
    assert [r["run_id"] for r in only] == ["manual__first"]
    assert [r["run_id"] for r in client.get("/dms/api/runs?limit=1", headers=auth).json()["runs"]] == [RUN_ID]
    assert client.get("/dms/api/runs?limit=0", headers=auth).status_code == 422


def test_an_empty_audit_store_lists_no_runs(client: TestClient, auth: dict[str, str], audit: Audit) -> None:
    assert client.get("/dms/api/runs", headers=auth).json() == {"runs": []}
    page = client.get("/dms/migrations", headers=auth)
    assert page.status_code == 200 and "No runs in the audit store yet" in page.text


def test_run_detail_has_counts_problems_and_report_links(
    client: TestClient, auth: dict[str, str], audit: Audit, results: Path
) -> None:
    problem = "contacts: 2 of 30 rows failed in Salesforce"
    write_run(audit, results, DAG_ID, RUN_ID, {"accounts": ACCOUNTS, "contacts": CONTACTS}, problems=[problem])

    response = client.get(f"/dms/api/runs/{DAG_ID}/{RUN_ID}", headers=auth)
    assert response.status_code == 200
    run = response.json()
    assert run["objects"]["accounts"] == ACCOUNTS and run["problems"] == [problem]
    assert run["files"]["accounts"] == {
        kind: _files_url(DAG_ID, RUN_ID, "accounts", kind).replace(
            RUN_ID, "manual__2026-01-02T03%3A04%3A05.678%2B00%3A00"
        )
        for kind in ("rejects", "errors", "success")
    }
    assert client.get(f"/dms/api/runs/{DAG_ID}/manual__never", headers=auth).status_code == 404


def test_page_shows_the_runs_counts_chart_and_links(
    client: TestClient, auth: dict[str, str], audit: Audit, results: Path
) -> None:
    write_run(audit, results, DAG_ID, RUN_ID, {"accounts": ACCOUNTS, "contacts": CONTACTS})
    write_run(audit, results, OTHER_DAG_ID, "manual__other", {"accounts": {**ACCOUNTS, "loaded": 7, "failed": 1}})

    page = client.get("/dms/migrations", params={"dag_id": DAG_ID, "run_id": RUN_ID}, headers=auth)
    assert page.status_code == 200
    text = page.text
    for name, counts in (("accounts", ACCOUNTS), ("contacts", CONTACTS)):
        for key in ("source", "loaded", "rejected", "failed"):
            assert f"<td class='n' data-object='{name}' data-count='{key}'>{counts[key]}</td>" in text
        for key in ("loaded", "rejected"):
            assert f"data-object='{name}' data-series='{key}' data-value='{counts[key]}'" in text
    assert "data-series='failed' data-value='2'" in text
    assert (
        "href='/dags/dms_legacy_crm_accounts/runs/manual__2026-01-02T03%3A04%3A05.678%2B00%3A00' target='_top'" in text
    )
    assert (
        f"href='{_files_url(DAG_ID, 'RUN', 'contacts', 'errors')}".replace(
            "RUN", "manual__2026-01-02T03%3A04%3A05.678%2B00%3A00"
        )
        in text
    )
    # Both runs are listed. The page loads nothing remote, and no script but its own file.
    assert "data-run-id='manual__other'" in text
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    assert text.count("<script") == 1 and "<script src='/dms/static/migrations.js' defer></script>" in text
    assert "script-src 'self';" in page.headers["content-security-policy"]
    assert "unsafe-inline" not in page.headers["content-security-policy"].split("script-src")[1].split(";")[0]
    assert page.headers["cache-control"] == "no-store"
    script = client.get("/dms/static/migrations.js", headers=auth)
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert client.get("/dms/static/migrations.js").status_code == 401

    # Without a selection, the newest run is shown.
    newest = client.get("/dms/migrations", headers=auth).text
    assert "<section id='dms-run' data-dag-id='dms_legacy_crm_full' data-run-id='manual__other'>" in newest


def test_audit_values_are_escaped_in_the_page(
    client: TestClient, auth: dict[str, str], audit: Audit, results: Path
) -> None:
    evil = "<img src=x onerror=alert(1)>"
    write_run(audit, results, DAG_ID, RUN_ID, {evil: ACCOUNTS}, problems=[f"{evil}: bad"])
    text = client.get("/dms/migrations", headers=auth).text
    assert evil not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text


# -- reports -------------------------------------------------------------------------------


def test_report_download_serves_the_runs_csv(
    client: TestClient, auth: dict[str, str], audit: Audit, results: Path
) -> None:
    out_dir = write_run(audit, results, DAG_ID, RUN_ID, {"accounts": ACCOUNTS})

    response = client.get(_files_url(DAG_ID, RUN_ID, "accounts", "rejects"), headers=auth)
    assert response.status_code == 200
    assert response.content == (out_dir / "accounts_rejects.csv").read_bytes()
    assert response.text.splitlines() == ["row,key,field,reason,code", "8,C0007,Name,empty,REQ"]
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == 'attachment; filename="accounts_rejects.csv"'

    assert client.get(_files_url(DAG_ID, RUN_ID, "accounts", "passwords"), headers=auth).status_code == 404
    assert client.get(_files_url(DAG_ID, RUN_ID, "contacts", "rejects"), headers=auth).status_code == 404
    (out_dir / "accounts_errors.csv").unlink()
    assert client.get(_files_url(DAG_ID, RUN_ID, "accounts", "errors"), headers=auth).status_code == 404


def test_report_paths_outside_the_dags_results_are_refused(
    client: TestClient, auth: dict[str, str], audit: Audit, results: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("password\nhunter2\n")
    other_dag = results / OTHER_DAG_ID / "run"
    other_dag.mkdir(parents=True)
    (other_dag / "accounts_rejects.csv").write_text("row\n1\n")
    link = results / DAG_ID / "link.csv"
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)
    not_csv = results / DAG_ID / "summary.json"
    not_csv.write_text("{}")
    tampered = {
        "dotdot": str(results / DAG_ID / ".." / ".." / "secret.csv"),
        "relative": "../secret.csv",
        "absolute": str(secret),
        "etc": "/etc/passwd",
        "other_dag": str(other_dag / "accounts_rejects.csv"),
        "symlink": str(link),
        "not_csv": str(not_csv),
    }
    objects = {name: {**ACCOUNTS, "rejects_csv": path} for name, path in tampered.items()}
    audit.write_run(DAG_ID, RUN_ID, {"status": "success", "objects": objects, "problems": []})

    for name in tampered:
        response = client.get(_files_url(DAG_ID, RUN_ID, name, "rejects"), headers=auth)
        assert response.status_code == 403, (name, response.text)
        assert "hunter2" not in response.text
    # Nor are the reports offered.
    files = client.get(f"/dms/api/runs/{DAG_ID}/{RUN_ID}", headers=auth).json()["files"]
    assert all("rejects" not in kinds for kinds in files.values())
    # Traversal in the URL itself never leaves the route.
    for url in (
        f"/dms/api/runs/{DAG_ID}/{RUN_ID}/files/accounts/..%2F..%2Fsecret.csv",
        f"/dms/api/runs/{DAG_ID}/{RUN_ID}/files/..%2F..%2F..%2Fetc/passwd.csv",
        "/dms/api/runs/..%2F..%2Fetc/passwd/files/accounts/rejects.csv",
    ):
        response = client.get(url, headers=auth)
        assert response.status_code in (403, 404), url
        assert "hunter2" not in response.text and "root:" not in response.text


# -- the audit store down ------------------------------------------------------------------


def test_audit_store_down_gives_a_clear_message(
    client: TestClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch, results: Path
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AIRFLOW_CONN_CLOUDANT_DEFAULT", json.dumps({"conn_type": "cloudant", "host": closed}))

    api = client.get("/dms/api/runs", headers=auth)
    assert api.status_code == 503
    assert api.json()["detail"].startswith(
        f"The audit store at {closed} (database 'dms_audit') is not reachable, so the list"
    )
    page = client.get("/dms/migrations", headers=auth)
    assert page.status_code == 503
    assert "The audit store is unavailable" in page.text and closed in page.text
    assert "Traceback" not in page.text

    monkeypatch.delenv("AIRFLOW_CONN_CLOUDANT_DEFAULT")
    monkeypatch.setenv("DMS_AUDIT_CONN_ID", "dms_no_such_connection")
    missing = client.get("/dms/api/runs", headers=auth)
    assert missing.status_code == 503
    assert "dms_no_such_connection" in missing.json()["detail"]


def test_list_runs_reads_run_records_only_newest_first(audit: Audit) -> None:
    # Audit.list_runs, which the page stands on: a DAG's prefix never takes in a DAG whose
    # id merely starts the same way, and chunk records are never runs.
    audit.write_run(DAG_ID, "manual__1", {"status": "success"})
    audit.write_run(f"{DAG_ID}_v2", "manual__2", {"status": "failed"})
    audit.write_run(DAG_ID, "manual__3", {"status": "success"})
    audit.write_chunk(DAG_ID, "manual__3", "accounts", 0, {"rows": 5})

    assert [r["run_id"] for r in audit.list_runs()] == ["manual__3", "manual__2", "manual__1"]
    assert [r["run_id"] for r in audit.list_runs(DAG_ID)] == ["manual__3", "manual__1"]
    assert [r["run_id"] for r in audit.list_runs(DAG_ID, limit=1)] == ["manual__3"]
    assert [r["run_id"] for r in audit.list_runs(page_size=1)] == ["manual__3", "manual__2", "manual__1"]
    assert audit.list_runs("dms_never_ran") == []
