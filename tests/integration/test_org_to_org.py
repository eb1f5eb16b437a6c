"""The org-to-org sample: accounts and contacts out of a second emulator (the source org) by
Bulk API 2.0 query, anonymised, into the target emulator."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from scripts.services import EmulatorProcess
from tests.conftest import ROOT

DAG_ID = "dms_org_to_org_copy"

pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.fixture
def source_org(emulator_factory, dms_connections) -> Iterator[EmulatorProcess]:
    from simple_salesforce import Salesforce

    source = emulator_factory()
    token = source.token()
    sf = Salesforce(instance_url=token["instance_url"], session_id=token["access_token"], version="62.0")
    for i in range(1, 4):
        sf.Account.create(
            {
                "Legacy_Id__c": f"P{i}",
                "Name": f"生产客户{i}",
                "Industry": "Retail",
                "AnnualRevenue": 1000.5 * i,
                "NumberOfEmployees": 10 * i,
                "Phone": f"010-5555-000{i}",
                "BillingCity": "北京",
            }
        )
    sf.Account.create({"Name": "no external id: not copied"})
    for i, account in ((1, "P1"), (2, "P1"), (3, "P2")):
        sf.Contact.create(
            {
                "Legacy_Id__c": f"PC{i}",
                "FirstName": "真实",
                "LastName": f"姓名{i}",
                "Email": f"Real.Person{i}@Customer.cn",
                "Title": "经理",
                "Account": {"Legacy_Id__c": account},
            }
        )
    os.environ["AIRFLOW_CONN_SALESFORCE_SOURCE"] = json.dumps(source.salesforce_connection())
    os.environ["AIRFLOW_VAR_DMS_ANONYMISE_SALT"] = "test-salt-0b7e"
    yield source
    os.environ.pop("AIRFLOW_CONN_SALESFORCE_SOURCE", None)
    os.environ.pop("AIRFLOW_VAR_DMS_ANONYMISE_SALT", None)


def _run() -> Any:
    from dms.dag_factory import build_dags

    return build_dags(ROOT / "include" / "migrations")[DAG_ID].test()


def _records(emulator: EmulatorProcess, sobject: str) -> dict[str, dict[str, Any]]:
    return {r["Legacy_Id__c"]: r for r in emulator.admin(f"/__emulator/export/{sobject}")["records"]}


def test_copies_accounts_and_contacts_with_personal_data_anonymised(
    emulator: EmulatorProcess, source_org: EmulatorProcess
) -> None:
    assert _run().state == "success"
    accounts = _records(emulator, "Account")
    assert set(accounts) == {"P1", "P2", "P3"}
    p2 = accounts["P2"]
    assert (p2["Name"], p2["AnnualRevenue"], p2["NumberOfEmployees"], p2["BillingCity"]) == (
        "生产客户2",
        2001.0,
        20,
        "北京",
    )
    assert p2["Phone"] and p2["Phone"] != "010-5555-0002"

    contacts = _records(emulator, "Contact")
    assert set(contacts) == {"PC1", "PC2", "PC3"}
    assert contacts["PC3"]["AccountId"] == accounts["P2"]["Id"]
    for i, contact in ((1, contacts["PC1"]), (3, contacts["PC3"])):
        assert contact["Email"].endswith("@example.invalid")
        assert "real" not in contact["Email"].lower()
        assert contact["LastName"] != f"姓名{i}" and contact["LastName"]
        assert contact["Title"] == "经理"  # not personal: copied as it is


def test_a_second_copy_updates_with_the_same_anonymised_values(
    emulator: EmulatorProcess, source_org: EmulatorProcess
) -> None:
    assert _run().state == "success"
    first = _records(emulator, "Contact")
    assert _run().state == "success"
    second = _records(emulator, "Contact")
    assert {k: (c["Id"], c["Email"], c["LastName"]) for k, c in second.items()} == {
        k: (c["Id"], c["Email"], c["LastName"]) for k, c in first.items()
    }
