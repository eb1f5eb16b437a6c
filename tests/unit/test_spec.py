"""Spec validation: every error names the file and the YAML path."""

from __future__ import annotations

from pathlib import Path

import pytest

from dms.errors import SpecError
from dms.spec import load_spec, parse_spec

GOOD = {
    "name": "crm",
    "objects": [
        {
            "name": "accounts",
            "sobject": "Account",
            "operation": "upsert",
            "external_id": "Legacy_Id__c",
            "source": {"path": "crm/accounts.csv"},
            "fields": {"Legacy_Id__c": {"source": "id"}, "Name": {"source": "name"}},
        }
    ],
}


def _with(path: list, value) -> dict:
    import copy

    doc = copy.deepcopy(GOOD)
    node = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return doc


def test_valid_spec_parses_with_defaults() -> None:
    spec = parse_spec(GOOD, "crm.yaml")
    assert spec.dag_id == "dms_crm"
    assert (spec.chunk_rows, spec.max_error_rate, spec.retries) == (50_000, 0.0, 2)
    assert spec.objects[0].source.encoding == "utf-8"


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (["objects", 0, "fields", "Name", "sourc"], "x", "objects[0] (name: accounts).fields.Name.sourc: unknown key"),
        (["objects", 0, "operation"], "merge", "objects[0] (name: accounts).operation: Input should be"),
        (
            ["objects", 0, "source", "encoding"],
            "klingon",
            "objects[0] (name: accounts).source.encoding: unknown encoding",
        ),
        (["objects", 0, "source", "path"], "../../etc/passwd", "source.path: must be a path relative to the data root"),
        (["objects", 0, "external_id"], None, "objects[0] (name: accounts): an upsert needs 'external_id'"),
        (["objects", 0, "fields", "Name"], {"type": "date"}, "fields.Name: give either 'source'"),
        (["max_error_rate"], 2, "max_error_rate: Input should be less than or equal to 1"),
        (["name"], "has space", "name: use letters, digits and underscores"),
        (["schedule"], "every night", "schedule: 'every night' is not a cron expression"),
        (["timezone"], "Beijing", "timezone: unknown time zone 'Beijing'"),
        (["objects", 0, "source"], {"kind": "xls", "path": "a.xls"}, "source: unknown kind 'xls'; use one of csv"),
        (
            ["objects", 0, "source"],
            {"kind": "pickle", "path": "a.pkl"},
            "objects[0] (name: accounts).source: reading a pickle runs any code inside it",
        ),
        (["objects", 0, "source"], {"kind": "sql", "conn_id": "erp"}, "source: give 'table' or 'query', exactly one"),
        (
            ["objects", 0, "source"],
            {"kind": "csv", "path": "a.csv", "header": False},
            "source: a file without a header needs 'columns'",
        ),
        (["objects", 0, "operation"], "delete", "a delete maps exactly one field, Id"),
        (
            ["objects", 0, "fields", "Account.Legacy_Id__c"],
            {"source": "acct", "parent": "nope"},
            "objects.accounts.fields.Account.Legacy_Id__c.parent: no object named 'nope' in this spec",
        ),
        (
            ["objects", 0, "fields", "Name"],
            {"source": "n", "parent": "accounts"},
            "'parent' belongs on a lookup column",
        ),
        (
            ["objects", 0, "fields", "Name"],
            {"source": "n", "split": {"separator": "-", "part": 0}},
            "fields.Name.split.part: parts count from 1",
        ),
    ],
)
def test_invalid_spec_error_names_the_yaml_path(path: list, value, expected: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec(_with(path, value), "include/migrations/crm.yaml")
    assert str(exc.value).startswith("include/migrations/crm.yaml: invalid migration spec")
    assert expected in str(exc.value)


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nobjects: [\n  - a: b\n")
    with pytest.raises(SpecError, match=r"bad.yaml: line \d+, column \d+ not valid YAML"):
        load_spec(bad)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    bad = tmp_path / "list.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(SpecError, match="list.yaml: the top level must be a mapping"):
        load_spec(bad)


def test_repeated_object_names_are_refused() -> None:
    doc = _with(["objects"], GOOD["objects"] * 2)
    with pytest.raises(SpecError, match="object names must be unique"):
        parse_spec(doc, "x.yaml")


def _obj(name: str, sobject: str, fields: dict, ext: str = "Legacy_Id__c") -> dict:
    return {
        "name": name,
        "sobject": sobject,
        "operation": "upsert",
        "external_id": ext,
        "source": {"path": f"{name}.csv"},
        "fields": {ext: {"source": "id"}, **fields},
    }


def test_load_plan_orders_parents_first_and_defers_lookups_inside_a_cycle() -> None:
    spec = parse_spec(
        {
            "name": "crm",
            "objects": [
                _obj("invoices", "Invoice__c", {"Account__r.Legacy_Id__c": {"source": "acct"}}),
                _obj("contacts", "Contact", {"Account.Legacy_Id__c": {"source": "acct"}}),
                # Accounts name a primary contact, and contacts their account: a cycle.
                _obj("accounts", "Account", {"Primary__r.Legacy_Id__c": {"source": "c", "parent": "contacts"}}),
                _obj("users", "User", {}, ext="Username"),
            ],
        },
        "crm.yaml",
    )
    # `Account__r` means sObject Account__c, which no object loads: it orders nothing.
    assert spec.dependencies()["invoices"] == {}
    assert spec.dependencies()["contacts"] == {"Account.Legacy_Id__c": "accounts"}
    groups, deferred = spec.load_plan()
    assert sorted(map(sorted, groups)) == [["accounts", "contacts"], ["invoices"], ["users"]]
    assert deferred == {
        "invoices": set(),
        "contacts": {"Account.Legacy_Id__c"},
        "accounts": {"Primary__r.Legacy_Id__c"},
        "users": set(),
    }


def test_lookup_by_relationship_name_finds_the_object_loading_that_sobject_and_key() -> None:
    spec = parse_spec(
        {
            "name": "crm",
            "objects": [
                _obj("opps", "Opportunity", {"Account.Legacy_Id__c": {"source": "a"}}),
                _obj("accounts", "Account", {}),
            ],
        },
        "crm.yaml",
    )
    groups, deferred = spec.load_plan()
    assert groups == [["accounts"], ["opps"]]
    assert deferred == {"opps": set(), "accounts": set()}
