"""Migration specs: the YAML users write, validated, with errors that name the file and YAML path."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dms.errors import SpecError

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
FieldType = Literal["string", "integer", "number", "boolean", "date", "datetime"]
Operation = Literal["insert", "update", "upsert"]


class _Model(BaseModel):
    # Unknown keys are errors: a typo in a spec must not silently do nothing.
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(_Model):
    """How one Salesforce field is filled from the source row."""

    source: str | None = Field(default=None, description="source column")
    value: Any = Field(default=None, description="a constant, when there is no source column")
    type: FieldType = "string"
    format: str | None = Field(default=None, description="strptime format for date and datetime sources")
    timezone: str | None = Field(default=None, description="zone of naive datetimes in the source")
    strip: bool = True
    case: Literal["upper", "lower", "title"] | None = None
    value_map: dict[str, Any] | None = None
    default: Any = None
    required: bool = False
    true_values: list[str] = Field(default_factory=lambda: ["true", "1", "yes", "y", "t"])
    false_values: list[str] = Field(default_factory=lambda: ["false", "0", "no", "n", "f"])

    @model_validator(mode="after")
    def _source_or_value(self) -> FieldSpec:
        if self.source is None and self.value is None:
            raise ValueError("give either 'source' (a column) or 'value' (a constant)")
        if self.source is not None and self.value is not None:
            raise ValueError("give 'source' or 'value', not both")
        return self


class CsvSource(_Model):
    """A delimited text export."""

    kind: Literal["csv"] = "csv"
    path: str
    encoding: str = "utf-8"
    delimiter: str = ","
    quotechar: str = '"'
    skip_rows: int = Field(default=0, ge=0)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError as exc:
            raise ValueError(f"unknown encoding {value!r}") from exc
        return value

    @field_validator("delimiter", "quotechar")
    @classmethod
    def _one_char(cls, value: str) -> str:
        if len(value) != 1:
            raise ValueError("must be exactly one character")
        return value

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        if Path(value).is_absolute() or ".." in Path(value).parts:
            raise ValueError("must be a path relative to the data root, without '..'")
        return value


class ObjectSpec(_Model):
    """One target sObject and where its rows come from."""

    name: str = Field(description="a short id for task ids and audit records")
    sobject: str
    operation: Operation = "upsert"
    external_id: str | None = None
    key: str | None = Field(default=None, description="source column that identifies a row in reports")
    source: CsvSource
    fields: dict[str, FieldSpec]

    @field_validator("name")
    @classmethod
    def _task_safe(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("use letters, digits and underscores, starting with a letter")
        return value

    @model_validator(mode="after")
    def _external_id_for_upsert(self) -> ObjectSpec:
        if self.operation == "upsert" and not self.external_id:
            raise ValueError("an upsert needs 'external_id'")
        if self.external_id and self.external_id not in self.fields:
            raise ValueError(f"external_id {self.external_id!r} must be one of the mapped fields")
        if not self.fields:
            raise ValueError("map at least one field")
        return self


class Connections(_Model):
    salesforce: str = "salesforce_default"
    staging: str = "dms_staging"
    audit: str = "cloudant_default"


class MigrationSpec(_Model):
    """A whole migration: one DAG."""

    name: str
    description: str = ""
    owner: str = "dms"
    tags: list[str] = Field(default_factory=list)
    schedule: str | None = None
    timezone: str = "UTC"
    start_date: str = "2026-01-01"
    chunk_rows: int = Field(default=50_000, ge=1, le=10_000_000)
    max_error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    retries: int = Field(default=2, ge=0)
    connections: Connections = Field(default_factory=Connections)
    objects: list[ObjectSpec]

    @field_validator("name")
    @classmethod
    def _dag_safe(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("use letters, digits and underscores, starting with a letter")
        return value

    @model_validator(mode="after")
    def _unique_objects(self) -> MigrationSpec:
        names = [o.name for o in self.objects]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"object names must be unique; repeated: {dupes}")
        if not self.objects:
            raise ValueError("list at least one object")
        return self

    @property
    def dag_id(self) -> str:
        return f"dms_{self.name}"


def _yaml_path(loc: tuple[Any, ...], doc: Any) -> str:
    """Turn a pydantic error location into a YAML path, naming list items by their `name`."""
    parts: list[str] = []
    node = doc
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            if isinstance(node, list) and item < len(node):
                node = node[item]
                if isinstance(node, dict) and "name" in node:
                    label = f"[{item}] (name: {node['name']})"
            parts.append(label)
        else:
            parts.append(("." if parts else "") + str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts) or "(top level)"


def parse_spec(doc: Any, source: str) -> MigrationSpec:
    """Validate a loaded YAML document; `source` names it in errors."""
    if not isinstance(doc, dict):
        raise SpecError(f"{source}: the top level must be a mapping with 'name' and 'objects'")
    try:
        return MigrationSpec.model_validate(doc)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown key (check the spelling)"
            lines.append(f"  {_yaml_path(err['loc'], doc)}: {message}")
        raise SpecError(f"{source}: invalid migration spec\n" + "\n".join(lines)) from None


def load_spec(path: str | Path) -> MigrationSpec:
    """Read and validate one spec file."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"{path}:{where} not valid YAML: {getattr(exc, 'problem', exc)}") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_spec(doc, str(path))
