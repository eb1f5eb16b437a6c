"""The org schema side of the transform: the describe subset, and checking a spec against it up front.

Everything here runs before any row is touched. A spec that cannot work against the org
(an unknown field, a number mapped to a checkbox, a field the operation cannot set) is a
configuration error: it raises `FatalError` once, naming the object and every bad field,
instead of rejecting every row of every chunk for the same reason.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from typing import Any

from dms.errors import FatalError
from dms.spec import FieldSpec, ObjectSpec

# Describe types each spec type may feed. Anything text-like takes a string; a whole number
# fits every numeric field, a decimal only the decimal ones.
TEXT_TYPES = frozenset(
    {
        "string",
        "textarea",
        "email",
        "phone",
        "url",
        "picklist",
        "multipicklist",
        "combobox",
        "reference",
        "id",
        "encryptedstring",
        "time",
    }
)
COMPATIBLE: dict[str, frozenset[str]] = {
    "string": TEXT_TYPES,
    "integer": frozenset({"int", "long", "double", "currency", "percent"}),
    "number": frozenset({"double", "currency", "percent"}),
    "boolean": frozenset({"boolean"}),
    "date": frozenset({"date"}),
    "datetime": frozenset({"datetime"}),
}
_SUGGEST = {
    "int": "integer",
    "long": "integer",
    "double": "number",
    "currency": "number",
    "percent": "number",
    "boolean": "boolean",
    "date": "date",
    "datetime": "datetime",
}
# Text types whose describe `length` Salesforce enforces on write.
LENGTH_TYPES = TEXT_TYPES - {"reference", "id", "time"}
# A lookup column like `Account.Legacy_Id__c` carries the parent's external id.
LOOKUP_SPEC_TYPES = frozenset({"string", "integer", "number"})


def describe_subset(describe_json: dict[str, Any] | list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The part of a `sobjects/{name}/describe` response the transform needs, keyed by field name.

    Small and JSON-safe, so it can be staged once per run and read by every chunk's
    transform. Only active picklist values are kept: a restricted picklist refuses
    inactive ones. `relationshipName` and `referenceTo` are kept for reference fields so
    that a lookup column such as `Account.Legacy_Id__c` can be checked against the
    relationship it goes through.
    """
    fields = describe_json if isinstance(describe_json, list) else describe_json.get("fields", [])
    subset: dict[str, dict[str, Any]] = {}
    for f in fields:
        subset[f["name"]] = {
            "type": f.get("type", "string"),
            "length": int(f.get("length") or 0),
            "nillable": bool(f.get("nillable", True)),
            "createable": bool(f.get("createable", False)),
            "updateable": bool(f.get("updateable", False)),
            "externalId": bool(f.get("externalId", False)),
            "picklistValues": [
                p["value"] for p in (f.get("picklistValues") or []) if p.get("active", True) and "value" in p
            ],
            "restrictedPicklist": bool(f.get("restrictedPicklist", False)),
            "defaultedOnCreate": bool(f.get("defaultedOnCreate", False)),
            "relationshipName": f.get("relationshipName"),
            "referenceTo": list(f.get("referenceTo") or []),
        }
    return subset


@dataclass(frozen=True)
class FieldTarget:
    """One mapped field, resolved against the describe: everything the row checks need."""

    name: str  # the spec's key: a field API name, or `Relationship.ExternalId__c`
    spec: FieldSpec
    sf_type: str
    required: str | None  # why an empty value is rejected, or None when empty is fine
    max_length: int | None
    restricted_values: frozenset[str] | None
    case_sensitive_key: bool  # record ids are case-sensitive; external ids are not


def _find(sobject_fields: dict[str, dict[str, Any]], name: str) -> tuple[str, dict[str, Any]] | None:
    if name in sobject_fields:
        return name, sobject_fields[name]
    # API names are case-insensitive in Salesforce, so `legacy_id__c` is the same field.
    lowered = name.lower()
    for candidate, info in sobject_fields.items():
        if candidate.lower() == lowered:
            return candidate, info
    return None


def _find_relationship(sobject_fields: dict[str, dict[str, Any]], relationship: str) -> dict[str, Any] | None:
    lowered = relationship.lower()
    for info in sobject_fields.values():
        rel = info.get("relationshipName")
        if info.get("type") == "reference" and rel and rel.lower() == lowered:
            return info
    return None


def _requires_value(obj: ObjectSpec, name: str, info: dict[str, Any]) -> str | None:
    if obj.operation == "upsert" and name == obj.external_id:
        return "the external id of an upsert"
    if obj.operation in ("update", "delete", "hardDelete") and info.get("type") == "id":
        return f"the record id of a {obj.operation}"
    # Bulk API 2.0 leaves a field alone on update when its value is empty, so Salesforce's
    # required fields only bite when a record is created.
    if obj.operation in ("insert", "upsert") and _salesforce_required(info):
        return "required in Salesforce"
    return None


def _salesforce_required(info: dict[str, Any]) -> bool:
    return not info.get("nillable", True) and info.get("createable", False) and not info.get("defaultedOnCreate", False)


def resolve_targets(obj: ObjectSpec, sobject_fields: dict[str, dict[str, Any]]) -> list[FieldTarget]:
    """Check the object's field mapping against the describe; `FatalError` lists every problem found."""
    problems: list[str] = []
    targets: list[FieldTarget] = []
    mapped_describe_names: set[str] = set()
    for name, fs in obj.fields.items():
        where = f"{obj.sobject}.{name}"
        problems.extend(_option_problems(where, fs))
        if "." in name:
            relationship = name.split(".", 1)[0]
            info = _find_relationship(sobject_fields, relationship)
            if info is None:
                problems.append(f"{where}: {obj.sobject} has no lookup relationship named {relationship!r}")
                continue
            if fs.type not in LOOKUP_SPEC_TYPES:
                problems.append(f"{where}: a lookup by external id takes type string, integer or number, not {fs.type}")
            describe_name = next(k for k, v in sobject_fields.items() if v is info)
            sf_type = "reference"
            max_length = None
        else:
            found = _find(sobject_fields, name)
            if found is None:
                problems.append(f"{where}: no such field on {obj.sobject} (check the spelling and the field's access)")
                continue
            describe_name, info = found
            sf_type = info.get("type", "string")
            if sf_type not in set().union(*COMPATIBLE.values()):
                problems.append(f"{where}: Salesforce type {sf_type!r} cannot be loaded by DMS")
                continue
            if sf_type not in COMPATIBLE[fs.type]:
                problems.append(
                    f"{where}: the spec says type {fs.type!r} but the Salesforce field is {sf_type!r}; "
                    f"use type: {_SUGGEST.get(sf_type, 'string')}"
                )
                continue
            length = int(info.get("length") or 0)
            max_length = length if sf_type in LENGTH_TYPES and length > 0 else None
        mapped_describe_names.add(describe_name)
        if fs.lookup is not None:
            targets_of = [t.lower() for t in info.get("referenceTo") or []]
            if sf_type != "reference":
                problems.append(f"{where}: 'lookup' fills a lookup (reference) field, and this one is {sf_type}")
            elif targets_of and fs.lookup.sobject.lower() not in targets_of:
                problems.append(
                    f"{where}: looks up {fs.lookup.sobject}, but the field refers to {', '.join(info['referenceTo'])}"
                )
        if name == obj.external_id and obj.operation == "upsert" and not info.get("externalId") and sf_type != "id":
            problems.append(
                f"{where}: an upsert matches on an external id field, and this one is not marked External ID"
            )
        problems.extend(_access_problems(obj, where, sf_type, info))
        restricted = None
        if sf_type in ("picklist", "multipicklist") and info.get("restrictedPicklist"):
            restricted = frozenset(str(v) for v in info.get("picklistValues") or [])
        why = "required by the spec" if fs.required else _requires_value(obj, name, info)
        targets.append(
            FieldTarget(
                name=name,
                spec=fs,
                sf_type=sf_type,
                required=why,
                max_length=max_length,
                restricted_values=restricted,
                case_sensitive_key=sf_type == "id",
            )
        )
    if obj.operation in ("insert", "upsert"):
        missing = sorted(
            n for n, info in sobject_fields.items() if _salesforce_required(info) and n not in mapped_describe_names
        )
        if missing:
            problems.append(
                f"{obj.sobject}: Salesforce requires {', '.join(missing)} on create, and the spec does not map "
                f"{'it' if len(missing) == 1 else 'them'}; every new record would fail"
            )
    if problems:
        raise FatalError(
            f"object {obj.name!r} ({obj.sobject}): the field mapping does not fit the org:\n  " + "\n  ".join(problems)
        )
    return targets


def _access_problems(obj: ObjectSpec, where: str, sf_type: str, info: dict[str, Any]) -> list[str]:
    if obj.operation in ("insert", "upsert") and not info.get("createable", False):
        return [f"{where}: Salesforce does not let an {obj.operation} set this field (not createable)"]
    if obj.operation == "update" and sf_type != "id" and not info.get("updateable", False):
        return [f"{where}: Salesforce does not let an update set this field (not updateable)"]
    return []


def _option_problems(where: str, fs: FieldSpec) -> list[str]:
    problems = []
    if fs.format is not None and fs.type not in ("date", "datetime"):
        problems.append(f"{where}: 'format' applies to date and datetime fields only, and this one is {fs.type}")
    if fs.timezone is not None:
        if fs.type != "datetime":
            # A date is a calendar day; shifting it through a zone would move it by a day.
            problems.append(f"{where}: 'timezone' applies to datetime fields only; a {fs.type} is never shifted")
        else:
            try:
                zoneinfo.ZoneInfo(fs.timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                problems.append(f"{where}: unknown timezone {fs.timezone!r} (use an IANA name like Asia/Shanghai)")
    if fs.type == "boolean":
        both = {v.lower() for v in fs.true_values} & {v.lower() for v in fs.false_values}
        if both:
            problems.append(f"{where}: {sorted(both)} are in both true_values and false_values")
    return problems
