"""The transform: each pipeline step, each reject code, the up-front spec checks, and no row lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from dms.errors import FatalError
from dms.sources.csv import iter_csv_chunks
from dms.spec import CsvSource, ObjectSpec
from dms.transform import REJECT_COLUMNS, describe_subset, malformed_rejects, transform_chunk

ROOT = Path(__file__).resolve().parents[2]


def sf_field(sf_type: str = "string", **overrides: Any) -> dict[str, Any]:
    """One describe-subset entry: optional, createable and updateable unless told otherwise."""
    info = {
        "type": sf_type,
        "length": 255 if sf_type in ("string", "textarea", "email", "phone", "url", "picklist") else 0,
        "nillable": True,
        "createable": True,
        "updateable": True,
        "externalId": False,
        "picklistValues": [],
        "restrictedPicklist": False,
        "defaultedOnCreate": False,
        "relationshipName": None,
        "referenceTo": [],
    }
    info.update(overrides)
    return info


SOBJECT = {
    "Name": sf_field(length=20),
    "Legacy_Id__c": sf_field(length=40, externalId=True),
    "Description": sf_field("textarea", length=32000),
    "Industry": sf_field("picklist", restrictedPicklist=True, picklistValues=["Banking", "Retail", "Other"]),
    "Type": sf_field("picklist", picklistValues=["Customer", "Partner"]),
    "Regions__c": sf_field("multipicklist", restrictedPicklist=True, picklistValues=["EMEA", "APAC", "AMER"]),
    "Email__c": sf_field("email", length=80),
    "AnnualRevenue": sf_field("currency"),
    "NumberOfEmployees": sf_field("int"),
    "Score__c": sf_field("double"),
    "Active__c": sf_field("boolean", nillable=False, defaultedOnCreate=True),
    "Customer_Since__c": sf_field("date"),
    "Last_Activity__c": sf_field("datetime"),
    "ParentId": sf_field("reference", relationshipName="Parent", referenceTo=["Account"]),
    "CreatedDate": sf_field("datetime", nillable=False, createable=False, updateable=False, defaultedOnCreate=True),
    "Id": sf_field("id", nillable=False, createable=False, updateable=False, defaultedOnCreate=True),
}


def make_obj(fields: dict[str, dict[str, Any]], **kw: Any) -> ObjectSpec:
    doc = {
        "name": "accounts",
        "sobject": "Account",
        "operation": "insert",
        "source": {"path": "a.csv"},
        "fields": fields,
    }
    doc.update(kw)
    return ObjectSpec.model_validate(doc)


def make_batch(columns: dict[str, list[str]], first_row: int = 2) -> pa.RecordBatch:
    n = len(next(iter(columns.values())))
    arrays = {"__row": pa.array(range(first_row, first_row + n), type=pa.int64())}
    arrays.update({name: pa.array(values, type=pa.string()) for name, values in columns.items()})
    return pa.record_batch(arrays)


def run(fields: dict[str, dict[str, Any]], columns: dict[str, list[str]], sobject: dict | None = None, **kw: Any):
    result = transform_chunk(make_obj(fields, **kw), make_batch(columns), sobject or SOBJECT)
    assert len(result.ready) + len(result.rejects) == len(next(iter(columns.values())))
    return result


def one_field(spec: dict[str, Any], values: list[str], field: str = "Name", **kw: Any):
    """Transform a single source column `v` into `field`; returns (ready values, rejects)."""
    result = run({field: {"source": "v", **spec}}, {"v": values}, **kw)
    return result.ready[field].tolist(), result.rejects


# ---------------------------------------------------------------- shape of the result


def test_ready_has_row_then_the_spec_fields_as_strings_and_rejects_have_the_report_columns() -> None:
    result = run(
        {"Name": {"source": "name"}, "NumberOfEmployees": {"source": "emp", "type": "integer"}},
        {"name": ["Acme", "Globex"], "emp": ["12", "x"]},
    )
    assert list(result.ready.columns) == ["__row", "Name", "NumberOfEmployees"]
    assert result.ready["__row"].dtype == np.int64
    assert all(result.ready[c].dtype == "str" for c in ["Name", "NumberOfEmployees"])
    assert result.ready.to_dict("records") == [{"__row": 2, "Name": "Acme", "NumberOfEmployees": "12"}]
    # Staged with 32-bit offsets (the stage compresses them faster); pandas reads them the same.
    assert result.table.schema.types == [pa.int64(), pa.string(), pa.string()]
    assert list(result.rejects.columns) == REJECT_COLUMNS
    assert result.rejects["row"].dtype == np.int64
    assert result.rejects.to_dict("records") == [
        {"row": 3, "key": "", "field": "NumberOfEmployees", "reason": "'x' is not a whole number", "code": "TYPE"}
    ]


def test_empty_chunk_gives_empty_frames_with_the_same_columns() -> None:
    result = run({"Name": {"source": "name"}}, {"name": []})
    assert list(result.ready.columns) == ["__row", "Name"] and result.ready.empty
    assert list(result.rejects.columns) == REJECT_COLUMNS and result.rejects.empty


def test_a_table_and_typed_or_null_columns_are_accepted() -> None:
    table = pa.table({"__row": pa.array([2, 3], pa.int64()), "emp": pa.array([5, None], pa.int64())})
    result = transform_chunk(make_obj({"NumberOfEmployees": {"source": "emp", "type": "integer"}}), table, SOBJECT)
    assert result.ready["NumberOfEmployees"].tolist() == ["5", ""]


# ---------------------------------------------------------------- steps


def test_constant_value_fills_every_row_and_goes_through_the_cast() -> None:
    result = run(
        {"Name": {"source": "v"}, "Type": {"value": "Partner"}, "Active__c": {"value": True, "type": "boolean"}},
        {"v": ["a", "b"]},
    )
    assert result.ready["Type"].tolist() == ["Partner", "Partner"]
    assert result.ready["Active__c"].tolist() == ["true", "true"]


def test_strip_removes_unicode_whitespace_unless_turned_off() -> None:
    assert one_field({}, ["  Acme\t", "\u3000北京\u3000"])[0] == ["Acme", "北京"]
    assert one_field({"strip": False}, [" Acme "])[0] == [" Acme "]


@pytest.mark.parametrize(("case", "expected"), [("upper", "ACME CORP"), ("lower", "acme corp"), ("title", "Acme Corp")])
def test_case_is_applied(case: str, expected: str) -> None:
    assert one_field({"case": case}, ["aCME corp"])[0] == [expected]


def test_value_map_translates_after_strip_and_case_and_rejects_unlisted_values() -> None:
    values, rejects = one_field(
        {"case": "upper", "value_map": {"B": "Banking", "R": "Retail"}}, [" b", "R", "Q"], field="Industry"
    )
    assert values == ["Banking", "Retail"]
    assert rejects[["row", "field", "code"]].to_dict("records") == [
        {"row": 4, "field": "Industry", "code": "VALUE_MAP"}
    ]
    assert "'Q' is not in the value_map" in rejects["reason"][0]


def test_value_map_star_entry_replaces_every_unlisted_value() -> None:
    values, rejects = one_field({"value_map": {"B": "Banking", "*": "Other"}}, ["B", "Q", "Z"], field="Industry")
    assert values == ["Banking", "Other", "Other"] and rejects.empty


def test_value_map_leaves_empty_values_to_default_and_null_targets_become_empty() -> None:
    values, rejects = one_field(
        {"value_map": {"C": "Customer", "X": None}, "default": "Partner"}, ["", "X", "C"], field="Type"
    )
    assert values == ["Partner", "Partner", "Customer"] and rejects.empty


def test_value_map_with_non_string_yaml_values_maps_to_their_source_text() -> None:
    values, _ = one_field({"type": "boolean", "value_map": {"Y": True, "N": False}}, ["Y", "N"], field="Active__c")
    assert values == ["true", "false"]
    values, _ = one_field(
        {"type": "number", "value_map": {"big": 1e20, "half": 0.5}}, ["big", "half"], field="Score__c"
    )
    assert values == ["100000000000000000000", "0.5"]


def test_value_map_file_entries_apply_and_inline_entries_win() -> None:
    obj = make_obj({"Industry": {"source": "v", "value_map_file": "maps/industry.csv", "value_map": {"科技": "Other"}}})
    file_map = {"科技": "Retail", "金融": "Banking"}
    result = transform_chunk(
        obj, make_batch({"v": ["金融", "科技", "未知"]}), SOBJECT, value_maps={"Industry": file_map}
    )
    assert result.ready["Industry"].tolist() == ["Banking", "Other"]
    assert result.rejects["code"].tolist() == ["VALUE_MAP"]


@pytest.mark.parametrize(
    ("part", "expected"),
    [(1, ["北京", "上海", "", "广州"]), (2, ["朝阳区", "", "", "天河区"]), (-1, ["朝阳区", "上海", "", "3"])],
)
def test_split_takes_one_part_and_missing_parts_are_empty(part: int, expected: list[str]) -> None:
    values, rejects = one_field(
        {"split": {"separator": "/", "part": part}}, ["北京/朝阳区", "上海", "", "广州 / 天河区/3"], field="Description"
    )
    assert values == expected and rejects.empty


def test_composite_source_joins_stripped_parts_and_is_empty_when_a_part_is() -> None:
    result = run(
        {"Legacy_Id__c": {"source": ["co", "no"], "separator": "-"}, "Name": {"source": "co"}},
        {"co": [" A1 ", "A2", ""], "no": ["01", "", "03"]},
    )
    assert result.ready["Legacy_Id__c"].tolist() == ["A1-01", "", ""]


def test_default_fills_only_empty_values() -> None:
    assert one_field({"default": "Unknown"}, ["", "  ", "Acme"])[0] == ["Unknown", "Unknown", "Acme"]


def test_number_accepts_plain_and_grouped_decimals_and_writes_them_without_grouping() -> None:
    values, rejects = one_field(
        {"type": "number"}, ["1,234.50", "-12,345", "+0.5", ".25", "7.", "1234567.891", ""], field="AnnualRevenue"
    )
    assert values == ["1234.50", "-12345", "0.5", "0.25", "7", "1234567.891", ""]
    assert rejects.empty


@pytest.mark.parametrize("bad", ["12,5", "1.234,50", "1,23", "1e3", "12 000", "abc", "１２", "--1"])
def test_number_rejects_european_grouping_exponents_and_text_as_type(bad: str) -> None:
    values, rejects = one_field({"type": "number"}, [bad], field="AnnualRevenue")
    assert values == []
    assert rejects["code"].tolist() == ["TYPE"] and f"'{bad}' is not a number" in rejects["reason"][0]


def test_integer_accepts_grouping_zero_fractions_and_leading_zeros() -> None:
    values, rejects = one_field(
        {"type": "integer"},
        ["1,234", "12.0", "007", "-0", "+5", "2147483647", "-2147483648"],
        field="NumberOfEmployees",
    )
    assert values == ["1234", "12", "7", "0", "5", "2147483647", "-2147483648"] and rejects.empty


def test_integer_rejects_fractions_and_values_outside_a_salesforce_int() -> None:
    values, rejects = one_field(
        {"type": "integer"}, ["1.5", "2147483648", "-2147483649", "-99999999999", "3"], field="NumberOfEmployees"
    )
    assert values == ["3"]
    assert rejects["code"].tolist() == ["TYPE"] * 4
    assert "not a whole number" in rejects["reason"][0]
    assert "outside the range of a Salesforce int" in rejects["reason"][1]


def test_integer_into_a_double_field_has_no_int32_limit() -> None:
    assert one_field({"type": "integer"}, ["99999999999"], field="Score__c")[0] == ["99999999999"]


def test_boolean_matches_true_and_false_values_case_insensitively() -> None:
    values, rejects = one_field({"type": "boolean"}, ["YES", "n", "True", "0", "", "maybe"], field="Active__c")
    assert values == ["true", "false", "true", "false", ""]
    assert rejects["code"].tolist() == ["TYPE"] and "'maybe' is not a boolean" in rejects["reason"][0]


def test_boolean_custom_values_from_the_spec() -> None:
    spec = {"type": "boolean", "true_values": ["是"], "false_values": ["否"]}
    values, rejects = one_field(spec, ["是", "否", "yes"], field="Active__c")
    assert values == ["true", "false"] and rejects["code"].tolist() == ["TYPE"]


def test_date_with_format_is_written_iso_and_bad_or_out_of_range_dates_are_rejected() -> None:
    values, rejects = one_field(
        {"type": "date", "format": "%d/%m/%Y"},
        ["05/01/2024", "31/02/2024", "2024-01-05", "01/01/1600", "29/02/2024"],
        field="Customer_Since__c",
    )
    assert values == ["2024-01-05", "2024-02-29"]
    assert rejects["code"].tolist() == ["TYPE"] * 3
    assert "'31/02/2024' is not a date in the format %d/%m/%Y" in rejects["reason"][0]
    assert "outside the date range Salesforce accepts" in rejects["reason"][2]


def test_date_default_format_is_iso() -> None:
    values, rejects = one_field({"type": "date"}, ["2024-01-05", "2024-1-5", "20240105"], field="Customer_Since__c")
    assert values[0] == "2024-01-05"
    assert "20240105" in " ".join(rejects["reason"])


def test_date_with_an_offset_keeps_the_calendar_day_as_written() -> None:
    # Converting 23:30 at -08:00 to UTC would give the 6th; a date must never shift.
    values, _ = one_field(
        {"type": "date", "format": "%Y-%m-%d %H:%M %z"}, ["2024-01-05 23:30 -0800"], field="Customer_Since__c"
    )
    assert values == ["2024-01-05"]


def test_datetime_naive_values_are_localised_in_the_spec_timezone_then_written_in_utc() -> None:
    values, rejects = one_field(
        {"type": "datetime", "timezone": "Asia/Shanghai"},
        ["2024-01-01 03:00:00", "2024-06-30T12:34:56.789", "2024-01-01"],
        field="Last_Activity__c",
    )
    assert values == ["2023-12-31T19:00:00.000Z", "2024-06-30T04:34:56.789Z", "2023-12-31T16:00:00.000Z"]
    assert rejects.empty


def test_datetime_with_explicit_offset_ignores_the_spec_timezone() -> None:
    values, _ = one_field(
        {"type": "datetime", "timezone": "Asia/Shanghai"},
        ["2024-01-01T03:00:00Z", "2024-01-01T03:00:00+02:00"],
        field="Last_Activity__c",
    )
    assert values == ["2024-01-01T03:00:00.000Z", "2024-01-01T01:00:00.000Z"]


def test_datetime_without_timezone_is_utc_and_custom_formats_work() -> None:
    values, _ = one_field(
        {"type": "datetime", "format": "%d.%m.%Y %H:%M"}, ["05.01.2024 13:45"], field="Last_Activity__c"
    )
    assert values == ["2024-01-05T13:45:00.000Z"]


def test_datetime_in_the_spring_gap_is_rejected_and_the_autumn_overlap_takes_the_first() -> None:
    values, rejects = one_field(
        {"type": "datetime", "timezone": "America/New_York"},
        ["2024-03-10 02:30:00", "2024-11-03 01:30:00", "not a time"],
        field="Last_Activity__c",
    )
    assert values == ["2024-11-03T05:30:00.000Z"]  # 01:30 EDT (UTC-4), the first of the two
    assert rejects["code"].tolist() == ["TYPE", "TYPE"]
    assert "does not exist in America/New_York" in rejects["reason"][0]
    assert "'not a time' is not a datetime" in rejects["reason"][1]


# ---------------------------------------------------------------- reject codes from the describe


def test_required_by_the_spec_or_by_salesforce_rejects_empty_values() -> None:
    sobject = {**SOBJECT, "Name": sf_field(length=80, nillable=False)}
    result = run(
        {"Name": {"source": "name"}, "Type": {"source": "type", "required": True}},
        {"name": ["", "Acme", "Globex"], "type": ["Customer", "", "Partner"]},
        sobject=sobject,
    )
    assert result.rejects[["row", "field", "code"]].to_dict("records") == [
        {"row": 2, "field": "Name", "code": "REQUIRED"},
        {"row": 3, "field": "Type", "code": "REQUIRED"},
    ]
    assert result.rejects["reason"].tolist() == [
        "Name is empty, and it is required in Salesforce",
        "Type is empty, and it is required by the spec",
    ]


def test_salesforce_required_fields_are_not_enforced_on_update_where_empty_means_unchanged() -> None:
    sobject = {**SOBJECT, "Name": sf_field(length=80, nillable=False)}
    result = run(
        {"Id": {"source": "id"}, "Name": {"source": "name"}},
        {"id": ["001A", ""], "name": ["", "x"]},
        sobject=sobject,
        operation="update",
    )
    assert result.ready["Id"].tolist() == ["001A"]
    assert result.rejects[["field", "code"]].to_dict("records") == [{"field": "Id", "code": "REQUIRED"}]


def test_upsert_rejects_rows_without_an_external_id() -> None:
    result = run(
        {"Legacy_Id__c": {"source": "id"}, "Name": {"source": "name"}},
        {"id": ["L1", ""], "name": ["a", "b"]},
        operation="upsert",
        external_id="Legacy_Id__c",
    )
    assert result.rejects[["row", "field", "code"]].to_dict("records") == [
        {"row": 3, "field": "Legacy_Id__c", "code": "REQUIRED"}
    ]


def test_text_longer_than_the_salesforce_field_is_rejected_with_length() -> None:
    values, rejects = one_field({}, ["x" * 20, "y" * 21, "中" * 20])
    assert values == ["x" * 20, "中" * 20]  # characters, not bytes
    assert rejects["code"].tolist() == ["LENGTH"]
    assert "is longer than 20 characters (21)" in rejects["reason"][0]


def test_restricted_picklist_rejects_unknown_values_and_unrestricted_accepts_them() -> None:
    values, rejects = one_field({}, ["Banking", "banking", "Space"], field="Industry")
    assert values == ["Banking"]
    assert rejects["code"].tolist() == ["PICKLIST", "PICKLIST"]
    assert "'banking' is not a value of the restricted picklist Industry" in rejects["reason"][0]
    assert one_field({}, ["Anything"], field="Type")[0] == ["Anything"]


def test_restricted_multipicklist_checks_every_choice() -> None:
    values, rejects = one_field({}, ["EMEA;APAC", "EMEA;MARS", ""], field="Regions__c")
    assert values == ["EMEA;APAC", ""]
    assert rejects["row"].tolist() == [3] and rejects["code"].tolist() == ["PICKLIST"]


def test_email_fields_reject_values_that_are_not_addresses_with_format() -> None:
    values, rejects = one_field({}, ["ann@example.com", "ann@", "ann example.com", ""], field="Email__c")
    assert values == ["ann@example.com", ""]
    assert rejects["code"].tolist() == ["FORMAT", "FORMAT"]
    assert "'ann@' is not an email address" in rejects["reason"][0]


def test_duplicate_external_ids_reject_every_occurrence_case_insensitively() -> None:
    result = run(
        {"Legacy_Id__c": {"source": "id"}, "Name": {"source": "name"}},
        {"id": ["A1", "B2", "a1", "C3", "A1"], "name": ["x", "y", "z", "w", "v"]},
        operation="upsert",
        external_id="Legacy_Id__c",
    )
    assert result.ready["Legacy_Id__c"].tolist() == ["B2", "C3"]
    dupes = result.rejects
    assert dupes["row"].tolist() == [2, 4, 6] and set(dupes["code"]) == {"DUPLICATE_KEY"}
    assert "'A1' is in 3 rows of this chunk (rows 2, 4, 6)" in dupes["reason"][0]


def test_rows_rejected_for_another_reason_do_not_make_a_duplicate_key() -> None:
    result = run(
        {"Legacy_Id__c": {"source": "id"}, "NumberOfEmployees": {"source": "emp", "type": "integer"}},
        {"id": ["A1", "A1"], "emp": ["x", "5"]},
        operation="upsert",
        external_id="Legacy_Id__c",
    )
    # Only row 3 would reach Salesforce, so it is no duplicate there.
    assert result.ready["__row"].tolist() == [3]
    assert result.rejects["code"].tolist() == ["TYPE"]


def test_a_row_with_several_problems_is_rejected_once_with_the_first_in_spec_order() -> None:
    result = run(
        {"Name": {"source": "name"}, "NumberOfEmployees": {"source": "emp", "type": "integer"}},
        {"name": ["x" * 30], "emp": ["many"]},
    )
    assert result.rejects[["field", "code"]].to_dict("records") == [{"field": "Name", "code": "LENGTH"}]


def test_reject_key_is_the_key_column_else_the_external_id_source() -> None:
    fields = {"Legacy_Id__c": {"source": "id"}, "Name": {"source": "name"}}
    columns = {"id": [" L1 ", "L2"], "ref": ["R1", "R2"], "name": ["x" * 30, "y" * 30]}
    by_key = run(fields, columns, key="ref")
    assert by_key.rejects["key"].tolist() == ["R1", "R2"]
    by_external_id = run(fields, columns, operation="upsert", external_id="Legacy_Id__c")
    assert by_external_id.rejects["key"].tolist() == ["L1", "L2"]


def test_lookup_by_parent_external_id_passes_through_its_relationship() -> None:
    result = run(
        {"Name": {"source": "n"}, "Parent.Legacy_Id__c": {"source": "parent"}}, {"n": ["a"], "parent": [" P1 "]}
    )
    assert result.ready["Parent.Legacy_Id__c"].tolist() == ["P1"]


# ---------------------------------------------------------------- configuration errors, before any row


@pytest.mark.parametrize(
    ("fields", "kw", "expected"),
    [
        ({"Nmae": {"source": "v"}}, {}, r"Account\.Nmae: no such field on Account"),
        (
            {"Active__c": {"source": "v", "type": "number"}},
            {},
            r"spec says type 'number' but the Salesforce field is 'boolean'; use type: boolean",
        ),
        ({"AnnualRevenue": {"source": "v"}}, {}, r"'string' but the Salesforce field is 'currency'; use type: number"),
        ({"NumberOfEmployees": {"source": "v", "type": "number"}}, {}, r"use type: integer"),
        (
            {"CreatedDate": {"source": "v", "type": "datetime"}},
            {},
            r"CreatedDate: Salesforce does not let an insert set this field",
        ),
        ({"Name": {"source": "v", "format": "%d"}}, {}, r"'format' applies to date and datetime fields only"),
        ({"Customer_Since__c": {"source": "v", "type": "date", "timezone": "UTC"}}, {}, r"a date is never shifted"),
        (
            {"Last_Activity__c": {"source": "v", "type": "datetime", "timezone": "Mars/Olympus"}},
            {},
            r"unknown timezone",
        ),
        (
            {"Active__c": {"source": "v", "type": "boolean", "true_values": ["y"], "false_values": ["Y"]}},
            {},
            r"both true_values and false_values",
        ),
        ({"Owner.Legacy_Id__c": {"source": "v"}}, {}, r"no lookup relationship named 'Owner'"),
        (
            {"Name": {"source": "v"}},
            {"operation": "upsert", "external_id": "Name"},
            r"Name: an upsert matches on an external id field",
        ),
    ],
)
def test_spec_that_does_not_fit_the_org_is_a_fatal_error_before_any_row(fields, kw, expected) -> None:
    with pytest.raises(FatalError, match=expected) as err:
        transform_chunk(make_obj(fields, **kw), make_batch({"v": ["1"]}), SOBJECT)
    assert "'accounts' (Account)" in str(err.value)


def test_unmapped_salesforce_required_field_is_a_fatal_error_on_insert() -> None:
    sobject = {**SOBJECT, "Name": sf_field(nillable=False)}
    with pytest.raises(FatalError, match=r"Salesforce requires Name on create, and the spec does not map it"):
        transform_chunk(make_obj({"Type": {"source": "v"}}), make_batch({"v": ["x"]}), sobject)


def test_source_column_missing_from_the_chunk_is_a_fatal_error_listing_the_columns() -> None:
    with pytest.raises(FatalError, match=r"source column\(s\) \['nmae'\] not in the data; the columns are \['name'\]"):
        transform_chunk(make_obj({"Name": {"source": "nmae"}}), make_batch({"name": ["x"]}), SOBJECT)


def test_field_names_match_the_describe_case_insensitively_like_salesforce() -> None:
    result = run({"legacy_id__c": {"source": "v"}}, {"v": ["x"]})
    assert result.ready.columns.tolist() == ["__row", "legacy_id__c"]


# ---------------------------------------------------------------- the describe subset and malformed rows


def test_describe_subset_takes_exactly_what_the_transform_needs_from_a_full_describe() -> None:
    from salesforce_emulator.schema import describe_object, load_schema

    schema = load_schema(ROOT / "include" / "org" / "sample_org.yaml")
    describe = describe_object(schema, schema.objects["Account"], schema.api_version)
    subset = describe_subset(describe)
    assert set(subset) == {f["name"] for f in describe["fields"]}
    assert set(subset["Name"]) == {
        "type",
        "length",
        "nillable",
        "createable",
        "updateable",
        "externalId",
        "picklistValues",
        "restrictedPicklist",
        "defaultedOnCreate",
        "relationshipName",
        "referenceTo",
    }
    assert subset["Name"]["type"] == "string" and subset["Name"]["nillable"] is False
    assert subset["Legacy_Id__c"]["externalId"] is True and subset["Legacy_Id__c"]["length"] == 40
    assert subset["Industry"]["restrictedPicklist"] is True and "Banking" in subset["Industry"]["picklistValues"]
    assert subset["Active__c"]["defaultedOnCreate"] is True
    assert subset["ParentId"]["relationshipName"] == "Parent" and subset["ParentId"]["referenceTo"] == ["Account"]
    assert subset["Id"]["createable"] is False


def test_describe_subset_drops_inactive_picklist_values() -> None:
    describe = {
        "fields": [
            {
                "name": "Stage",
                "type": "picklist",
                "picklistValues": [{"value": "Open", "active": True}, {"value": "Legacy", "active": False}],
            }
        ]
    }
    assert describe_subset(describe)["Stage"]["picklistValues"] == ["Open"]


def test_malformed_rows_become_rejects_in_the_same_format() -> None:
    frame = malformed_rejects([(7, "a,b", "row has 2 fields, expected 3")])
    assert list(frame.columns) == REJECT_COLUMNS
    assert frame.to_dict("records") == [
        {"row": 7, "key": "", "field": "", "reason": "row has 2 fields, expected 3: 'a,b'", "code": "MALFORMED"}
    ]


# ---------------------------------------------------------------- no row lost


def test_every_input_row_is_in_exactly_one_of_ready_and_rejects() -> None:
    rng = np.random.default_rng(7)
    n = 5_000

    def pick(options: list[str]) -> list[str]:
        return [options[i] for i in rng.integers(0, len(options), n)]

    columns = {
        "id": [f"L{i}" for i in rng.integers(0, 4_000, n)],  # some duplicates
        "name": pick(["Acme", "", "x" * 25, "  Globex ", "北京"]),
        "ind": pick(["B", "R", "Q", ""]),
        "rev": pick(["1,234.50", "12,5", "", "7"]),
        "emp": pick(["12", "1.5", "3000000000", ""]),
        "act": pick(["yes", "no", "maybe", ""]),
        "since": pick(["05/01/2024", "31/02/2024", ""]),
        "last": pick(["2024-01-01 10:00", "2024-03-10 02:30", "bad", ""]),
        "mail": pick(["a@b.co", "nope", ""]),
    }
    fields = {
        "Legacy_Id__c": {"source": "id"},
        "Name": {"source": "name", "required": True},
        "Industry": {"source": "ind", "value_map": {"B": "Banking", "R": "Retail"}},
        "AnnualRevenue": {"source": "rev", "type": "number"},
        "NumberOfEmployees": {"source": "emp", "type": "integer"},
        "Active__c": {"source": "act", "type": "boolean"},
        "Customer_Since__c": {"source": "since", "type": "date", "format": "%d/%m/%Y"},
        "Last_Activity__c": {"source": "last", "type": "datetime", "timezone": "America/New_York"},
        "Email__c": {"source": "mail"},
    }
    batch = make_batch(columns, first_row=100)
    result = transform_chunk(make_obj(fields, operation="upsert", external_id="Legacy_Id__c"), batch, SOBJECT)
    ready_rows = set(result.ready["__row"])
    rejected_rows = set(result.rejects["row"])
    assert len(result.ready) + len(result.rejects) == batch.num_rows
    assert ready_rows.isdisjoint(rejected_rows)
    assert ready_rows | rejected_rows == set(range(100, 100 + n))
    assert len(rejected_rows) == len(result.rejects)  # one reject line per rejected row
    assert {"REQUIRED", "LENGTH", "VALUE_MAP", "TYPE", "FORMAT", "DUPLICATE_KEY"} <= set(result.rejects["code"])
    assert len(result.ready) > 0


def test_csv_chunk_to_transform_accounts_for_every_source_row(tmp_path: Path) -> None:
    text = "编号,名称,员工\nC1,华为,12\nC2,,5\nC3,腾讯\nC4,阿里,多\n"
    path = tmp_path / "gb.csv"
    path.write_bytes(text.encode("gb18030"))
    [chunk] = iter_csv_chunks(path, CsvSource(path="gb.csv", encoding="gb18030"), 100)
    obj = make_obj(
        {
            "Legacy_Id__c": {"source": "编号"},
            "Name": {"source": "名称", "required": True},
            "NumberOfEmployees": {"source": "员工", "type": "integer"},
        },
        key="编号",
    )
    result = transform_chunk(obj, chunk.batch, SOBJECT)
    rejects = pd.concat([result.rejects, pd.DataFrame(chunk.malformed_records(), columns=REJECT_COLUMNS)])
    assert result.ready[["__row", "Name"]].to_dict("records") == [{"__row": 2, "Name": "华为"}]
    assert sorted(zip(rejects["row"], rejects["code"], strict=True)) == [(3, "REQUIRED"), (4, "MALFORMED"), (5, "TYPE")]
    assert rejects.set_index("row").loc[5, "key"] == "C4"


# ---------------------------------------------------------------- expressions and anonymisation


def test_expr_fields_read_their_columns_and_go_through_the_checks() -> None:
    result = run(
        {
            "Name": {"expr": "concat(upper(strip(city)), '-', `客户 编号`)"},
            "Score__c": {"expr": "number(qty) * number(price)", "type": "number"},
        },
        {
            "city": [" bj ", "sh", "gz"],
            "客户 编号": ["1", "2", "3"],
            "qty": ["2", "x", "1.5"],
            "price": ["10", "1", "3"],
        },
    )
    assert result.ready["Name"].tolist() == ["BJ-1", "SH-2", "GZ-3"]
    # number('x') is empty: the product is empty, not an error.
    assert result.ready["Score__c"].tolist() == ["20", "", "4.5"]


def test_expr_result_longer_than_the_field_is_rejected_like_any_value() -> None:
    result = run({"Name": {"expr": "concat(a, a, a)"}}, {"a": ["1234567", "12"]})
    assert result.ready["Name"].tolist() == ["121212"]
    assert result.rejects["code"].tolist() == ["LENGTH"]


def test_anonymised_values_are_stable_keyed_and_still_validated() -> None:
    fields = {
        "Name": {"source": "n", "anonymise": {"method": "mask", "keep": 2}},
        "Email__c": {"source": "e", "anonymise": {"method": "hash", "kind": "email"}},
    }
    columns = {"n": ["王小明", "李四"], "e": ["Wang@Example.cn", "li@example.cn"]}
    obj = make_obj(fields)
    one = transform_chunk(obj, make_batch(columns), SOBJECT, salt="s1")
    again = transform_chunk(obj, make_batch(columns), SOBJECT, salt="s1")
    other = transform_chunk(obj, make_batch(columns), SOBJECT, salt="s2")
    # A value no longer than `keep` is masked whole: showing its end would show all of it.
    assert one.ready["Name"].tolist() == ["*小明", "**"]
    emails = one.ready["Email__c"].tolist()
    assert all(e.endswith("@example.invalid") for e in emails) and one.rejects.empty
    assert emails == again.ready["Email__c"].tolist() != other.ready["Email__c"].tolist()
    assert "wang" not in emails[0].lower()


def test_hash_without_the_salt_is_a_fatal_error_naming_the_variable() -> None:
    obj = make_obj({"Name": {"source": "n", "anonymise": {"method": "hash"}}})
    with pytest.raises(FatalError, match="dms_anonymise_salt"):
        transform_chunk(obj, make_batch({"n": ["x"]}), SOBJECT)


def test_has_value_agrees_with_the_pandas_comparison() -> None:
    """The Arrow-offsets reading of `values != ""`: empty strings are absent, nulls and spaces present."""
    from dms.transform.casting import has_value

    values = pd.Series(["a", "", None, " ", "华夏", ""], dtype="str")
    assert (
        has_value(values).tolist()
        == (values != "").to_numpy(dtype=bool).tolist()
        == [
            True,
            False,
            True,
            True,
            True,
            False,
        ]
    )
    assert has_value(values.iloc[1:3]).tolist() == [False, True]  # a slice keeps its own offsets
    assert has_value(pd.Series([], dtype="str")).tolist() == []
