"""Unit tests for the SOQL compiler: each compiled query is run against a real SQLite
database laid out per the storage contract, and the test asserts on the rows it returns."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator

import pytest

from salesforce_emulator.schema import OrgSchema, load_schema
from salesforce_emulator.soql import (
    CompiledQuery,
    SoqlError,
    compile_query,
    csv_header,
    csv_row,
    normalize_id,
    record_json,
)

SAMPLE_ORG = "/work/main/include/org/sample_org.yaml"
TODAY = dt.date(2024, 6, 15)

# Ids are stored in their canonical 18-character form; the 15-character forms are used in literals.
A1_15 = "001Ab00000000A1"
A1, A2, A3, A4 = (normalize_id(x) for x in (A1_15, "001Ab00000000A2", "001Ab00000000A3", "001Ab00000000A4"))
C1, C2, C3 = (normalize_id(x) for x in ("003Cd00000000C1", "003Cd00000000C2", "003Cd00000000C3"))


@pytest.fixture(scope="module")
def schema() -> OrgSchema:
    return load_schema(SAMPLE_ORG)


def _insert(db: sqlite3.Connection, schema: OrgSchema, sobject: str, **values: object) -> None:
    obj = schema.get(sobject)
    assert obj is not None
    row = {name: None for name in obj.fields}
    for name, f in obj.fields.items():
        if f.type == "boolean":
            row[name] = 0
    row.update(
        {
            "CreatedDate": "2024-01-01T00:00:00.000+0000",
            "LastModifiedDate": "2024-01-01T00:00:00.000+0000",
            "SystemModstamp": "2024-01-01T00:00:00.000+0000",
        }
    )
    row.update(values)
    cols = ", ".join(f'"{c}"' for c in row)
    marks = ", ".join("?" for _ in row)
    db.execute(f'INSERT INTO "{sobject}" ({cols}) VALUES ({marks})', list(row.values()))


@pytest.fixture()
def db(schema: OrgSchema) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:")
    for obj in schema.objects.values():
        cols = ", ".join(f'"{f.name}" {f.sql_type}' for f in obj.fields.values())
        conn.execute(f'CREATE TABLE "{obj.name}" ({cols})')
    _insert(
        conn, schema, "Account", Id=A1, Name="Acme Corp", Industry="Technology", Type="Partner", Active__c=1,
        NumberOfEmployees=100, AnnualRevenue=5000000.0, Rating__c=12.5, Customer_Since__c="2020-05-01",
        Last_Activity__c="2024-11-07T07:00:00.000+0000", BillingCity="Paris",
    )  # fmt: skip
    _insert(
        conn, schema, "Account", Id=A2, Name="acme labs", Industry="Banking", Type="Prospect", NumberOfEmployees=5,
        Customer_Since__c="2024-06-14", Last_Activity__c="2024-06-14T23:30:00.000+0000", ParentId=A1,
        Description="long text",
    )  # fmt: skip
    _insert(
        conn, schema, "Account", Id=A3, Name="Globex 50% Off_Sale", Type="Other", Customer_Since__c="2024-06-16",
        Last_Activity__c="2024-06-15T00:00:00.000+0000", ParentId=A2,
    )  # fmt: skip
    _insert(conn, schema, "Account", Id=A4, Name="Deleted Co", Industry="Banking", IsDeleted=1)
    _insert(conn, schema, "Contact", Id=C1, LastName="Smith", AccountId=A2, Email="s@example.com")
    _insert(conn, schema, "Contact", Id=C2, LastName="O'Brien", Title="back\\slash")
    _insert(conn, schema, "Contact", Id=C3, LastName="Jones", FirstName="Ann", AccountId=A3, Birthdate="1990-02-03")
    yield conn
    conn.close()


def run(db: sqlite3.Connection, schema: OrgSchema, soql: str, **kwargs: object) -> list[tuple]:
    kwargs.setdefault("today", TODAY)
    cq = compile_query(soql, schema, **kwargs)
    return db.execute(cq.sql, cq.params).fetchall()


def names(db: sqlite3.Connection, schema: OrgSchema, where: str, sobject: str = "Account", **kwargs: object) -> list:
    field = "Name" if sobject == "Account" else "LastName"
    return [r[0] for r in run(db, schema, f"SELECT {field} FROM {sobject} {where}", **kwargs)]


def soql_error(schema: OrgSchema, soql: str) -> SoqlError:
    with pytest.raises(SoqlError) as info:
        compile_query(soql, schema, today=TODAY)
    return info.value


# ---------------------------------------------------------------- basics


def test_default_order_is_insertion_order_and_recycle_bin_is_excluded(db, schema):
    assert names(db, schema, "") == ["Acme Corp", "acme labs", "Globex 50% Off_Sale"]


def test_include_deleted_returns_recycle_bin_rows(db, schema):
    assert "Deleted Co" in names(db, schema, "", include_deleted=True)
    assert names(db, schema, "WHERE IsDeleted = true", include_deleted=True) == ["Deleted Co"]


def test_keywords_and_names_are_case_insensitive_and_canonicalised(db, schema):
    cq = compile_query("select lastname, ACCOUNT.parent.NAME from contact where lastNAME = 'smith'", schema)
    assert cq.sobject == "Contact"
    assert [c.path for c in cq.columns] == [("LastName",), ("Account", "Parent", "Name")]
    assert db.execute(cq.sql, cq.params).fetchall()[0][:2] == ("Smith", "Acme Corp")
    assert cq.columns[1].objects == ("Contact", "Account", "Account")
    assert cq.columns[1].field.name == "Name"


# ---------------------------------------------------------------- WHERE


def test_text_equality_is_case_insensitive(db, schema):
    assert names(db, schema, "WHERE Name = 'ACME CORP'") == ["Acme Corp"]
    assert names(db, schema, "WHERE Industry = 'banking'") == ["acme labs"]


def test_like_uses_wildcards_case_insensitively(db, schema):
    assert names(db, schema, "WHERE Name LIKE 'acme%'") == ["Acme Corp", "acme labs"]
    assert names(db, schema, "WHERE Name LIKE '_CME CORP'") == ["Acme Corp"]


def test_like_escaped_percent_and_underscore_are_literal(db, schema):
    assert names(db, schema, r"WHERE Name LIKE '%50\% Off\_Sale'") == ["Globex 50% Off_Sale"]
    assert names(db, schema, r"WHERE Name LIKE '%0\%__ff%'") == ["Globex 50% Off_Sale"]
    assert names(db, schema, r"WHERE Name LIKE 'acme\_%'") == []


def test_string_literal_backslash_escapes_are_decoded(db, schema):
    assert names(db, schema, r"WHERE LastName = 'O\'Brien'", sobject="Contact") == ["O'Brien"]
    assert names(db, schema, r"WHERE Title = 'back\\slash'", sobject="Contact") == ["O'Brien"]
    assert names(db, schema, 'WHERE LastName = "Jones"', sobject="Contact") == ["Jones"]


def test_in_and_not_in_with_null_semantics(db, schema):
    assert names(db, schema, "WHERE Industry IN ('TECHNOLOGY', 'Banking')") == ["Acme Corp", "acme labs"]
    assert names(db, schema, "WHERE Industry IN ('Banking', null)") == ["acme labs", "Globex 50% Off_Sale"]
    # SOQL is two-valued: a null Industry is "not in" the list.
    assert names(db, schema, "WHERE Industry NOT IN ('Technology')") == ["acme labs", "Globex 50% Off_Sale"]


def test_not_equals_includes_null_values(db, schema):
    assert names(db, schema, "WHERE Industry != 'Technology'") == ["acme labs", "Globex 50% Off_Sale"]
    assert names(db, schema, "WHERE Industry <> 'technology'") == ["acme labs", "Globex 50% Off_Sale"]


def test_null_literal_compiles_to_is_null(db, schema):
    assert names(db, schema, "WHERE Industry = null") == ["Globex 50% Off_Sale"]
    assert names(db, schema, "WHERE Industry != NULL") == ["Acme Corp", "acme labs"]


def test_boolean_literals_and_boolean_null_mean_false(db, schema):
    assert names(db, schema, "WHERE Active__c = true") == ["Acme Corp"]
    assert names(db, schema, "WHERE Active__c = FALSE") == ["acme labs", "Globex 50% Off_Sale"]
    assert names(db, schema, "WHERE Active__c = null") == ["acme labs", "Globex 50% Off_Sale"]
    assert names(db, schema, "WHERE Active__c != null") == ["Acme Corp"]


def test_number_comparisons_exclude_nulls(db, schema):
    assert names(db, schema, "WHERE NumberOfEmployees > 5") == ["Acme Corp"]
    assert names(db, schema, "WHERE NumberOfEmployees <= 100") == ["Acme Corp", "acme labs"]
    assert names(db, schema, "WHERE AnnualRevenue >= 4999999.5") == ["Acme Corp"]
    assert names(db, schema, "WHERE Rating__c = 12.5") == ["Acme Corp"]
    assert names(db, schema, "WHERE NumberOfEmployees > -1") == ["Acme Corp", "acme labs"]


def test_and_or_not_and_parentheses(db, schema):
    assert names(db, schema, "WHERE Name LIKE 'acme%' AND NOT Industry = 'Banking'") == ["Acme Corp"]
    assert names(db, schema, "WHERE Industry = 'Banking' OR Industry = null") == ["acme labs", "Globex 50% Off_Sale"]
    where = "WHERE (Industry = 'Banking' OR Industry = null) AND (NOT (Name LIKE 'G%'))"
    assert names(db, schema, where) == ["acme labs"]
    # NOT on a comparison with a null field: two-valued logic makes it true.
    assert names(db, schema, "WHERE NOT Industry = 'Banking'") == ["Acme Corp", "Globex 50% Off_Sale"]


def test_date_literal_on_date_field(db, schema):
    assert names(db, schema, "WHERE Customer_Since__c = 2024-06-14") == ["acme labs"]
    assert names(db, schema, "WHERE Customer_Since__c < 2024-01-01") == ["Acme Corp"]
    assert names(db, schema, "WHERE Birthdate = 1990-02-03", sobject="Contact") == ["Jones"]


def test_datetime_literals_are_normalised_to_utc(db, schema):
    assert names(db, schema, "WHERE Last_Activity__c = 2024-11-07T07:00:00Z") == ["Acme Corp"]
    assert names(db, schema, "WHERE Last_Activity__c = 2024-11-07T07:00:00.000Z") == ["Acme Corp"]
    assert names(db, schema, "WHERE Last_Activity__c = 2024-11-07T15:00:00+08:00") == ["Acme Corp"]
    assert names(db, schema, "WHERE Last_Activity__c = 2024-11-06T23:00:00.000-08:00") == ["Acme Corp"]
    # 2024-06-15T01:00+02:00 is 2024-06-14T23:00Z: only acme labs (23:30Z) is later and before June 15 00:00.
    where = "WHERE Last_Activity__c > 2024-06-15T01:00:00+02:00 AND Last_Activity__c < 2024-06-15T00:00:00Z"
    assert names(db, schema, where) == ["acme labs"]


def test_relative_date_literals_on_date_field_use_fixed_today(db, schema):
    assert names(db, schema, "WHERE Customer_Since__c = TODAY") == []
    assert names(db, schema, "WHERE Customer_Since__c = YESTERDAY") == ["acme labs"]
    assert names(db, schema, "WHERE Customer_Since__c = TOMORROW") == ["Globex 50% Off_Sale"]
    assert names(db, schema, "WHERE Customer_Since__c = LAST_N_DAYS:1") == ["acme labs"]
    assert names(db, schema, "WHERE Customer_Since__c = NEXT_N_DAYS:1") == ["Globex 50% Off_Sale"]
    assert names(db, schema, "WHERE Customer_Since__c > TODAY") == ["Globex 50% Off_Sale"]
    assert names(db, schema, "WHERE Customer_Since__c < TODAY") == ["Acme Corp", "acme labs"]
    assert names(db, schema, "WHERE Customer_Since__c != YESTERDAY") == ["Acme Corp", "Globex 50% Off_Sale"]
    # A different `today` moves the window.
    assert names(db, schema, "WHERE Customer_Since__c = TODAY", today=dt.date(2020, 5, 1)) == ["Acme Corp"]


def test_relative_date_literals_on_datetime_field_use_utc_day_boundaries(db, schema):
    assert names(db, schema, "WHERE Last_Activity__c = TODAY") == ["Globex 50% Off_Sale"]
    assert names(db, schema, "WHERE Last_Activity__c = YESTERDAY") == ["acme labs"]
    assert names(db, schema, "WHERE Last_Activity__c >= YESTERDAY AND Last_Activity__c <= TODAY") == [
        "acme labs",
        "Globex 50% Off_Sale",
    ]
    assert names(db, schema, "WHERE Last_Activity__c > TODAY") == ["Acme Corp"]
    assert names(db, schema, "WHERE CreatedDate = LAST_N_DAYS:200") == ["Acme Corp", "acme labs", "Globex 50% Off_Sale"]
    assert names(db, schema, "WHERE CreatedDate = LAST_N_DAYS:30") == []
    # LAST_N_DAYS:n includes today; NEXT_N_DAYS:n starts tomorrow.
    assert names(db, schema, "WHERE Last_Activity__c = LAST_N_DAYS:1") == ["acme labs", "Globex 50% Off_Sale"]
    assert names(db, schema, "WHERE Last_Activity__c = NEXT_N_DAYS:1") == []
    assert names(db, schema, "WHERE Last_Activity__c = NEXT_N_DAYS:200") == ["Acme Corp"]


def test_id_literals_accept_15_and_18_characters(db, schema):
    assert A1 == "001Ab00000000A1" + "IAI"  # the checksum suffix for this id
    assert names(db, schema, f"WHERE Id = '{A1_15}'") == ["Acme Corp"]
    assert names(db, schema, f"WHERE Id = '{A1}'") == ["Acme Corp"]
    assert names(db, schema, f"WHERE Id = '{A1.lower()}'") == ["Acme Corp"]  # 18-char ids are case-insensitive
    assert names(db, schema, f"WHERE ParentId IN ('{A1_15}', '{A3}')") == ["acme labs"]


def test_normalize_id_matches_salesforce_checksum():
    assert normalize_id("001D000000IqhSL") == "001D000000IqhSLIAZ"
    assert normalize_id("001d000000iqhslIAZ") == "001D000000IqhSLIAZ"
    assert normalize_id("not-an-id") is None


def test_where_on_parent_field_treats_missing_parent_as_null(db, schema):
    assert names(db, schema, "WHERE Account.Name = null", sobject="Contact") == ["O'Brien"]
    assert names(db, schema, "WHERE Account.Parent.Name LIKE 'ACME%'", sobject="Contact") == ["Smith", "Jones"]
    assert names(db, schema, "WHERE Account.Industry != 'Banking'", sobject="Contact") == ["O'Brien", "Jones"]


# ---------------------------------------------------------------- SELECT, ORDER BY, LIMIT, COUNT


def test_parent_fields_are_joined_and_null_parents_give_null(db, schema):
    rows = run(db, schema, "SELECT LastName, Account.Name, Account.Parent.Name FROM Contact")
    assert [r[:3] for r in rows] == [
        ("Smith", "acme labs", "Acme Corp"),
        ("O'Brien", None, None),
        ("Jones", "Globex 50% Off_Sale", "acme labs"),
    ]


def test_order_by_is_case_insensitive_with_direction_and_nulls(db, schema):
    assert names(db, schema, "ORDER BY Name") == ["Acme Corp", "acme labs", "Globex 50% Off_Sale"]
    assert names(db, schema, "ORDER BY Name DESC") == ["Globex 50% Off_Sale", "acme labs", "Acme Corp"]
    # Nulls sort first by default in both directions.
    assert names(db, schema, "ORDER BY NumberOfEmployees") == ["Globex 50% Off_Sale", "acme labs", "Acme Corp"]
    assert names(db, schema, "ORDER BY NumberOfEmployees DESC") == ["Globex 50% Off_Sale", "Acme Corp", "acme labs"]
    assert names(db, schema, "ORDER BY NumberOfEmployees DESC NULLS LAST") == [
        "Acme Corp",
        "acme labs",
        "Globex 50% Off_Sale",
    ]


def test_order_by_several_items_and_parent_field(db, schema):
    assert names(db, schema, "ORDER BY Active__c DESC, Name DESC") == ["Acme Corp", "Globex 50% Off_Sale", "acme labs"]
    assert names(db, schema, "ORDER BY Account.Name DESC NULLS LAST", sobject="Contact") == [
        "Jones",
        "Smith",
        "O'Brien",
    ]


def test_order_by_picklist_uses_the_defined_value_order(db, schema):
    # Type values are defined as Prospect, Customer - Direct, Customer - Channel, Partner, Other.
    assert names(db, schema, "ORDER BY Type") == ["acme labs", "Acme Corp", "Globex 50% Off_Sale"]


def test_limit_and_offset_page_through_results(db, schema):
    assert names(db, schema, "ORDER BY Name LIMIT 2") == ["Acme Corp", "acme labs"]
    assert names(db, schema, "ORDER BY Name LIMIT 2 OFFSET 2") == ["Globex 50% Off_Sale"]
    assert names(db, schema, "OFFSET 1") == ["acme labs", "Globex 50% Off_Sale"]
    assert names(db, schema, "LIMIT 0") == []


def test_count_query_counts_matching_live_rows(db, schema):
    cq = compile_query("SELECT COUNT() FROM Account", schema)
    assert cq.is_count and cq.columns == []
    assert db.execute(cq.sql, cq.params).fetchone()[0] == 3
    assert run(db, schema, "SELECT count() FROM Account WHERE Name LIKE 'acme%'") == [(2,)]
    assert run(db, schema, "SELECT COUNT() FROM Account LIMIT 1") == [(1,)]
    assert run(db, schema, "SELECT COUNT() FROM Account", include_deleted=True) == [(4,)]


# ---------------------------------------------------------------- rendering


def _one(db: sqlite3.Connection, schema: OrgSchema, soql: str) -> tuple[CompiledQuery, list[tuple]]:
    cq = compile_query(soql, schema, today=TODAY)
    return cq, db.execute(cq.sql, cq.params).fetchall()


def test_record_json_nests_parents_in_select_order_with_typed_values(db, schema):
    cq, rows = _one(
        db,
        schema,
        "SELECT Name, Active__c, NumberOfEmployees, AnnualRevenue, Parent.Name, Parent.Active__c, "
        "Customer_Since__c FROM Account",
    )
    first, second = (record_json(cq, row, "62.0") for row in rows[:2])
    assert first == {
        "attributes": {"type": "Account", "url": f"/services/data/v62.0/sobjects/Account/{A1}"},
        "Name": "Acme Corp",
        "Active__c": True,
        "NumberOfEmployees": 100,
        "AnnualRevenue": 5000000.0,
        "Parent": None,
        "Customer_Since__c": "2020-05-01",
    }
    assert list(first) == ["attributes", "Name", "Active__c", "NumberOfEmployees", "AnnualRevenue", "Parent",
                           "Customer_Since__c"]  # fmt: skip
    assert isinstance(first["NumberOfEmployees"], int) and isinstance(first["AnnualRevenue"], float)
    assert second["Parent"] == {
        "attributes": {"type": "Account", "url": f"/services/data/v62.0/sobjects/Account/{A1}"},
        "Name": "Acme Corp",
        "Active__c": True,
    }
    assert second["AnnualRevenue"] is None and second["Active__c"] is False


def test_record_json_uses_row_id_for_urls_even_when_id_not_selected(db, schema):
    cq, rows = _one(db, schema, "SELECT Account.Parent.Name FROM Contact WHERE LastName = 'Smith'")
    record = record_json(cq, rows[0], "62.0")
    assert record["attributes"]["url"] == f"/services/data/v62.0/sobjects/Contact/{C1}"
    assert record["Account"]["attributes"] == {
        "type": "Account",
        "url": f"/services/data/v62.0/sobjects/Account/{A2}",
    }
    assert record["Account"]["Parent"]["Name"] == "Acme Corp"
    assert record["Account"]["Parent"]["attributes"]["url"].endswith(f"/Account/{A1}")


def test_record_json_null_grandparent_is_null_but_parent_present(db, schema):
    cq, rows = _one(db, schema, "SELECT Id, Parent.Parent.Name FROM Account ORDER BY Name")
    by_id = {r[0]: record_json(cq, r, "62.0") for r in rows}
    assert by_id[A1]["Parent"] is None
    assert by_id[A2]["Parent"]["Parent"] is None  # parent exists, grandparent does not
    assert by_id[A3]["Parent"]["Parent"]["Name"] == "Acme Corp"


def test_csv_header_and_rows_use_bulk_formatting(db, schema):
    cq, rows = _one(
        db,
        schema,
        "SELECT Id, Name, Active__c, NumberOfEmployees, AnnualRevenue, Rating__c, Last_Activity__c, Parent.Name "
        "FROM Account",
    )
    assert csv_header(cq) == [
        "Id", "Name", "Active__c", "NumberOfEmployees", "AnnualRevenue", "Rating__c", "Last_Activity__c",
        "Parent.Name",
    ]  # fmt: skip
    assert csv_row(cq, rows[0]) == [A1, "Acme Corp", "true", "100", "5000000", "12.5", "2024-11-07T07:00:00.000Z", ""]
    assert csv_row(cq, rows[1]) == [A2, "acme labs", "false", "5", "", "", "2024-06-14T23:30:00.000Z", "Acme Corp"]


# ---------------------------------------------------------------- errors


def test_unknown_object_is_invalid_type(schema):
    err = soql_error(schema, "SELECT Id FROM Foo")
    assert err.error_code == "INVALID_TYPE"
    assert err.message == "sObject type 'Foo' is not supported."


def test_unknown_field_is_invalid_field_naming_field_and_entity(schema):
    err = soql_error(schema, "SELECT Id, Foo FROM Account")
    assert err.error_code == "INVALID_FIELD"
    assert err.message.startswith("No such column 'Foo' on entity 'Account'.")
    err = soql_error(schema, "SELECT Account.Bogus FROM Contact")
    assert err.error_code == "INVALID_FIELD" and "'Bogus' on entity 'Account'" in err.message
    err = soql_error(schema, "SELECT Id FROM Account WHERE Nope = 1")
    assert err.error_code == "INVALID_FIELD" and "'Nope'" in err.message


def test_unknown_relationship_is_invalid_field(schema):
    err = soql_error(schema, "SELECT Manager.Name FROM Account")
    assert err.error_code == "INVALID_FIELD" and "relationship 'Manager'" in err.message
    err = soql_error(schema, "SELECT AccountId.Name FROM Contact")  # the field, not the relationship
    assert err.error_code == "INVALID_FIELD" and "'AccountId'" in err.message


@pytest.mark.parametrize(
    ("soql", "token"),
    [
        ("SELECT Id FROM Account WHERE NumberOfEmployees = '5'", "'5'"),
        ("SELECT Id FROM Account WHERE Name = 5", "5"),
        ("SELECT Id FROM Account WHERE Customer_Since__c = 2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z"),
        ("SELECT Id FROM Account WHERE Last_Activity__c = 2024-01-01", "2024-01-01"),
        ("SELECT Id FROM Account WHERE Customer_Since__c = '2024-01-01'", "'2024-01-01'"),
        ("SELECT Id FROM Account WHERE Active__c = 'true'", "'true'"),
        ("SELECT Id FROM Account WHERE Active__c = 1", "1"),
        ("SELECT Id FROM Account WHERE Id = 'abc'", "abc"),
        ("SELECT Id FROM Account WHERE NumberOfEmployees LIKE '5%'", "NumberOfEmployees"),
        ("SELECT Id FROM Account WHERE Active__c > false", "Active__c"),
        ("SELECT Id FROM Account WHERE Description = 'x'", "Description"),
        ("SELECT Id FROM Account ORDER BY Description", "Description"),
    ],
)
def test_type_mismatches_are_rejected_naming_the_value_or_field(schema, soql, token):
    err = soql_error(schema, soql)
    assert err.error_code == "INVALID_FIELD"
    assert token in err.message


@pytest.mark.parametrize(
    ("soql", "token"),
    [
        ("SELECT Industry, COUNT(Id) FROM Account GROUP BY Industry", "COUNT"),
        ("SELECT Id FROM Account GROUP BY Industry", "GROUP"),
        ("SELECT MAX(NumberOfEmployees) FROM Account", "MAX"),
        ("SELECT COUNT(), Name FROM Account", "COUNT"),
        ("SELECT Name, COUNT() FROM Account", "COUNT"),
        ("SELECT Id, (SELECT Id FROM Contacts) FROM Account", "("),
        ("SELECT Id FROM Account WHERE Id IN (SELECT AccountId FROM Contact)", "SELECT"),
        ("SELECT TYPEOF What WHEN Account THEN Name END FROM Event", "TYPEOF"),
        ("SELECT FIELDS(ALL) FROM Account", "FIELDS"),
        ("SELECT Id FROM Account WHERE CALENDAR_YEAR(CreatedDate) = 2024", "CALENDAR_YEAR"),
        ("SELECT toLabel(Industry) FROM Account", "toLabel"),
        ("SELECT Id FROM Account WITH SECURITY_ENFORCED", "WITH"),
        ("SELECT Id FROM Account FOR UPDATE", "FOR"),
        ("SELECT Id FROM Account LIMIT 5 garbage", "garbage"),
        ("SELECT Id FROM Account a", "a"),
        ("SELECT Id FROM Account WHERE (Name = 'x'", "end of query"),
        ("SELECT Id FROM Account WHERE Name = 'x')", ")"),
        ("SELECT Id, Name", "end of query"),
        ("SELECT Id Name Account", "'Name'"),
        ("SELECT Id FROM Account WHERE Name = :name", ":"),
        ("SELECT Id FROM Account WHERE Name = 'a' AND Name = 'b' OR Name = 'c'", "OR"),
        ("SELECT Id FROM Account WHERE CreatedDate = THIS_MONTH", "THIS_MONTH"),
        ("SELECT Id FROM Account WHERE Name = Phone", "Phone"),
        ("SELECT Id FROM Account WHERE Name NOT LIKE 'x'", "NOT"),
        ("SELECT Id FROM Account WHERE Name < null", "null"),
        ("SELECT Id FROM Account ORDER BY Name LIMIT 1.5", "1.5"),
        ("SELECT Id FROM Account OFFSET 1 LIMIT 2", "LIMIT"),
        ("SELECT Id FROM Account; DROP TABLE Account", ";"),
        ("SELECT Id FROM Account WHERE Name = 'unterminated", "'unterminated"),
        (r"SELECT Id FROM Account WHERE Name = 'bad \q escape'", r"\q"),
        ("SELECT Id FROM Account WHERE CreatedDate > 2024-01-01T00:00:00", "2024-01-01T00:00:00"),
        ("SELECT Id FROM Account WHERE Customer_Since__c = 2024-02-30", "2024-02-30"),
        ("SELECT Id, Name, name FROM Account", "Name"),
        ("SELECT COUNT() FROM Account ORDER BY Name", "ORDER BY"),
        ("SELECT Id FROM Account WHERE Industry INCLUDES ('a')", "INCLUDES"),
        ("FROM Account", "FROM"),
    ],
)
def test_unsupported_or_malformed_queries_raise_malformed_query_naming_the_token(schema, soql, token):
    err = soql_error(schema, soql)
    assert err.error_code == "MALFORMED_QUERY", err
    assert token in err.message, err.message


def test_offset_above_2000_is_number_outside_valid_range(schema):
    assert compile_query("SELECT Id FROM Account OFFSET 2000", schema).params[-1] == 2000
    err = soql_error(schema, "SELECT Id FROM Account OFFSET 2001")
    assert err.error_code == "NUMBER_OUTSIDE_VALID_RANGE"
    assert "2000" in err.message
