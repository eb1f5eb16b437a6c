"""DmsCloudantHook: the provider's hook, reaching IBM Cloudant by account and CouchDB by URL."""

from __future__ import annotations

import base64
import json
import logging

import pytest
from airflow.providers.cloudant.hooks.cloudant import CloudantHook
from ibm_cloud_sdk_core.authenticators import BasicAuthenticator, NoAuthAuthenticator
from ibmcloudant import CouchDbSessionAuthenticator

from dms.audit import Audit
from dms.errors import FatalError
from dms.hooks.cloudant import DmsCloudantHook
from scripts.audit_server import AuditServer, free_port, start_audit_server


def _set_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str = "cloudant_default", **fields: object) -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "cloudant", **fields}))
    return conn_id


def test_hook_extends_the_provider_hook_with_its_conventions() -> None:
    assert issubclass(DmsCloudantHook, CloudantHook)
    assert DmsCloudantHook.default_conn_name == "cloudant_default"
    assert DmsCloudantHook.conn_name_attr == "cloudant_conn_id"
    assert DmsCloudantHook.conn_type == "cloudant"
    assert DmsCloudantHook().cloudant_conn_id == "cloudant_default"


def test_url_host_reaches_local_couchdb_without_credentials(audit_server: AuditServer, cloudant_conn: str) -> None:
    hook = DmsCloudantHook(cloudant_conn)
    client = hook.get_conn()

    assert client.service_url == audit_server.url
    assert isinstance(client.authenticator, NoAuthAuthenticator)
    info = client.get_server_information().get_result()
    assert info["vendor"]["name"] == "PouchDB authors"
    assert "_users" in client.get_all_dbs().get_result()


def test_client_is_built_once_per_hook(cloudant_conn: str) -> None:
    hook = DmsCloudantHook(cloudant_conn)
    assert hook.get_conn() is hook.get_conn() is hook.client


def test_test_connection_names_server_and_user(audit_server: AuditServer, cloudant_conn: str) -> None:
    ok, message = DmsCloudantHook(cloudant_conn).test_connection()
    assert ok, message
    assert "PouchDB" in message and audit_server.url in message


def test_test_connection_reports_unreachable_server_without_raising(monkeypatch: pytest.MonkeyPatch) -> None:
    conn_id = _set_conn(monkeypatch, host=f"http://127.0.0.1:{free_port()}")
    ok, message = DmsCloudantHook(conn_id).test_connection()
    assert not ok
    assert "ConnectionError" in message


def test_cloudant_account_host_keeps_provider_url_and_session_login(monkeypatch: pytest.MonkeyPatch) -> None:
    # No network: building the client must not contact the account.
    conn_id = _set_conn(monkeypatch, host="myaccount", login="apikey-user", password="pw")
    client = DmsCloudantHook(conn_id).get_conn()
    assert client.service_url == "https://myaccount.cloudant.com"
    assert isinstance(client.authenticator, CouchDbSessionAuthenticator)


def test_cloudant_account_without_password_names_the_missing_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    conn_id = _set_conn(monkeypatch, host="myaccount", login="apikey-user")
    with pytest.raises(FatalError, match="password"):
        DmsCloudantHook(conn_id).get_conn()


@pytest.mark.parametrize(
    ("fields", "expected_url"),
    [
        ({"host": "127.0.0.1", "port": 5984}, "http://127.0.0.1:5984"),
        ({"host": "couch.example.org", "schema": "https"}, "https://couch.example.org"),
        ({"host": "couch.example.org", "schema": "https", "port": 6984}, "https://couch.example.org:6984"),
        ({"host": "http://127.0.0.1", "port": 5984}, "http://127.0.0.1:5984"),
        ({"host": "https://couch.example.org/prefix/"}, "https://couch.example.org/prefix"),
    ],
)
def test_schema_port_or_url_host_builds_a_couchdb_url(
    monkeypatch: pytest.MonkeyPatch, fields: dict, expected_url: str
) -> None:
    conn_id = _set_conn(monkeypatch, **fields)
    assert DmsCloudantHook(conn_id).get_conn().service_url == expected_url


def test_login_and_password_give_basic_auth_on_a_couchdb_url(monkeypatch: pytest.MonkeyPatch) -> None:
    conn_id = _set_conn(monkeypatch, host="http://127.0.0.1:5984", login="admin", password="pw")
    assert isinstance(DmsCloudantHook(conn_id).get_conn().authenticator, BasicAuthenticator)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({}, "host"),
        ({"host": "http://127.0.0.1:5984", "login": "admin"}, "password"),
        ({"host": "http://127.0.0.1:5984", "password": "pw"}, "login"),
        ({"host": "127.0.0.1"}, "URL"),
        ({"host": "couch", "schema": "dms_audit", "port": 5984}, "schema"),
        ({"host": "ftp://127.0.0.1:5984"}, "scheme"),
        ({"host": "http://127.0.0.1:5984", "extra": {"timeout": "soon"}}, "timeout"),
    ],
)
def test_bad_or_missing_setting_raises_an_error_that_names_it(
    monkeypatch: pytest.MonkeyPatch, fields: dict, named: str
) -> None:
    conn_id = _set_conn(monkeypatch, **fields)
    with pytest.raises(FatalError, match=named):
        DmsCloudantHook(conn_id).get_conn()


def test_credentials_in_the_host_url_are_refused_without_echoing_them(monkeypatch: pytest.MonkeyPatch) -> None:
    conn_id = _set_conn(monkeypatch, host="http://admin:s3cret-pw@127.0.0.1:5984")
    with pytest.raises(FatalError, match="login and password") as excinfo:
        DmsCloudantHook(conn_id).get_conn()
    assert "s3cret-pw" not in str(excinfo.value)


def test_timeout_extra_bounds_every_request(monkeypatch: pytest.MonkeyPatch) -> None:
    conn_id = _set_conn(monkeypatch, host="http://127.0.0.1:5984", extra={"timeout": 5})
    assert DmsCloudantHook(conn_id).get_conn().http_config["timeout"] == 5.0


def test_basic_auth_works_against_a_server_with_an_admin_and_never_leaks_the_password(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    password = "adm1n-s3cret"
    server = start_audit_server(admin=("admin", password))
    try:
        caplog.set_level(logging.DEBUG)
        conn_id = _set_conn(monkeypatch, host=server.url, login="admin", password=password)
        hook = DmsCloudantHook(conn_id)
        ok, message = hook.test_connection()
        assert ok, message
        assert "as admin" in message

        # The whole write path with credentials: database creation needs the admin here.
        audit = Audit(hook.get_conn(), "dms_audit_basic")
        audit.write_run("dag", "run", {"state": "running"})
        assert audit.get_run("dag", "run")["state"] == "running"

        bad_conn = _set_conn(monkeypatch, "cloudant_bad", host=server.url, login="admin", password="wrong-pw")
        ok, message = DmsCloudantHook(bad_conn).test_connection()
        assert not ok
        assert "401" in message
        assert "wrong-pw" not in message
        basic = base64.b64encode(f"admin:{password}".encode()).decode()
        for secret in (password, "wrong-pw", basic):
            assert secret not in caplog.text
    finally:
        server.stop()
