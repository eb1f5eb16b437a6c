"""Bad inputs through a whole DMS DAG: each bad row is rejected naming its place, every good row loads.

One spec, two small CSVs under a temporary data root, against the real Redis, audit store and
Salesforce emulator. The accounts file gathers a bad row of every kind the readers and the
transform meet (field counts, types, repeated keys within and across chunks, bytes that are not
UTF-8, a 10 MB value, a quote never closed); the contacts file is cut off inside its last row.
Each run ends with the reconcile identity and the rows' reasons in the rejects CSV.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from scripts.services import EmulatorProcess

DAG_ID = "dms_bad_inputs"
SPEC = """\
name: bad_inputs
description: Bad inputs of every kind, rejected row by row.
chunk_rows: 4
objects:
  - name: accounts
    sobject: Account
    operation: upsert
    external_id: Legacy_Id__c
    source: {kind: csv, path: crm/accounts.csv}
    fields:
      Legacy_Id__c: {source: id}
      Name: {source: name}
      AnnualRevenue: {source: revenue, type: number}
      Customer_Since__c: {source: since, type: date}
      Active__c: {source: active, type: boolean}
      Description: {source: note}
  - name: contacts
    sobject: Contact
    operation: upsert
    external_id: Legacy_Id__c
    source: {kind: csv, path: crm/contacts.csv}
    fields:
      Legacy_Id__c: {source: id}
      LastName: {source: last_name}
      Birthdate: {source: born, type: date}
"""
TEN_MB = 10 << 20
# (row, id, name, revenue, since, active, note) before the lines written by hand below; the
# header has a column the spec does not read (`region`), which is ignored.
ACCOUNTS_HEAD = b"id,name,revenue,since,active,note,region\n"
ACCOUNT_LINES = [
    b"A01,Alpha,100.5,2020-01-02,true,first,north\n",  # row 2: loads (and holds A01)
    b"A02,Beta,200\n",  # row 3: too few fields
    b"A03,Gamma,300,2020-01-03,false,ok,south,surplus\n",  # row 4: too many fields
    b"A04,Delta,lots,2020-01-04,true,ok,east\n",  # row 5: revenue is not a number
    b"A05,Epsilon,1,2020-02-30,true,ok,west\n",  # row 6: no 30 February
    b"A06,Zeta,1,2020-01-06,maybe,ok,west\n",  # row 7: not a boolean
    b"A07,Eta,1,2020-01-07,true,ok,west\n",  # row 8: A07 twice in chunk 1 (case-insensitive)
    b"a07,Eta bis,1,2020-01-07,true,ok,west\n",  # row 9
    b"A08,Theta,1,2020-01-08,true," + b"x" * TEN_MB + b",west\n",  # row 10: 10 MB note
    b"A09,Iota,1,2020-01-09,true," + "备注".encode("gb18030") + b",west\n",  # row 11: not UTF-8
    b"A10,Kappa,1,2020-01-10,true,ok,west\n",  # row 12: loads
    b'A11,Lambda,1,2020-01-11,true,"never closed,west\n',  # row 13: a quote that never closes
    b"A12,Mu,1,2020-01-12,true,ok,west\n",  # row 14: loads (read again after row 13)
    b"A01,Alpha again,1,2020-01-13,true,ok,west\n",  # row 15: A01 again, in a later chunk
    b"A13,Nu,1,2020-01-13,true,ok,west\n",  # row 16: loads
]
CONTACTS = 'id,last_name,born\nK1,Smith,1980-01-01\nK2,Jones,1981-02-03\nK3,"Cut off in the midd'
# A UTF-8 file declared GB18030, the other wrong encoding: decoded by the transform (dms.sources.text).
ENCODING_SPEC = """\
name: bad_encoding
objects:
  - name: contacts
    sobject: Contact
    operation: upsert
    external_id: Legacy_Id__c
    source: {kind: csv, path: crm/contacts_utf8.csv, encoding: gb18030}
    fields:
      Legacy_Id__c: {source: id}
      LastName: {source: last_name}
"""
# 王 is three bytes of UTF-8, which leave GB18030 one byte short; 王李 is six, which happen to
# decode (to other characters): that row is not the engine's to judge.
CONTACTS_UTF8 = "id,last_name\nE1,Plain\nE2,王\nE3,王李\n"

pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.fixture
def bad_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A spec directory and a data root holding the bad files, as DMS_SPEC_PATH and DMS_DATA_ROOT."""
    specs, root = tmp_path / "specs", tmp_path / "data"
    (root / "crm").mkdir(parents=True)
    specs.mkdir()
    (specs / "bad_inputs.yaml").write_text(SPEC, encoding="utf-8")
    with (root / "crm" / "accounts.csv").open("wb") as handle:
        handle.write(ACCOUNTS_HEAD)
        handle.writelines(ACCOUNT_LINES)
    (root / "crm" / "contacts.csv").write_text(CONTACTS, encoding="utf-8")
    (specs / "bad_encoding.yaml").write_text(ENCODING_SPEC, encoding="utf-8")
    (root / "crm" / "contacts_utf8.csv").write_text(CONTACTS_UTF8, encoding="utf-8")
    (tmp_path / "outside.csv").write_text("id,name,revenue,since,active,note\nX1,Outside,1,2020-01-01,true,x\n")
    monkeypatch.setenv("DMS_SPEC_PATH", str(specs))
    monkeypatch.setenv("DMS_DATA_ROOT", str(root))
    return {"specs": specs, "root": root, "outside": tmp_path / "outside.csv"}


def _run(specs: Path, conf: dict[str, Any] | None = None, dag_id: str = DAG_ID) -> Any:
    from dms.dag_factory import build_valid_dags

    return build_valid_dags(specs)[dag_id].test(run_conf=conf or {})


def _summary(env: dict[str, str], run_id: str, dag_id: str = DAG_ID) -> dict[str, Any]:
    safe = run_id.replace(":", "_").replace("+", "_")
    return json.loads((Path(env["DMS_RESULTS_DIR"]) / dag_id / safe / "summary.json").read_text())


def _rejects(counts: dict[str, Any]) -> dict[int, dict[str, str]]:
    with open(counts["rejects_csv"], encoding="utf-8") as handle:
        return {int(r["row"]): r for r in csv.DictReader(handle)}


def _records(emulator: EmulatorProcess, sobject: str) -> dict[str, dict[str, Any]]:
    return {r["Legacy_Id__c"]: r for r in emulator.admin(f"/__emulator/export/{sobject}")["records"]}


def _reconciles(counts: dict[str, Any]) -> None:
    assert counts["source"] == counts["loaded"] + counts["rejected"] + counts["failed"]


def test_each_bad_row_is_rejected_naming_its_place_and_every_good_row_loads(
    emulator: EmulatorProcess, dms_connections: dict[str, str], bad_inputs: dict[str, Path]
) -> None:
    run = _run(bad_inputs["specs"])
    assert run.state == "success"
    summary = _summary(dms_connections, run.run_id)
    accounts, contacts = summary["objects"]["accounts"], summary["objects"]["contacts"]
    _reconciles(accounts)
    _reconciles(contacts)
    assert (accounts["source"], accounts["loaded"], accounts["rejected"], accounts["failed"]) == (15, 4, 11, 0)
    assert (contacts["source"], contacts["loaded"], contacts["rejected"], contacts["failed"]) == (3, 2, 1, 0)

    loaded = _records(emulator, "Account")
    assert sorted(loaded) == ["A01", "A10", "A12", "A13"]
    assert sorted(_records(emulator, "Contact")) == ["K1", "K2"]

    rejects = _rejects(accounts)
    # A01 is in rows 2 (chunk 0) and 15 (chunk 2): the chunk whose load claims it first loads
    # it (the mapped loads run in either order), the other row is rejected naming that row.
    (later,) = {2, 15} & set(rejects)
    holder = 17 - later
    assert loaded["A01"]["Name"] == {2: "Alpha", 15: "Alpha again"}[holder]
    assert sorted(set(rejects) - {later}) == [3, 4, 5, 6, 7, 8, 9, 10, 11, 13]
    by_row = {row: (r["field"], r["code"]) for row, r in rejects.items()}
    assert by_row[3] == by_row[4] == by_row[11] == by_row[13] == ("", "MALFORMED")
    assert rejects[3]["reason"] == "row has 3 fields, expected 7 in accounts.csv: 'A02,Beta,200'"
    assert rejects[4]["reason"].startswith("row has 8 fields, expected 7 in accounts.csv: 'A03,")
    assert rejects[11]["reason"].startswith(
        "byte 0xb1 (column 28) is not valid utf-8, the spec's `encoding` for accounts.csv: 'A09,Iota,"
    )
    assert rejects[13]["reason"].startswith(
        "a quoted value opens on this row and is never closed in accounts.csv: 'A11,Lambda,"
    )
    # Values of the wrong type: the field, and the value in the reason.
    assert (by_row[5], by_row[6], by_row[7]) == (
        ("AnnualRevenue", "TYPE"),
        ("Customer_Since__c", "TYPE"),
        ("Active__c", "TYPE"),
    )
    assert rejects[5]["reason"].startswith("'lots' is not a number")
    assert rejects[6]["reason"].startswith("'2020-02-30' is not a date")
    assert rejects[7]["reason"].startswith("'maybe' is not a boolean")
    # The 10 MB value was read and staged like any other, and rejected for Salesforce's limit.
    assert by_row[10] == ("Description", "LENGTH")
    assert rejects[10]["reason"].endswith(f"is longer than 32000 characters ({TEN_MB})")
    # Repeated external ids: both rows within a chunk, the later row across chunks.
    assert by_row[8] == by_row[9] == by_row[later] == ("Legacy_Id__c", "DUPLICATE_KEY")
    assert "2 rows of this chunk (rows 8, 9)" in rejects[8]["reason"]
    assert rejects[later]["reason"].startswith(f"Legacy_Id__c 'A01' is also in row {holder} of the input")

    (cut,) = _rejects(contacts).values()
    assert (cut["row"], cut["code"]) == ("4", "MALFORMED")
    assert cut["reason"] == (
        "a quoted value opens on this row and is never closed in contacts.csv: 'K3,\"Cut off in the midd'"
    )


def test_source_file_params_outside_the_root_or_missing_a_column_fail_the_extract(
    emulator: EmulatorProcess,
    dms_connections: dict[str, str],
    bad_inputs: dict[str, Path],
    capfd: pytest.CaptureFixture[str],
) -> None:
    root = bad_inputs["root"]
    (root / "crm" / "contacts_no_birthdate.csv").write_text("id,last_name,extra\nK9,Late,x\n")
    run = _run(
        bad_inputs["specs"],
        {"source_files": {"accounts": "../outside.csv", "contacts": "crm/contacts_no_birthdate.csv"}},
    )
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["accounts.extract"] == states["contacts.extract"] == "failed"
    log = capfd.readouterr()
    out = log.out + log.err
    assert f"Param source_files.accounts: source path '../outside.csv' leaves the data root {root}" in out
    assert (
        f"{root / 'crm' / 'contacts_no_birthdate.csv'}: missing column(s) 'born' "
        "(read by objects[1] (name: contacts).fields.Birthdate.source)"
    ) in out
    summary = _summary(dms_connections, run.run_id)
    assert summary["status"] == "failed"
    assert "accounts: the extract has no result (it failed; see its log)" in summary["problems"]
    assert _records(emulator, "Account") == {} and _records(emulator, "Contact") == {}


def test_a_source_file_param_inside_the_root_is_read_instead_of_the_specs(
    emulator: EmulatorProcess, dms_connections: dict[str, str], bad_inputs: dict[str, Path]
) -> None:
    (bad_inputs["root"] / "exports").mkdir()
    (bad_inputs["root"] / "exports" / "november.csv").write_text(
        "id,name,revenue,since,active,note\n"
        "N1,November One,5,2026-11-01,true,new\n"
        "N2,November Two,6,2026-11-02,false,\n"
    )
    (bad_inputs["root"] / "crm" / "contacts_ok.csv").write_text("id,last_name,born\nK7,Lee,1990-07-07\n")
    run = _run(
        bad_inputs["specs"],
        {"source_files": {"accounts": "exports/november.csv", "contacts": "crm/contacts_ok.csv"}},
    )
    assert run.state == "success"
    summary = _summary(dms_connections, run.run_id)
    for counts in summary["objects"].values():
        _reconciles(counts)
        assert counts["rejected"] == counts["failed"] == 0
    assert sorted(_records(emulator, "Account")) == ["N1", "N2"]
    assert sorted(_records(emulator, "Contact")) == ["K7"]


def test_rows_a_declared_legacy_encoding_cannot_decode_are_rejected_and_the_others_load(
    emulator: EmulatorProcess, dms_connections: dict[str, str], bad_inputs: dict[str, Path]
) -> None:
    run = _run(bad_inputs["specs"], dag_id="dms_bad_encoding")
    assert run.state == "success"
    counts = _summary(dms_connections, run.run_id, "dms_bad_encoding")["objects"]["contacts"]
    _reconciles(counts)
    assert (counts["source"], counts["loaded"], counts["rejected"]) == (3, 2, 1)
    assert sorted(_records(emulator, "Contact")) == ["E1", "E3"]
    (bad,) = _rejects(counts).values()
    path = bad_inputs["root"] / "crm" / "contacts_utf8.csv"
    assert (bad["row"], bad["field"], bad["code"]) == ("3", "last_name", "MALFORMED")
    assert bad["reason"] == f"{path}: row 3, column 'last_name': byte 0x8b is not valid gb18030, the spec's `encoding`"
