"""Fixtures for the emulator's own tests: a clean org per test and logged-in real clients."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
import yaml
from simple_salesforce import Salesforce

from scripts.services import ROOT, EmulatorProcess


@pytest.fixture(autouse=True)
def _clean_org(request: pytest.FixtureRequest) -> None:
    # Only tests that use the emulator pay for it; pure unit tests here stay offline.
    if "emulator" in request.fixturenames or "sf" in request.fixturenames:
        emulator: EmulatorProcess = request.getfixturevalue("emulator")
        emulator.admin("/__emulator/reset", "POST")


@pytest.fixture
def sf(emulator: EmulatorProcess) -> Salesforce:
    """simple_salesforce with a session from the emulator's OAuth endpoint."""
    token = emulator.token()
    return Salesforce(instance_url=token["instance_url"], session_id=token["access_token"], version="62.0")


@pytest.fixture
def airflow_salesforce_conn(emulator: EmulatorProcess) -> Iterator[str]:
    """`salesforce_default` exactly as airflow_settings.yaml ships it, pointed at this emulator's port.

    The shipped connection is what users get, so the test uses it rather than its own copy.
    """
    settings = yaml.safe_load((ROOT / "airflow_settings.yaml").read_text())
    spec = next(c for c in settings["airflow"]["connections"] if c["conn_id"] == "salesforce_default")
    extra = {
        key: value.replace("127.0.0.1:8443", f"127.0.0.1:{emulator.port}") if isinstance(value, str) else value
        for key, value in spec["conn_extra"].items()
    }
    conn = {
        "conn_type": spec["conn_type"],
        "login": spec["conn_login"],
        "password": spec["conn_password"],
        "extra": extra,
    }
    old = os.environ.get("AIRFLOW_CONN_SALESFORCE_DEFAULT")
    os.environ["AIRFLOW_CONN_SALESFORCE_DEFAULT"] = json.dumps(conn)
    yield "salesforce_default"
    if old is None:
        os.environ.pop("AIRFLOW_CONN_SALESFORCE_DEFAULT", None)
    else:
        os.environ["AIRFLOW_CONN_SALESFORCE_DEFAULT"] = old
