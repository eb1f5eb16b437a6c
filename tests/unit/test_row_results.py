"""What the audit stores of each row: sensitive fields masked, attachments readable back."""

from __future__ import annotations

import gzip


def test_sensitive_fields_are_masked_in_what_the_audit_stores() -> None:
    from dms.row_results import mask_row
    from dms.spec import ObjectSpec

    obj = ObjectSpec.model_validate(
        {
            "name": "contacts",
            "sobject": "Contact",
            "operation": "upsert",
            "external_id": "Email",
            "source": {"path": "c.csv"},
            "fields": {
                "Email": {"source": "mail", "sensitive": True},
                "Phone": {"source": "tel", "sensitive": True},
                "Title": {"source": "title"},
            },
        }
    )
    reject = {"row": 3, "key": "li@x.cn", "field": "Phone", "reason": "'138 0000' is longer than 40", "code": "LENGTH"}
    masked = mask_row(obj, reject)
    assert masked["key"] == "***" and "138" not in masked["reason"] and "Phone" in masked["reason"]
    failure = {
        "row": 4,
        "key": "wang@x.cn",
        "id": "",
        "code": "INVALID_EMAIL_ADDRESS",
        "message": "Email: invalid: 'wang@x'",
    }
    assert "wang" not in str(mask_row(obj, failure))
    other = {"row": 5, "key": "a@b.cn", "field": "Title", "reason": "'CEO' too long", "code": "LENGTH"}
    assert mask_row(obj, other)["reason"] == "'CEO' too long"


def test_attachments_read_back_as_rows() -> None:
    from dms.row_results import read_attachment

    data = gzip.compress(b"row,key,id,created\n2,C1,001x,True\n")
    assert read_attachment(data) == [{"row": "2", "key": "C1", "id": "001x", "created": "True"}]
    assert read_attachment(None) == []


def test_bulk_errors_split_into_code_message_and_fields() -> None:
    from dms.operators.load import split_bulk_error

    assert split_bulk_error("REQUIRED_FIELD_MISSING:Required fields are missing: [Name]:Name --") == (
        "REQUIRED_FIELD_MISSING",
        "Required fields are missing: [Name]",
        "Name",
    )
    assert split_bulk_error("INVALID_CROSS_REFERENCE_KEY:invalid cross reference id:") == (
        "INVALID_CROSS_REFERENCE_KEY",
        "invalid cross reference id",
        "",
    )
    assert split_bulk_error("FIELD_CUSTOM_VALIDATION_EXCEPTION:Amount must be > 0: check it:Amount__c,Stage --")[2] == (
        "Amount__c,Stage"
    )
    assert split_bulk_error("UNABLE_TO_LOCK_ROW:unable to obtain exclusive access to this record") == (
        "UNABLE_TO_LOCK_ROW",
        "unable to obtain exclusive access to this record",
        "",
    )
