"""Spec errors name the line of the YAML they are about, as well as its path."""

from __future__ import annotations

from pathlib import Path

import pytest

from dms.errors import SpecError
from dms.spec import load_spec

SPEC = """\
name: lines
objects:
  - name: accounts
    sobject: Account
    operation: upsret
    external_id: Legacy_Id__c
    source:
      kind: csv
      path: crm/a.csv
      encodng: gb18030
    fields:
      Legacy_Id__c: {source: id}
      Name:
        source: name
        type: text
  - name: contacts
    sobject: Contact
    external_id: Legacy_Id__c
    source: {kind: csv, path: crm/c.csv}
    fields:
      Legacy_Id__c: {source: id, requird: true}
"""


def test_each_error_names_its_line_and_yaml_path(tmp_path: Path) -> None:
    path = tmp_path / "lines.yaml"
    path.write_text(SPEC)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    lines = str(err.value).splitlines()
    assert lines[0] == f"{path}: invalid migration spec"
    assert "  line 5: objects[0] (name: accounts).operation: Input should be" in "\n".join(lines)
    assert "  line 10: objects[0] (name: accounts).source.encodng: unknown key (check the spelling)" in lines
    assert any(
        line.startswith("  line 15: objects[0] (name: accounts).fields.Name.type: Input should be") for line in lines
    )
    assert (
        "  line 21: objects[1] (name: contacts).fields.Legacy_Id__c.requird: unknown key (check the spelling)" in lines
    )


def test_a_missing_key_names_the_line_of_the_mapping_that_lacks_it(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    path.write_text(
        "name: m\nobjects:\n  - name: a\n    sobject: Account\n    operation: insert\n    fields: {Name: {source: n}}\n"
    )
    with pytest.raises(SpecError, match=r"\n  line 3: objects\[0\] \(name: a\)\.source: Field required"):
        load_spec(path)


def test_a_spec_that_is_not_utf8_names_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "gbk.yaml"
    path.write_bytes("name: 客户\n".encode("gb18030"))
    with pytest.raises(SpecError, match=r"gbk.yaml: not UTF-8 text \(byte 0xbf at offset 6\)"):
        load_spec(path)
