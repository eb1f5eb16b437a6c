"""Salesforce hook: the provider's hook, plus OAuth against a configurable token URL."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.salesforce.hooks.salesforce import SalesforceHook

from dms.errors import FatalError, RetriableError

if TYPE_CHECKING:
    from simple_salesforce import Salesforce

DEFAULT_API_VERSION = "62.0"


class DmsSalesforceHook(SalesforceHook):
    """SalesforceHook that can log in through any OAuth token URL.

    The provider's hook lets simple_salesforce build https://{domain}.salesforce.com, which
    cannot reach a My Domain with a custom host, a private endpoint or a local rehearsal org.
    With the extra ``token_url`` this hook performs the OAuth 2.0 password grant (login and
    password set) or client-credentials grant (only ``consumer_key`` and ``consumer_secret``)
    itself and hands simple_salesforce the session and instance URL. With ``instance_url``
    and a ``session_id`` it uses the session as given. Otherwise it behaves like the provider.

    Every call goes through a session with DMS's retry policy (dms.salesforce.http): the extra
    ``timeout`` is the longest wait in seconds for an answer (default 120), ``max_retries`` how
    many times a call that is safe to repeat is sent again after a passing fault (default 4).
    """

    hook_name = "Salesforce (DMS)"

    @cached_property
    def conn(self) -> Salesforce:  # type: ignore[override]
        from simple_salesforce import Salesforce

        connection = self.get_connection(self.conn_id)
        extras = connection.extra_dejson
        if self.session is None:
            self.session = self._retrying_session(extras)
        version = str(self._get_field(extras, "version") or DEFAULT_API_VERSION)
        token_url = self._get_field(extras, "token_url")
        if self.session_id is None and token_url:
            token = self._oauth_token(token_url, connection.login, connection.password, extras)
            return Salesforce(
                instance_url=token["instance_url"],
                session_id=token["access_token"],
                version=version,
                session=self.session,
            )
        if self.session_id is not None:
            instance_url = self._get_field(extras, "instance_url")
            if not instance_url:
                raise FatalError(f"Salesforce connection {self.conn_id!r}: a session needs the extra 'instance_url'")
            return Salesforce(
                instance_url=instance_url, session_id=self.session_id, version=version, session=self.session
            )
        return super().conn

    def _retrying_session(self, extras: dict) -> Any:
        from dms.salesforce.http import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, salesforce_session

        settings: dict[str, float] = {}
        for name, default, kind in (("timeout", DEFAULT_TIMEOUT, float), ("max_retries", DEFAULT_MAX_RETRIES, int)):
            value = extras.get(name)  # not _get_field: it turns a deliberate 0 into "unset"
            try:
                settings[name] = kind(default if value in (None, "") else value)
            except (TypeError, ValueError):
                raise FatalError(
                    f"Salesforce connection {self.conn_id!r}: the extra {name!r} must be a number, not {value!r}"
                ) from None
            if name == "timeout" and settings[name] <= 0:
                raise FatalError(f"Salesforce connection {self.conn_id!r}: the extra 'timeout' must be more than 0")
            if settings[name] < 0:
                raise FatalError(f"Salesforce connection {self.conn_id!r}: the extra {name!r} must be 0 or more")
        return salesforce_session(settings["timeout"], int(settings["max_retries"]))

    def _oauth_token(self, token_url: str, login: str | None, password: str | None, extras: dict) -> dict[str, Any]:
        import requests

        client_id = self._get_field(extras, "consumer_key")
        client_secret = self._get_field(extras, "consumer_secret")
        if not client_id:
            raise FatalError(f"Salesforce connection {self.conn_id!r}: 'token_url' needs the extra 'consumer_key'")
        data = {"client_id": client_id}
        if client_secret:
            data["client_secret"] = client_secret
        if login:
            security_token = self._get_field(extras, "security_token") or ""
            data.update(grant_type="password", username=login, password=f"{password or ''}{security_token}")
        else:
            data["grant_type"] = "client_credentials"
        http = self.session or requests.Session()
        try:
            resp = http.post(token_url, data=data, timeout=60)
        except requests.RequestException as exc:
            raise RetriableError(f"Salesforce login at {token_url} failed: {type(exc).__name__}") from None
        if resp.status_code >= 500 or resp.status_code == 429:
            raise RetriableError(f"Salesforce login at {token_url} answered {resp.status_code}")
        body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
        if resp.status_code != 200 or "access_token" not in body:
            # The error and its description never contain the secret; log them, nothing else.
            raise FatalError(
                f"Salesforce login at {token_url} refused: {body.get('error', resp.status_code)}: "
                f"{body.get('error_description', '')}".rstrip(": ")
            )
        return body

    def test_connection(self) -> tuple[bool, str]:
        try:
            self.conn.limits()
        except Exception as exc:  # noqa: BLE001 - the UI shows the reason instead of a trace
            return False, f"{type(exc).__name__}: {exc}"
        return True, "Connection successfully tested"
