"""The org schema the emulator serves: loaded from describe-like YAML, served as describe JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

FIELD_TYPES = {
    "id",
    "string",
    "textarea",
    "email",
    "phone",
    "url",
    "picklist",
    "boolean",
    "int",
    "double",
    "currency",
    "percent",
    "date",
    "datetime",
    "reference",
}
TEXT_TYPES = {"id", "string", "textarea", "email", "phone", "url", "picklist", "reference"}
NUMBER_TYPES = {"int", "double", "currency", "percent"}

# Salesforce's SOAP type for each field type, as describe reports it.
SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "string": "xsd:string",
    "textarea": "xsd:string",
    "email": "xsd:string",
    "phone": "xsd:string",
    "url": "xsd:string",
    "picklist": "xsd:string",
    "boolean": "xsd:boolean",
    "int": "xsd:int",
    "double": "xsd:double",
    "currency": "xsd:double",
    "percent": "xsd:double",
    "date": "xsd:date",
    "datetime": "xsd:dateTime",
}
SQL_TYPES = {"boolean": "INTEGER", "int": "INTEGER", "double": "REAL", "currency": "REAL", "percent": "REAL"}

# Fields every object has; the emulator maintains them itself.
SYSTEM_FIELDS = ("Id", "IsDeleted", "CreatedDate", "LastModifiedDate", "SystemModstamp")


class SchemaError(ValueError):
    """The org YAML is not valid; the message names the file and the YAML path."""


@dataclass(frozen=True)
class FieldDef:
    """One field of an sObject."""

    name: str
    type: str
    label: str
    length: int = 0
    required: bool = False
    unique: bool = False
    external_id: bool = False
    createable: bool = True
    updateable: bool = True
    picklist_values: tuple[str, ...] = ()
    restricted_picklist: bool = False
    reference_to: tuple[str, ...] = ()
    relationship_name: str | None = None
    precision: int = 0
    scale: int = 0
    system: bool = False
    name_field: bool = False

    @property
    def sql_type(self) -> str:
        return SQL_TYPES.get(self.type, "TEXT")

    @property
    def id_lookup(self) -> bool:
        return self.name == "Id" or self.external_id or (self.unique and self.type in TEXT_TYPES)


@dataclass
class ObjectDef:
    """One sObject: its fields and identity."""

    name: str
    label: str
    label_plural: str
    key_prefix: str
    custom: bool
    fields: dict[str, FieldDef]
    name_field: str | None = None
    # Records the org already has when it starts or is reset (Users, RecordTypes...): what a
    # migration finds in a real org without loading it.
    seed_records: list[dict[str, Any]] = field(default_factory=list)
    # lower-case field name -> FieldDef, because Salesforce field names are case-insensitive.
    _by_lower: dict[str, FieldDef] = field(default_factory=dict, repr=False)
    _by_relationship: dict[str, FieldDef] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_lower = {name.lower(): f for name, f in self.fields.items()}
        self._by_relationship = {f.relationship_name.lower(): f for f in self.fields.values() if f.relationship_name}

    def field(self, name: str) -> FieldDef | None:
        """The field called `name`, matched case-insensitively as Salesforce does."""
        return self._by_lower.get(name.lower())

    def relationship(self, name: str) -> FieldDef | None:
        """The reference field whose relationshipName is `name`."""
        return self._by_relationship.get(name.lower())

    @property
    def data_fields(self) -> list[FieldDef]:
        return [f for f in self.fields.values() if not f.system]

    @property
    def external_id_fields(self) -> list[FieldDef]:
        return [f for f in self.fields.values() if f.external_id]

    @property
    def unique_fields(self) -> list[FieldDef]:
        return [f for f in self.fields.values() if f.unique and not f.system]


@dataclass
class OrgSchema:
    """All sObjects of the org."""

    objects: dict[str, ObjectDef]
    api_version: str = "62.0"
    _by_lower: dict[str, ObjectDef] = field(default_factory=dict, repr=False)
    _by_prefix: dict[str, ObjectDef] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_lower = {name.lower(): o for name, o in self.objects.items()}
        self._by_prefix = {o.key_prefix: o for o in self.objects.values()}

    def get(self, name: str) -> ObjectDef | None:
        return self._by_lower.get(name.lower())

    def by_prefix(self, record_id: str) -> ObjectDef | None:
        return self._by_prefix.get(record_id[:3])


def _system_fields(obj_name: str) -> dict[str, FieldDef]:
    return {
        "Id": FieldDef("Id", "id", f"{obj_name} ID", length=18, createable=False, updateable=False, system=True),
        "IsDeleted": FieldDef("IsDeleted", "boolean", "Deleted", createable=False, updateable=False, system=True),
        "CreatedDate": FieldDef(
            "CreatedDate", "datetime", "Created Date", createable=False, updateable=False, system=True
        ),
        "LastModifiedDate": FieldDef(
            "LastModifiedDate", "datetime", "Last Modified Date", createable=False, updateable=False, system=True
        ),
        "SystemModstamp": FieldDef(
            "SystemModstamp", "datetime", "System Modstamp", createable=False, updateable=False, system=True
        ),
    }


_FIELD_KEYS = {
    "type",
    "label",
    "length",
    "required",
    "unique",
    "externalId",
    "createable",
    "updateable",
    "values",
    "restricted",
    "referenceTo",
    "relationshipName",
    "precision",
    "scale",
}


def _parse_field(where: str, obj_name: str, name: str, raw: Any) -> FieldDef:
    if not isinstance(raw, dict):
        raise SchemaError(f"{where}: a field must be a mapping")
    unknown = set(raw) - _FIELD_KEYS
    if unknown:
        raise SchemaError(f"{where}: unknown key(s) {sorted(unknown)}")
    ftype = raw.get("type")
    if ftype not in FIELD_TYPES:
        raise SchemaError(f"{where}.type: {ftype!r} is not one of {sorted(FIELD_TYPES)}")
    length = int(raw.get("length", 0))
    if ftype in {"string", "textarea", "email", "phone", "url"} and length <= 0:
        length = {"string": 255, "textarea": 32768, "email": 80, "phone": 40, "url": 255}[ftype]
    if ftype == "picklist":
        length = length or 255
        if not raw.get("values"):
            raise SchemaError(f"{where}.values: a picklist needs values")
    if ftype == "reference":
        if not raw.get("referenceTo") or not raw.get("relationshipName"):
            raise SchemaError(f"{where}: a reference needs referenceTo and relationshipName")
        length = 18
    return FieldDef(
        name=name,
        type=ftype,
        label=str(raw.get("label") or name.removesuffix("__c").replace("_", " ")),
        length=length,
        required=bool(raw.get("required", False)),
        unique=bool(raw.get("unique", False)),
        external_id=bool(raw.get("externalId", False)),
        createable=bool(raw.get("createable", True)),
        updateable=bool(raw.get("updateable", True)),
        picklist_values=tuple(str(v) for v in raw.get("values", ())),
        restricted_picklist=bool(raw.get("restricted", False)),
        reference_to=tuple(raw.get("referenceTo", ())),
        relationship_name=raw.get("relationshipName"),
        precision=int(raw.get("precision", 18 if ftype in {"double", "currency", "percent"} else 0)),
        scale=int(raw.get("scale", 0)),
    )


def load_schema(path: str | Path) -> OrgSchema:
    """Read an org YAML file into an OrgSchema."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SchemaError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("objects"), dict):
        raise SchemaError(f"{path}: the top level needs an 'objects' mapping")
    objects: dict[str, ObjectDef] = {}
    for obj_name, raw_obj in doc["objects"].items():
        where = f"{path}: objects.{obj_name}"
        if not isinstance(raw_obj, dict) or not isinstance(raw_obj.get("fields"), dict):
            raise SchemaError(f"{where}: needs a 'fields' mapping")
        fields = _system_fields(obj_name)
        name_field = raw_obj.get("nameField")
        for fname, raw_field in raw_obj["fields"].items():
            if fname in fields:
                raise SchemaError(f"{where}.fields.{fname}: is a system field")
            fdef = _parse_field(f"{where}.fields.{fname}", obj_name, fname, raw_field)
            if fname == name_field:
                fdef = FieldDef(**{**fdef.__dict__, "name_field": True})
            fields[fname] = fdef
        prefix = str(raw_obj.get("keyPrefix", ""))
        if len(prefix) != 3:
            raise SchemaError(f"{where}.keyPrefix: needs three characters")
        seeds = raw_obj.get("records") or []
        if not isinstance(seeds, list) or not all(isinstance(r, dict) for r in seeds):
            raise SchemaError(f"{where}.records: needs a list of field-value mappings")
        objects[obj_name] = ObjectDef(
            seed_records=seeds,
            name=obj_name,
            label=str(raw_obj.get("label", obj_name)),
            label_plural=str(raw_obj.get("labelPlural", f"{raw_obj.get('label', obj_name)}s")),
            key_prefix=prefix,
            custom=bool(raw_obj.get("custom", obj_name.endswith("__c"))),
            fields=fields,
            name_field=name_field,
        )
    schema = OrgSchema(objects=objects, api_version=str(doc.get("api_version", "62.0")))
    for obj in objects.values():
        for f in obj.fields.values():
            for target in f.reference_to:
                if target not in objects:
                    raise SchemaError(
                        f"{path}: objects.{obj.name}.fields.{f.name}.referenceTo: unknown object {target!r}"
                    )
    return schema


# ---------------------------------------------------------------- describe shapes


def _field_describe(obj: ObjectDef, f: FieldDef) -> dict[str, Any]:
    is_text = f.type in TEXT_TYPES
    nillable = not f.required and f.type != "boolean" and not f.system
    return {
        "aggregatable": f.type != "textarea",
        "aiPredictionField": False,
        "autoNumber": False,
        "byteLength": f.length * 3 if is_text else 0,
        "calculated": False,
        "calculatedFormula": None,
        "cascadeDelete": False,
        "caseSensitive": False,
        "compoundFieldName": None,
        "controllerName": None,
        "createable": f.createable and not f.system,
        "custom": f.name.endswith("__c"),
        "defaultValue": False if f.type == "boolean" else None,
        "defaultValueFormula": None,
        "defaultedOnCreate": f.type == "boolean" or f.system,
        "dependentPicklist": False,
        "deprecatedAndHidden": False,
        "digits": f.precision if f.type == "int" else 0,
        "displayLocationInDecimal": False,
        "encrypted": False,
        "externalId": f.external_id,
        "extraTypeInfo": None,
        "filterable": f.type != "textarea",
        "filteredLookupInfo": None,
        "formulaTreatNullNumberAsZero": False,
        "groupable": f.type not in {"textarea", "double", "currency", "percent", "datetime"},
        "highScaleNumber": False,
        "htmlFormatted": False,
        "idLookup": f.id_lookup,
        "inlineHelpText": None,
        "label": f.label,
        "length": f.length if is_text else 0,
        "mask": None,
        "maskType": None,
        "name": f.name,
        "nameField": f.name_field,
        "namePointing": False,
        "nillable": nillable,
        "permissionable": not f.required and not f.system,
        "picklistValues": [
            {"active": True, "defaultValue": False, "label": v, "validFor": None, "value": v} for v in f.picklist_values
        ],
        "polymorphicForeignKey": False,
        "precision": f.precision if f.type in {"double", "currency", "percent"} else 0,
        "queryByDistance": False,
        "referenceTargetField": None,
        "referenceTo": list(f.reference_to),
        "relationshipName": f.relationship_name,
        "relationshipOrder": None,
        "restrictedDelete": False,
        "restrictedPicklist": f.restricted_picklist,
        "scale": f.scale,
        "searchPrefilterable": f.type == "reference",
        "soapType": SOAP_TYPES[f.type],
        "sortable": f.type != "textarea",
        "type": f.type,
        "unique": f.unique,
        "updateable": f.updateable and not f.system,
        "writeRequiresMasterRead": False,
    }


def _urls(obj: ObjectDef, version: str) -> dict[str, str]:
    base = f"/services/data/v{version}/sobjects/{obj.name}"
    return {
        "compactLayouts": f"{base}/describe/compactLayouts",
        "rowTemplate": f"{base}/{{ID}}",
        "approvalLayouts": f"{base}/describe/approvalLayouts",
        "defaultValues": f"{base}/defaultValues?recordTypeId&fields",
        "describe": f"{base}/describe",
        "quickActions": f"{base}/quickActions",
        "layouts": f"{base}/describe/layouts",
        "sobject": base,
    }


def _object_summary(obj: ObjectDef, version: str) -> dict[str, Any]:
    return {
        "activateable": False,
        "associateEntityType": None,
        "associateParentEntity": None,
        "createable": True,
        "custom": obj.custom,
        "customSetting": False,
        "deepCloneable": False,
        "deletable": True,
        "deprecatedAndHidden": False,
        "feedEnabled": False,
        "hasSubtypes": False,
        "isInterface": False,
        "isSubtype": False,
        "keyPrefix": obj.key_prefix,
        "label": obj.label,
        "labelPlural": obj.label_plural,
        "layoutable": True,
        "mergeable": obj.name in {"Account", "Contact"},
        "mruEnabled": True,
        "name": obj.name,
        "queryable": True,
        "replicateable": True,
        "retrieveable": True,
        "searchable": True,
        "triggerable": True,
        "undeletable": True,
        "updateable": True,
        "urls": _urls(obj, version),
    }


def describe_global(schema: OrgSchema, version: str) -> dict[str, Any]:
    """The body of GET /services/data/vXX.X/sobjects/."""
    return {
        "encoding": "UTF-8",
        "maxBatchSize": 200,
        "sobjects": [_object_summary(o, version) for o in schema.objects.values()],
    }


def describe_basic(schema: OrgSchema, obj: ObjectDef, version: str) -> dict[str, Any]:
    """The body of GET /sobjects/{obj}/: objectDescribe plus recentItems."""
    return {"objectDescribe": _object_summary(obj, version), "recentItems": []}


def describe_object(schema: OrgSchema, obj: ObjectDef, version: str) -> dict[str, Any]:
    """The body of GET /sobjects/{obj}/describe/."""
    children = []
    for other in schema.objects.values():
        for f in other.fields.values():
            if f.type == "reference" and obj.name in f.reference_to:
                children.append(
                    {
                        "cascadeDelete": False,
                        "childSObject": other.name,
                        "deprecatedAndHidden": False,
                        "field": f.name,
                        "junctionIdListNames": [],
                        "junctionReferenceTo": [],
                        "relationshipName": (
                            f"{other.label_plural.replace(' ', '')}" if not other.custom else f"{other.name[:-3]}s__r"
                        ),
                        "restrictedDelete": False,
                    }
                )
    summary = _object_summary(obj, version)
    return {
        **summary,
        "actionOverrides": [],
        "childRelationships": children,
        "compactLayoutable": True,
        "defaultImplementation": None,
        "extendedBy": None,
        "extendsInterfaces": None,
        "fields": [_field_describe(obj, f) for f in obj.fields.values()],
        "implementedBy": None,
        "implementsInterfaces": None,
        "listviewable": None,
        "lookupLayoutable": None,
        "namedLayoutInfos": [],
        "networkScopeFieldName": None,
        "recordTypeInfos": [
            {
                "active": True,
                "available": True,
                "defaultRecordTypeMapping": True,
                "developerName": "Master",
                "master": True,
                "name": "Master",
                "recordTypeId": f"012{'0' * 12}AAA",
                "urls": {
                    "layout": f"/services/data/v{version}/sobjects/{obj.name}/describe/layouts/012000000000000AAA"
                },
            }
        ],
        "searchLayoutable": True,
        "sobjectDescribeOption": "FULL",
        "supportedScopes": [{"label": "All", "name": "everything"}],
    }
