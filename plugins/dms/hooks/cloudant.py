"""Cloudant hook for the audit store: IBM Cloudant by account name, or any CouchDB by URL."""

from __future__ import annotations

import re
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

# The provider module imports ibmcloudant at its top, so importing this hook costs that
# import too: DAG files must import it inside `execute`, never at module level.
from airflow.providers.cloudant.hooks.cloudant import CloudantHook

from dms.errors import FatalError

if TYPE_CHECKING:
    from airflow.sdk import Connection
    from ibmcloudant import CloudantV1

# What IBM Cloudant account names look like; anything else is a host or a URL.
_ACCOUNT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
# How long the DMS tasks retry an audit write while the store does not answer: long enough for
# a CouchDB restart, short enough that a store that is really down fails the task, whose
# Airflow retry (after its retry_delay) then writes the same records.
DEFAULT_RETRY_SECONDS = 60.0


class DmsCloudantHook(CloudantHook):
    """CloudantHook that also reaches a plain CouchDB (or pouchdb-server) by URL.

    The provider's hook always builds ``https://{host}.cloudant.com`` with a session login,
    which cannot reach a self-hosted CouchDB, the compose stack's couchdb:3, or the local
    pouchdb-server the tests run. This hook keeps that behaviour when the connection host is
    a bare Cloudant account name. When the host is a URL (``http://127.0.0.1:5984``), or
    the connection sets ``schema`` (``http``/``https``) or ``port``, it points the client at
    that URL and authenticates with HTTP Basic (login and password) or not at all (no
    login). Basic rather than the session login: pouchdb-server refuses ibmcloudant's
    session request and the SDK then hangs, while Basic works on CouchDB and pouchdb-server.

    Extras: ``timeout`` (seconds, for both connect and read) overrides the SDK's 60 s / 150 s;
    ``retry_seconds`` (default 60) is how long the DMS tasks retry a write the store does not
    answer before their task fails.
    """

    conn_name_attr = "cloudant_conn_id"
    default_conn_name = "cloudant_default"
    conn_type = "cloudant"
    hook_name = "Cloudant or CouchDB (DMS)"

    def __init__(self, cloudant_conn_id: str = default_conn_name) -> None:
        super().__init__(cloudant_conn_id=cloudant_conn_id)

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": [],
            "relabeling": {
                "host": "Cloudant account, or CouchDB URL",
                "login": "Username (or API key)",
                "schema": "URL scheme (http or https, CouchDB only)",
            },
            "placeholders": {
                "host": "myaccount  or  http://127.0.0.1:5984",
                "extra": '{"timeout": 30, "retry_seconds": 60}',
            },
        }

    @cached_property
    def client(self) -> CloudantV1:
        """The CloudantV1 client, built once per hook."""
        conn = self.get_connection(self.cloudant_conn_id)
        service_url = self._couchdb_url(conn)
        if service_url is None:
            # The provider checks these too, but raises AirflowException; a FatalError lets
            # the DMS operators classify a misconfiguration like every other one.
            missing = [name for name in ("login", "password") if not getattr(conn, name)]
            if missing:
                raise FatalError(
                    f"Cloudant connection {self.cloudant_conn_id!r}: missing connection parameter "
                    f"{' and '.join(missing)} (an IBM Cloudant account needs both)"
                )
            client = super().get_conn()
            auth = "session"
        else:
            client = self._couchdb_client(conn, service_url)
            auth = "basic" if conn.login else "none"
        timeout = conn.extra_dejson.get("timeout")
        if timeout is not None:
            try:
                seconds = float(timeout)
            except (TypeError, ValueError):
                raise FatalError(
                    f"Cloudant connection {self.cloudant_conn_id!r}: extra 'timeout' must be a number of seconds"
                ) from None
            client.set_http_config({"timeout": seconds})
        # The URL never holds credentials (refused below), so it is safe to log.
        self.log.info("Cloudant client for %s (%s auth)", client.service_url, auth)
        return client

    def get_conn(self) -> CloudantV1:
        """Return the cached CloudantV1 client (the provider builds a new one on every call)."""
        return self.client

    @cached_property
    def retry_seconds(self) -> float:
        """Seconds to keep retrying an audit request the store does not answer (extra ``retry_seconds``)."""
        value = self.get_connection(self.cloudant_conn_id).extra_dejson.get("retry_seconds", DEFAULT_RETRY_SECONDS)
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = -1.0
        if not seconds >= 0:  # also refuses NaN
            raise FatalError(
                f"Cloudant connection {self.cloudant_conn_id!r}: extra 'retry_seconds' must be a number of seconds "
                f"(0 or more), not {value!r}"
            )
        return seconds

    def _couchdb_url(self, conn: Connection) -> str | None:
        """The service URL for a CouchDB connection, or None for a Cloudant account name."""
        host = (conn.host or "").strip()
        if not host:
            raise FatalError(f"Cloudant connection {self.cloudant_conn_id!r}: missing connection parameter: host")
        if "://" in host:
            parts = urlsplit(host)
            if parts.scheme not in ("http", "https"):
                raise FatalError(
                    f"Cloudant connection {self.cloudant_conn_id!r}: host URL scheme must be http or https, "
                    f"not {parts.scheme!r}"
                )
            if parts.username is not None or parts.password is not None:
                # Credentials in the URL would end up in logs and error messages.
                raise FatalError(
                    f"Cloudant connection {self.cloudant_conn_id!r}: put the credentials in login and password, "
                    "not in the host URL"
                )
            netloc = parts.netloc
            if conn.port and parts.port is None:
                netloc = f"{netloc}:{conn.port}"
            return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        if conn.schema or conn.port:
            scheme = (conn.schema or "http").lower()
            if scheme not in ("http", "https"):
                raise FatalError(
                    f"Cloudant connection {self.cloudant_conn_id!r}: schema is the URL scheme for a CouchDB host "
                    f"and must be http or https, not {conn.schema!r}"
                )
            return f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
        if not _ACCOUNT_NAME.match(host):
            # The provider would build https://{host}.cloudant.com from it, which never resolves.
            raise FatalError(
                f"Cloudant connection {self.cloudant_conn_id!r}: host {host!r} is not a Cloudant account name; "
                "for CouchDB write the host as a URL (http://host:5984) or set the port"
            )
        return None

    def _couchdb_client(self, conn: Connection, service_url: str) -> CloudantV1:
        from ibm_cloud_sdk_core.authenticators import BasicAuthenticator, NoAuthAuthenticator
        from ibmcloudant import CloudantV1

        if conn.login and not conn.password:
            raise FatalError(f"Cloudant connection {self.cloudant_conn_id!r}: login is set but password is missing")
        if conn.password and not conn.login:
            raise FatalError(f"Cloudant connection {self.cloudant_conn_id!r}: password is set but login is missing")
        authenticator = BasicAuthenticator(conn.login, conn.password) if conn.login else NoAuthAuthenticator()
        client = CloudantV1(authenticator=authenticator)
        client.set_service_url(service_url)
        return client

    def test_connection(self) -> tuple[bool, str]:
        """Reach the server and check the credentials; the message never contains them."""
        try:
            info = self.client.get_server_information().get_result()
            # `/` answers anonymously on CouchDB; `/_session` is what rejects bad credentials.
            session = self.client.get_session_information().get_result()
        except Exception as exc:  # noqa: BLE001 - the UI shows the reason instead of a trace
            return False, f"{type(exc).__name__}: {exc}"
        vendor = info.get("vendor", {}).get("name", "CouchDB")
        user = (session.get("userCtx") or {}).get("name") or "anonymous"
        return True, f"Connected to {vendor} {info.get('version', '?')} at {self.client.service_url} as {user}"
