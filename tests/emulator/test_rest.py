"""The emulator's REST API through the real simple_salesforce client, over HTTPS."""

from __future__ import annotations

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)
from simple_salesforce.login import soap_login

from scripts.services import CREDENTIALS, EmulatorProcess


def _codes(exc: pytest.ExceptionInfo) -> list[str]:
    return [e["errorCode"] for e in exc.value.content]


def _collection(sf: Salesforce, method: str, body: dict | None = None, path: str = "") -> list[dict]:
    return sf.restful(f"composite/sobjects{path}", method=method, json=body)


def _accounts(n: int, start: int = 0) -> list[dict]:
    return [
        {"attributes": {"type": "Account"}, "Name": f"Account {i}", "Legacy_Id__c": f"L{i}"}
        for i in range(start, start + n)
    ]


# ---------------------------------------------------------------- auth


def test_oauth_password_grant_returns_salesforce_token_shape(emulator: EmulatorProcess) -> None:
    token = emulator.token()
    assert set(token) == {"access_token", "instance_url", "id", "token_type", "issued_at", "signature"}
    assert token["token_type"] == "Bearer"
    assert token["instance_url"] == emulator.base_url
    assert token["issued_at"].isdigit()


def test_oauth_client_credentials_grant_needs_the_secret(emulator: EmulatorProcess) -> None:
    url = f"{emulator.base_url}/services/oauth2/token"
    ok = requests.post(
        url,
        data={
            "grant_type": "client_credentials",
            "client_id": CREDENTIALS["client_id"],
            "client_secret": CREDENTIALS["client_secret"],
        },
        timeout=10,
    )
    assert ok.status_code == 200 and ok.json()["access_token"]
    bad = requests.post(
        url,
        data={"grant_type": "client_credentials", "client_id": CREDENTIALS["client_id"], "client_secret": "nope"},
        timeout=10,
    )
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    ("change", "error"),
    [({"password": "wrong"}, "invalid_grant"), ({"client_id": "unknown-app"}, "invalid_client_id")],
)
def test_oauth_bad_credentials_answer_400_with_error(emulator: EmulatorProcess, change: dict, error: str) -> None:
    resp = requests.post(
        f"{emulator.base_url}/services/oauth2/token",
        data={"grant_type": "password", **CREDENTIALS, **change},
        timeout=10,
    )
    assert resp.status_code == 400
    assert resp.json()["error"] == error and resp.json()["error_description"]


def _soap_body(password: str) -> str:
    return (
        '<?xml version="1.0" encoding="utf-8" ?><env:Envelope xmlns:env="http://schemas.xmlsoap.org/soap/envelope/">'
        '<env:Body><n1:login xmlns:n1="urn:partner.soap.sforce.com">'
        f"<n1:username>{CREDENTIALS['username']}</n1:username><n1:password>{password}</n1:password>"
        "</n1:login></env:Body></env:Envelope>"
    )


def test_soap_login_gives_a_session_the_rest_api_accepts(emulator: EmulatorProcess) -> None:
    url = f"{emulator.base_url}/services/Soap/u/62.0"
    session_id, instance = soap_login(url, _soap_body(CREDENTIALS["password"]), {"SOAPAction": "login"}, None)
    assert instance == f"127.0.0.1:{emulator.port}"
    sf = Salesforce(session_id=session_id, instance=instance, version="62.0")
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == 0
    with pytest.raises(SalesforceAuthenticationFailed, match="INVALID_LOGIN"):
        soap_login(url, _soap_body("wrong"), {"SOAPAction": "login"}, None)


def test_bad_session_is_refused_with_invalid_session_id(emulator: EmulatorProcess) -> None:
    sf = Salesforce(instance_url=emulator.base_url, session_id="00Dbogus!token", version="62.0")
    with pytest.raises(SalesforceExpiredSession) as exc:
        sf.Account.describe()
    assert _codes(exc) == ["INVALID_SESSION_ID"]


def test_provider_hook_authenticates_from_the_airflow_connection(airflow_salesforce_conn: str) -> None:
    from airflow.providers.salesforce.hooks.salesforce import SalesforceHook

    hook = SalesforceHook(salesforce_conn_id=airflow_salesforce_conn)
    assert "Legacy_Id__c" in hook.get_available_fields("Account")
    assert hook.make_query("SELECT COUNT() FROM Contact")["totalSize"] == 0


# ---------------------------------------------------------------- discovery and describe


def test_versions_limits_and_global_describe_have_salesforce_shapes(sf: Salesforce) -> None:
    versions = requests.get(f"https://{sf.sf_instance}/services/data/", timeout=10).json()
    assert {"label", "url", "version"} <= set(versions[-1]) and isinstance(versions[-1]["version"], str)
    limits = sf.limits()
    assert {"Max", "Remaining"} <= set(limits["DailyApiRequests"])
    described = sf.describe()
    assert described["maxBatchSize"] == 200
    assert {"Account", "Contact", "Opportunity", "Invoice__c"} <= {o["name"] for o in described["sobjects"]}


def test_describe_serves_fields_with_types_and_flags(sf: Salesforce) -> None:
    desc = sf.Account.describe()
    assert len(desc) >= 45
    fields = {f["name"]: f for f in desc["fields"]}
    assert all(len(f) >= 55 for f in fields.values())
    assert fields["Legacy_Id__c"]["externalId"] and fields["Legacy_Id__c"]["unique"]
    assert fields["Name"]["nillable"] is False and fields["Name"]["length"] == 255
    assert fields["Industry"]["restrictedPicklist"] is True
    assert "Banking" in [p["value"] for p in fields["Industry"]["picklistValues"]]
    assert fields["ParentId"]["referenceTo"] == ["Account"] and fields["ParentId"]["relationshipName"] == "Parent"
    assert fields["Id"]["createable"] is False
    assert {(c["childSObject"], c["field"]) for c in desc["childRelationships"]} >= {
        ("Contact", "AccountId"),
        ("Invoice__c", "Account__c"),
    }
    custom = sf.Invoice__c.describe()
    assert custom["custom"] is True and custom["keyPrefix"] == "a01"


def test_unknown_sobject_is_not_found(sf: Salesforce) -> None:
    with pytest.raises(SalesforceResourceNotFound):
        sf.Nope__c.describe()


# ---------------------------------------------------------------- records


def test_create_get_update_delete_round_trip(sf: Salesforce) -> None:
    created = sf.Account.create(
        {"Name": "Acme", "AnnualRevenue": 12.5, "Active__c": True, "Customer_Since__c": "2020-01-31"}
    )
    assert created["success"] is True and created["id"].startswith("001") and len(created["id"]) == 18
    rec = sf.Account.get(created["id"])
    assert rec["attributes"]["type"] == "Account"
    assert (rec["Name"], rec["AnnualRevenue"], rec["Active__c"], rec["Customer_Since__c"]) == (
        "Acme",
        12.5,
        True,
        "2020-01-31",
    )
    assert sf.Account.update(created["id"], {"Name": "Acme Ltd"}) == 204
    assert sf.Account.get(created["id"][:15])["Name"] == "Acme Ltd"
    assert sf.Account.delete(created["id"]) == 204
    with pytest.raises(SalesforceResourceNotFound) as exc:
        sf.Account.get(created["id"])
    assert _codes(exc) == ["NOT_FOUND"]


def test_datetime_is_stored_in_utc_and_returned_in_salesforce_format(sf: Salesforce) -> None:
    rid = sf.Account.create({"Name": "Tz", "Last_Activity__c": "2024-03-01T08:30:00+08:00"})["id"]
    assert sf.Account.get(rid)["Last_Activity__c"] == "2024-03-01T00:30:00.000+0000"


def test_upsert_by_external_id_creates_then_updates(sf: Salesforce) -> None:
    assert sf.Account.upsert("Legacy_Id__c/L-1", {"Name": "First"}) == 201
    assert sf.Account.upsert("Legacy_Id__c/L-1", {"Name": "Second"}) in (200, 204)
    got = sf.Account.get_by_custom_id("Legacy_Id__c", "L-1")
    assert got["Name"] == "Second"
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == 1


def test_upsert_response_body_says_created_or_not(sf: Salesforce) -> None:
    url = f"{sf.base_url}sobjects/Account/Legacy_Id__c/L-2"
    first = sf.session.patch(url, json={"Name": "A"}, headers=sf.headers)
    second = sf.session.patch(url, json={"Name": "B"}, headers=sf.headers)
    assert first.status_code == 201 and first.json()["created"] is True
    assert second.status_code == 200 and second.json()["created"] is False
    assert first.json()["id"] == second.json()["id"]


def test_upsert_matching_several_records_answers_300(sf: Salesforce) -> None:
    sf.Account.create({"Name": "Group A", "Duns__c": "123456789"})
    sf.Account.create({"Name": "Group B", "Duns__c": "123456789"})
    with pytest.raises(SalesforceMoreThanOneRecord) as exc:
        sf.Account.upsert("Duns__c/123456789", {"Name": "Which?"})
    assert len(exc.value.content) == 2


def test_upsert_on_a_field_that_is_not_an_external_id_is_not_found(sf: Salesforce) -> None:
    with pytest.raises(SalesforceResourceNotFound) as exc:
        sf.Account.upsert("Phone/123", {"Name": "x"})
    assert _codes(exc) == ["NOT_FOUND"]


@pytest.mark.parametrize(
    ("record", "code", "fields"),
    [
        ({"AnnualRevenue": 5}, "REQUIRED_FIELD_MISSING", ["Name"]),
        ({"Name": "x" * 256}, "STRING_TOO_LONG", ["Name"]),
        ({"Name": "a", "Industry": "Mining"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", ["Industry"]),
        ({"Name": "a", "AnnualRevenue": "lots"}, "INVALID_TYPE_ON_FIELD_IN_RECORD", ["AnnualRevenue"]),
        ({"Name": "a", "NumberOfEmployees": 1.5}, "INVALID_TYPE_ON_FIELD_IN_RECORD", ["NumberOfEmployees"]),
        ({"Name": "a", "NumberOfEmployees": 10**9}, "NUMBER_OUTSIDE_VALID_RANGE", ["NumberOfEmployees"]),
        ({"Name": "a", "Customer_Since__c": "31/01/2020"}, "INVALID_TYPE_ON_FIELD_IN_RECORD", ["Customer_Since__c"]),
        ({"Name": "a", "Last_Activity__c": "2020-13-01T00:00:00Z"}, "INVALID_TYPE_ON_FIELD_IN_RECORD", None),
        ({"Name": "a", "ParentId": "not-an-id"}, "MALFORMED_ID", ["ParentId"]),
        ({"Name": "a", "ParentId": "001000000000000AAA"}, "INVALID_CROSS_REFERENCE_KEY", ["ParentId"]),
        ({"Name": "a", "CreatedDate": "2020-01-01T00:00:00Z"}, "INVALID_FIELD_FOR_INSERT_UPDATE", ["CreatedDate"]),
    ],
)
def test_invalid_account_values_fail_with_salesforce_codes(
    sf: Salesforce, record: dict, code: str, fields: list[str] | None
) -> None:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Account.create(record)
    assert _codes(exc) == [code]
    if fields is not None:
        assert exc.value.content[0]["fields"] == fields
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == 0


def test_invalid_email_fails_with_invalid_email_address(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Contact.create({"LastName": "Li", "Email": "li at example"})
    assert _codes(exc) == ["INVALID_EMAIL_ADDRESS"]


def test_unknown_field_fails_the_request_with_invalid_field(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Account.create({"Name": "a", "Colour__c": "red"})
    assert _codes(exc) == ["INVALID_FIELD"]
    assert "Colour__c" in exc.value.content[0]["message"]


def test_duplicate_unique_value_names_the_existing_record(sf: Salesforce) -> None:
    first = sf.Account.create({"Name": "a", "Legacy_Id__c": "DUP"})["id"]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Account.create({"Name": "b", "Legacy_Id__c": "dup"})
    assert _codes(exc) == ["DUPLICATE_VALUE"]
    assert first in exc.value.content[0]["message"]


def test_reference_to_a_deleted_record_is_entity_is_deleted(sf: Salesforce) -> None:
    parent = sf.Account.create({"Name": "parent"})["id"]
    sf.Account.delete(parent)
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Contact.create({"LastName": "child", "AccountId": parent})
    assert _codes(exc) == ["ENTITY_IS_DELETED"]


def test_parent_by_external_id_in_a_nested_reference(sf: Salesforce) -> None:
    parent = sf.Account.create({"Name": "parent", "Legacy_Id__c": "P-1"})["id"]
    child = sf.Contact.create({"LastName": "child", "Account": {"Legacy_Id__c": "P-1"}})["id"]
    assert sf.Contact.get(child)["AccountId"] == parent
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Contact.create({"LastName": "orphan", "Account": {"Legacy_Id__c": "P-404"}})
    assert "Foreign key external ID: P-404 not found" in exc.value.content[0]["message"]


# ---------------------------------------------------------------- sObject Collections


def test_collection_insert_returns_results_in_input_order(sf: Salesforce) -> None:
    records = _accounts(3)
    records[1]["Name"] = None
    results = _collection(sf, "POST", {"allOrNone": False, "records": records})
    assert [r["success"] for r in results] == [True, False, True]
    assert results[1]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert results[1]["id"] is None
    names = [r["Name"] for r in sf.query("SELECT Name FROM Account ORDER BY Name")["records"]]
    assert names == ["Account 0", "Account 2"]


def test_collection_all_or_none_rolls_back_every_record(sf: Salesforce) -> None:
    records = _accounts(3)
    records[2]["Industry"] = "Mining"
    results = _collection(sf, "POST", {"allOrNone": True, "records": records})
    assert [r["errors"][0]["statusCode"] for r in results] == [
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
    ]
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == 0


def test_collection_of_more_than_200_records_is_refused(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        _collection(sf, "POST", {"records": _accounts(201)})
    assert _codes(exc) == ["EXCEEDED_ID_LIMIT"]


def test_collection_update_and_delete(sf: Salesforce) -> None:
    ids = [r["id"] for r in _collection(sf, "POST", {"records": _accounts(2)})]
    updated = _collection(
        sf,
        "PATCH",
        {"records": [{"attributes": {"type": "Account"}, "Id": i, "Phone": "+86 10 1234"} for i in ids]},
    )
    assert all(r["success"] for r in updated)
    assert {r["Phone"] for r in sf.query("SELECT Phone FROM Account")["records"]} == {"+86 10 1234"}
    deleted = sf.restful("composite/sobjects", method="DELETE", params={"ids": ",".join(ids + ["bad"])})
    assert [r["success"] for r in deleted] == [True, True, False]
    assert deleted[2]["errors"][0]["statusCode"] == "MALFORMED_ID"
    again = sf.restful("composite/sobjects", method="DELETE", params={"ids": ids[0]})
    assert again[0]["errors"][0]["statusCode"] == "ENTITY_IS_DELETED"


def test_collection_upsert_reports_created_and_duplicate_external_ids(sf: Salesforce) -> None:
    sf.Account.create({"Name": "old", "Legacy_Id__c": "L0"})
    body = {
        "records": [
            {"attributes": {"type": "Account"}, "Name": "update", "Legacy_Id__c": "L0"},
            {"attributes": {"type": "Account"}, "Name": "new", "Legacy_Id__c": "L1"},
            {"attributes": {"type": "Account"}, "Name": "twice", "Legacy_Id__c": "L2"},
            {"attributes": {"type": "Account"}, "Name": "twice", "Legacy_Id__c": "l2"},
        ]
    }
    results = _collection(sf, "PATCH", body, "/Account/Legacy_Id__c")
    assert [(r["success"], r.get("created")) for r in results[:2]] == [(True, False), (True, True)]
    assert [r["errors"][0]["statusCode"] for r in results[2:]] == ["DUPLICATE_EXTERNAL_ID"] * 2
    assert sf.Account.get_by_custom_id("Legacy_Id__c", "L0")["Name"] == "update"


def test_update_of_a_deleted_record_is_entity_is_deleted(sf: Salesforce) -> None:
    rid = sf.Account.create({"Name": "gone"})["id"]
    sf.Account.delete(rid)
    results = _collection(sf, "PATCH", {"records": [{"attributes": {"type": "Account"}, "Id": rid, "Name": "x"}]})
    assert results[0]["errors"][0]["statusCode"] == "ENTITY_IS_DELETED"


# ---------------------------------------------------------------- query


def test_query_pages_with_next_records_url(sf: Salesforce) -> None:
    for start in range(0, 2500, 200):
        assert all(r["success"] for r in _collection(sf, "POST", {"records": _accounts(200, start)}))
    first = sf.query("SELECT Id, Legacy_Id__c FROM Account")
    assert (first["totalSize"], first["done"], len(first["records"])) == (2600, False, 2000)
    assert first["nextRecordsUrl"].startswith("/services/data/v62.0/query/")
    everything = sf.query_all("SELECT Legacy_Id__c FROM Account")["records"]
    assert len(everything) == 2600
    assert len({r["Legacy_Id__c"] for r in everything}) == 2600


def test_query_all_includes_deleted_records(sf: Salesforce) -> None:
    rid = sf.Account.create({"Name": "binned"})["id"]
    sf.Account.delete(rid)
    assert sf.query("SELECT Id FROM Account")["totalSize"] == 0
    rows = sf.query_all("SELECT Id, IsDeleted FROM Account", include_deleted=True)["records"]
    assert [(r["Id"], r["IsDeleted"]) for r in rows] == [(rid, True)]


def test_query_with_parent_fields_and_filters(sf: Salesforce) -> None:
    acc = sf.Account.create({"Name": "Acme", "Legacy_Id__c": "A"})["id"]
    sf.Contact.create({"LastName": "Wang", "AccountId": acc, "Birthdate": "1990-05-01"})
    sf.Contact.create({"LastName": "Zhao"})
    rows = sf.query("SELECT LastName, Account.Name FROM Contact WHERE Birthdate > 1980-01-01")["records"]
    assert [(r["LastName"], r["Account"]["Name"]) for r in rows] == [("Wang", "Acme")]
    orphan = sf.query("SELECT Account.Name FROM Contact WHERE LastName = 'zhao'")["records"]
    assert orphan[0]["Account"] is None


def test_malformed_query_is_refused_not_answered_wrongly(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query("SELECT Name FROM Account GROUP BY Name")
    assert _codes(exc) == ["MALFORMED_QUERY"]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query("SELECT Name FROM Nope")
    assert _codes(exc) == ["INVALID_TYPE"]


# ---------------------------------------------------------------- faults


def test_latency_fault_slows_calls_until_a_client_times_out(sf: Salesforce, emulator: EmulatorProcess) -> None:
    emulator.admin("/__emulator/faults", "PUT", {"latency_ms": 1500})
    with pytest.raises(requests.exceptions.ReadTimeout):
        sf.session.get(f"{sf.base_url}limits/", headers=sf.headers, timeout=0.3)
    assert emulator.admin("/__emulator/faults")["delayed_calls"] >= 1


def test_503_fault_answers_server_unavailable(sf: Salesforce, emulator: EmulatorProcess) -> None:
    emulator.admin("/__emulator/faults", "PUT", {"error_503_rate": 1.0})
    with pytest.raises(SalesforceGeneralError) as exc:
        sf.limits()
    assert exc.value.status == 503
    emulator.admin("/__emulator/faults", "PUT", {"error_503_rate": 0.0})
    assert sf.limits()["DailyApiRequests"]["Max"] > 0


def test_request_limit_fault_refuses_calls_after_n(sf: Salesforce, emulator: EmulatorProcess) -> None:
    used = emulator.admin("/__emulator/faults")["api_calls"]
    emulator.admin("/__emulator/faults", "PUT", {"request_limit": used + 2})
    sf.limits()
    sf.limits()
    with pytest.raises(SalesforceRefusedRequest) as exc:
        sf.limits()
    assert _codes(exc) == ["REQUEST_LIMIT_EXCEEDED"]


def test_lock_row_fault_fails_rows_with_unable_to_lock_row(sf: Salesforce, emulator: EmulatorProcess) -> None:
    emulator.admin("/__emulator/faults", "PUT", {"lock_row_rate": 1.0})
    results = _collection(sf, "POST", {"records": _accounts(3)})
    assert {r["errors"][0]["statusCode"] for r in results} == {"UNABLE_TO_LOCK_ROW"}
    emulator.admin("/__emulator/faults", "PUT", {"lock_row_rate": 0.0})
    assert all(r["success"] for r in _collection(sf, "POST", {"records": _accounts(3)}))


def test_unknown_fault_setting_is_refused(emulator: EmulatorProcess) -> None:
    with pytest.raises(requests.HTTPError):
        emulator.admin("/__emulator/faults", "PUT", {"latency": 5})


def test_faults_can_be_set_on_the_command_line(emulator_factory) -> None:
    proc = emulator_factory("--request-limit", "0", "--lock-row-rate", "0.5")
    faults = proc.admin("/__emulator/faults")
    assert (faults["request_limit"], faults["lock_row_rate"]) == (0, 0.5)
    token = proc.token()
    sf = Salesforce(instance_url=token["instance_url"], session_id=token["access_token"], version="62.0")
    with pytest.raises(SalesforceRefusedRequest):
        sf.limits()


# ---------------------------------------------------------------- storage and admin


def test_file_store_keeps_records_across_a_restart(emulator_factory, tmp_path) -> None:
    db = tmp_path / "org.sqlite"
    first = emulator_factory("--db", str(db))
    token = first.token()
    sf = Salesforce(instance_url=token["instance_url"], session_id=token["access_token"], version="62.0")
    rid = sf.Account.create({"Name": "Durable", "Legacy_Id__c": "D-1"})["id"]
    first.stop()
    second = emulator_factory("--db", str(db))
    token = second.token()
    sf = Salesforce(instance_url=token["instance_url"], session_id=token["access_token"], version="62.0")
    assert sf.Account.get(rid)["Name"] == "Durable"
    # Ids are never reused after a restart.
    assert sf.Account.create({"Name": "Next"})["id"] != rid


def test_admin_export_and_reset(sf: Salesforce, emulator: EmulatorProcess) -> None:
    sf.Account.create({"Name": "Exported"})
    exported = emulator.admin("/__emulator/export/Account")["records"]
    assert [r["Name"] for r in exported] == ["Exported"]
    emulator.admin("/__emulator/reset", "POST")
    assert emulator.admin("/__emulator/export/Account")["records"] == []
