"""Migration specs: the YAML users write, validated, with errors that name the file and YAML path."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from dms.errors import SpecError

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
FieldType = Literal["string", "integer", "number", "boolean", "date", "datetime"]
Operation = Literal["insert", "update", "upsert", "delete", "hardDelete"]
DELETES = ("delete", "hardDelete")


class _Model(BaseModel):
    # Unknown keys are errors: a typo in a spec must not silently do nothing.
    model_config = ConfigDict(extra="forbid", frozen=True)


class AnonymiseSpec(_Model):
    """Replace personal data on the way into a sandbox; stable across runs (keyed by the salt Variable)."""

    method: Literal["mask", "hash", "fake"]
    kind: Literal["email", "name", "name_en", "phone", "company", "text", "number", "date"] | None = None
    keep: int = Field(default=0, ge=0, description="mask: characters left visible at the end")

    @model_validator(mode="after")
    def _fits(self) -> AnonymiseSpec:
        allowed = {"mask": {None, "email"}, "hash": {None, "email"}}.get(self.method)
        if allowed is not None and self.kind not in allowed:
            raise ValueError(f"{self.method} takes kind email or none, not {self.kind!r}")
        if self.method == "fake" and self.kind is None:
            raise ValueError("fake needs a kind: name, name_en, email, phone, company, text, number or date")
        if self.keep and (self.method != "mask" or self.kind is not None):
            raise ValueError("'keep' is for method mask without a kind")
        return self


class SplitSpec(_Model):
    separator: str = Field(min_length=1)
    part: int = Field(default=1, description="1-based; negative counts from the end (-1 is the last part)")

    @field_validator("part")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("parts count from 1 (or from -1 at the end)")
        return value


class LookupSpec(_Model):
    """Find the Id of an existing record that DMS does not load (a User by email, a RecordType by name)."""

    sobject: str
    field: str = Field(description="the field of `sobject` that the source value matches")
    where: str | None = Field(default=None, description="an extra SOQL condition, e.g. SobjectType = 'Account'")


class FieldSpec(_Model):
    """How one Salesforce field is filled from the source row."""

    source: str | list[str] | None = Field(
        default=None, description="source column, or several joined by `separator` (a composite key)"
    )
    separator: str = Field(default="", description="joins the columns of a list `source`")
    value: Any = Field(default=None, description="a constant, when there is no source column")
    expr: str | None = Field(default=None, description="a derived value in DMS's expression language")
    anonymise: AnonymiseSpec | None = None
    sensitive: bool = Field(default=False, description="mask this field's values in everything the audit stores")
    type: FieldType = "string"
    format: str | None = Field(default=None, description="strptime format for date and datetime sources")
    timezone: str | None = Field(default=None, description="zone of naive datetimes in the source")
    strip: bool = True
    case: Literal["upper", "lower", "title"] | None = None
    split: SplitSpec | None = Field(default=None, description="take one part of the value, split by a separator")
    value_map: dict[str, Any] | None = None
    value_map_file: str | None = Field(
        default=None,
        description="a CSV under the data root with two columns, source value and target value "
        "(header row first); entries in `value_map` win",
    )
    default: Any = None
    required: bool = False
    parent: str | None = Field(
        default=None,
        description="for a lookup column like Account.Legacy_Id__c: the spec object that loads the parent "
        "(found by sobject and external id when left out)",
    )
    lookup: LookupSpec | None = None
    true_values: list[str] = Field(default_factory=lambda: ["true", "1", "yes", "y", "t"])
    false_values: list[str] = Field(default_factory=lambda: ["false", "0", "no", "n", "f"])

    @model_validator(mode="after")
    def _source_or_value(self) -> FieldSpec:
        given = [k for k in ("source", "value", "expr") if getattr(self, k) is not None]
        if not given:
            raise ValueError("give either 'source' (a column), 'value' (a constant) or 'expr' (an expression)")
        if len(given) > 1:
            raise ValueError(f"give one of 'source', 'value' and 'expr', not {' and '.join(given)}")
        if self.expr is not None:
            self.expression()  # a syntax error names its position now, not at run time
        if isinstance(self.source, list) and not self.source:
            raise ValueError("'source' lists no columns")
        if self.value_map_file is not None and (
            Path(self.value_map_file).is_absolute() or ".." in Path(self.value_map_file).parts
        ):
            raise ValueError("value_map_file must be a path relative to the data root, without '..'")
        return self

    @property
    def columns(self) -> list[str]:
        """The source columns this field reads."""
        if self.expr is not None:
            return sorted(self.expression().columns)
        if self.source is None:
            return []
        return [self.source] if isinstance(self.source, str) else list(self.source)

    def expression(self) -> Any:
        """The compiled `expr` (imported on use: the expression module loads pandas)."""
        from dms.transform.expressions import compile_expression

        assert self.expr is not None
        return compile_expression(self.expr)


def _check_encoding(value: str) -> str:
    import codecs

    try:
        codecs.lookup(value)
    except LookupError as exc:
        raise ValueError(f"unknown encoding {value!r}") from exc
    return value


class _FileSource(_Model):
    """A file under the data root (DMS_DATA_ROOT)."""

    path: str = Field(description="relative to the data root")

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        if Path(value).is_absolute() or ".." in Path(value).parts:
            raise ValueError("must be a path relative to the data root, without '..'")
        return value


class CsvSource(_FileSource):
    """A delimited text export (.csv, or .txt with another delimiter)."""

    kind: Literal["csv", "txt"] = "csv"
    encoding: str = "utf-8"
    delimiter: str = ","
    quotechar: str = '"'
    skip_rows: int = Field(default=0, ge=0, description="lines before the header (or before the data, without one)")
    header: bool = Field(default=True, description="the first row after skip_rows names the columns")
    columns: list[str] | None = Field(default=None, description="the column names, for a file without a header")

    _encoding = field_validator("encoding")(classmethod(lambda cls, v: _check_encoding(v)))

    @field_validator("delimiter", "quotechar")
    @classmethod
    def _one_char(cls, value: str) -> str:
        if len(value) != 1:
            raise ValueError("must be exactly one character")
        return value

    @model_validator(mode="after")
    def _names(self) -> CsvSource:
        if not self.header and not self.columns:
            raise ValueError("a file without a header needs 'columns' (the column names, in order)")
        if self.header and self.columns:
            raise ValueError("'columns' is for files without a header (header: false); rename columns in 'fields'")
        return self


class FixedWidthColumn(_Model):
    name: str
    start: int | None = Field(default=None, ge=1, description="1-based position; default: right after the previous")
    width: int = Field(ge=1)


class FixedWidthSource(_FileSource):
    """A fixed-width text export: each column at a fixed position in every line."""

    kind: Literal["fixed_width"]
    encoding: str = "utf-8"
    columns: list[FixedWidthColumn] = Field(min_length=1)
    # Mainframe and legacy Chinese exports count bytes (a GBK character takes two); newer
    # tools count characters.
    unit: Literal["bytes", "characters"] = "bytes"
    skip_rows: int = Field(default=0, ge=0, description="lines before the data (headers, banners)")

    _encoding = field_validator("encoding")(classmethod(lambda cls, v: _check_encoding(v)))


class ExcelSource(_FileSource):
    """One sheet of an .xlsx workbook."""

    kind: Literal["xlsx"]
    sheet: str | int | None = Field(default=None, description="sheet name, or 1-based position; default the first")
    header_row: int = Field(default=1, ge=1, description="the row that names the columns; data follows it")


class ParquetSource(_FileSource):
    kind: Literal["parquet"]
    columns: list[str] | None = None


class PickleSource(_FileSource):
    """A pickled pandas DataFrame. Unpickling runs code, so only files the user vouches for."""

    kind: Literal["pickle"]
    trusted: bool = False

    @model_validator(mode="after")
    def _only_trusted(self) -> PickleSource:
        if not self.trusted:
            raise ValueError(
                "reading a pickle runs any code inside it; set 'trusted: true' only for a file you produced "
                "yourself, or export it as parquet or csv instead"
            )
        return self


class SqlSource(_Model):
    """A table or query in a database, through an Airflow connection (postgres, mysql...)."""

    kind: Literal["sql"]
    conn_id: str
    table: str | None = None
    query: str | None = None
    change_column: str | None = Field(
        default=None, description="read only rows whose value lies in the run's data interval [start, end)"
    )

    @model_validator(mode="after")
    def _table_or_query(self) -> SqlSource:
        if (self.table is None) == (self.query is None):
            raise ValueError("give 'table' or 'query', exactly one")
        return self


class SalesforceSource(_Model):
    """Records of a Salesforce org, through a Bulk API 2.0 query (org-to-org, or keys to delete)."""

    kind: Literal["salesforce"]
    conn_id: str | None = Field(default=None, description="default: the spec's Salesforce connection")
    soql: str
    change_column: str | None = Field(default=None, description="e.g. LastModifiedDate, for incremental runs")


SOURCE_KINDS = (CsvSource, FixedWidthSource, ExcelSource, ParquetSource, PickleSource, SqlSource, SalesforceSource)
FILE_SOURCES = (CsvSource, FixedWidthSource, ExcelSource, ParquetSource, PickleSource)


def _source_kind(value: Any) -> str:
    # `kind` may be left out for a CSV, as the first specs did.
    if isinstance(value, dict):
        return value.get("kind", "csv") if value.get("kind") != "txt" else "csv"
    kind = getattr(value, "kind", "csv")
    return "csv" if kind == "txt" else kind


_SOURCE_TAGS = ("csv", "txt", "fixed_width", "xlsx", "parquet", "pickle", "sql", "salesforce")
Source = Annotated[
    Annotated[CsvSource, Tag("csv")]
    | Annotated[FixedWidthSource, Tag("fixed_width")]
    | Annotated[ExcelSource, Tag("xlsx")]
    | Annotated[ParquetSource, Tag("parquet")]
    | Annotated[PickleSource, Tag("pickle")]
    | Annotated[SqlSource, Tag("sql")]
    | Annotated[SalesforceSource, Tag("salesforce")],
    Discriminator(_source_kind),
]


class ObjectSpec(_Model):
    """One target sObject and where its rows come from."""

    name: str = Field(description="a short id for task ids and audit records")
    sobject: str
    operation: Operation = "upsert"
    external_id: str | None = None
    key: str | None = Field(default=None, description="source column that identifies a row in reports")
    source: Source
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
        if self.operation in DELETES:
            # Salesforce's delete jobs take the record Id and nothing else.
            if [n.lower() for n in self.fields] != ["id"]:
                raise ValueError(f"a {self.operation} maps exactly one field, Id (from the source or a SOQL query)")
            if self.external_id:
                raise ValueError(f"a {self.operation} goes by Id; remove 'external_id'")
        if self.operation == "update" and self.external_id:
            raise ValueError("an update goes by Id; to match on an external id use operation: upsert")
        for name, field in self.fields.items():
            if field.parent is not None and "." not in name:
                raise ValueError(f"fields.{name}: 'parent' belongs on a lookup column named like Account.Legacy_Id__c")
            if field.lookup is not None and "." in name:
                raise ValueError(
                    f"fields.{name}: 'lookup' fills an Id field such as OwnerId, not a relationship column"
                )
        return self

    def lookup_fields(self) -> dict[str, tuple[str, str]]:
        """Lookup columns by parent external id: field name -> (relationship, external id field)."""
        return {
            name: tuple(name.split(".", 1))  # type: ignore[misc]
            for name in self.fields
            if "." in name
        }


class Connections(_Model):
    salesforce: str = "salesforce_default"
    staging: str = "dms_staging"
    audit: str = "cloudant_default"
    salesforce_pool: str | None = Field(
        default=None,
        description="the Airflow pool that caps this org's concurrent loads (Salesforce limits concurrent "
        "Bulk jobs); default dms_<salesforce connection id>, defined in airflow_settings.yaml",
    )

    @property
    def pool(self) -> str:
        return self.salesforce_pool or f"dms_{self.salesforce}"


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
    before_images: bool = Field(
        default=True,
        description="updates and upserts first read the current values of the fields they write, so that a "
        "rollback can restore them (one query per 200 rows; turn off for initial loads into an empty org)",
    )
    lock_retries: int = Field(
        default=3,
        ge=0,
        le=10,
        description="times the rows that fail with UNABLE_TO_LOCK_ROW are sent again (only those rows)",
    )
    bulk_threshold: int = Field(
        default=2000,
        ge=0,
        description="chunks with fewer ready rows go through sObject Collections, larger ones through Bulk API 2.0",
    )
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

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None or value in ("@once", "@continuous"):
            return value
        from croniter import croniter

        presets = {"@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight"}
        if value not in presets and not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron expression (e.g. '0 2 * * *' for 02:00 every day)")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name like Asia/Shanghai)") from None
        return value

    @model_validator(mode="after")
    def _parents_resolve(self) -> MigrationSpec:
        self.dependencies()  # raises ValueError for a `parent` that names no object
        return self

    @property
    def dag_id(self) -> str:
        return f"dms_{self.name}"

    def object(self, name: str) -> ObjectSpec:
        for obj in self.objects:
            if obj.name == name:
                return obj
        raise KeyError(name)

    def dependencies(self) -> dict[str, dict[str, str]]:
        """For each object, its lookup columns that point at another object of this spec: field -> parent.

        A lookup column `Account.Legacy_Id__c` points at the object named by its `parent`, or
        else at the one object that loads sObject `Account` (the relationship name; `Foo__r`
        means `Foo__c`) with external id `Legacy_Id__c`. A lookup that matches no object
        refers to records already in Salesforce: it orders nothing, and its rows are still
        checked for a missing parent at load time.
        """
        out: dict[str, dict[str, str]] = {}
        for obj in self.objects:
            edges: dict[str, str] = {}
            for name, (relationship, ext_id) in obj.lookup_fields().items():
                explicit = obj.fields[name].parent
                if explicit is not None:
                    if explicit not in {o.name for o in self.objects}:
                        raise ValueError(
                            f"objects.{obj.name}.fields.{name}.parent: no object named {explicit!r} in this spec"
                        )
                    edges[name] = explicit
                    continue
                sobject = relationship[:-3] + "__c" if relationship.endswith("__r") else relationship
                candidates = [
                    o.name
                    for o in self.objects
                    if o.sobject.lower() == sobject.lower() and (o.external_id or "").lower() == ext_id.lower()
                ]
                if len(candidates) == 1:
                    edges[name] = candidates[0]
            out[obj.name] = edges
        return out

    def load_plan(self) -> tuple[list[list[str]], dict[str, set[str]]]:
        """Groups of objects in load order, and each object's lookup fields deferred to a second pass.

        Objects that look each other up (a cycle), or an object that looks itself up, form one
        group. Within a group, such lookups are deferred: the records are loaded without them,
        then updated with them once every record of the group exists. Groups come parents
        first (topological order, ties in spec order).
        """
        deps = self.dependencies()
        order = [o.name for o in self.objects]
        index = {name: i for i, name in enumerate(order)}
        # Tarjan's strongly connected components; iterative would be overkill for a spec's few objects.
        counter = [0]
        low: dict[str, int] = {}
        seen: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        groups: list[list[str]] = []

        def visit(node: str) -> None:
            seen[node] = low[node] = counter[0]
            counter[0] += 1
            stack.append(node)
            on_stack.add(node)
            for parent in deps[node].values():
                if parent not in seen:
                    visit(parent)
                    low[node] = min(low[node], low[parent])
                elif parent in on_stack:
                    low[node] = min(low[node], seen[parent])
            if low[node] == seen[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                groups.append(sorted(group, key=index.__getitem__))

        for name in order:
            if name not in seen:
                visit(name)
        # Tarjan emits a component only after every component it depends on: parents first.
        group_of = {m: i for i, g in enumerate(groups) for m in g}
        deferred = {
            name: {f for f, parent in deps[name].items() if group_of[parent] == group_of[name]} for name in order
        }
        return groups, deferred


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
        elif isinstance(node, dict) and item not in node and item in _SOURCE_TAGS:
            continue  # the union member pydantic tried, not a key the user wrote
        else:
            parts.append(("." if parts else "") + str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts) or "(top level)"


def _yaml_line(loc: tuple[Any, ...], node: yaml.Node | None) -> int | None:
    """The 1-based line of the YAML node a pydantic error location points at.

    Follows the location as far as the document goes: an unknown key gives its own line, a
    missing key the line of the mapping that lacks it.
    """
    if node is None:
        return None
    line = node.start_mark.line + 1
    for item in loc:
        if isinstance(node, yaml.SequenceNode) and isinstance(item, int) and item < len(node.value):
            node = node.value[item]
        elif isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if getattr(k, "value", None) == item), None)
            if match is None:
                if item in _SOURCE_TAGS:
                    continue  # the union member pydantic tried, not a key the user wrote
                break
            line = match[0].start_mark.line + 1
            node = match[1]
            continue
        else:
            break
        line = node.start_mark.line + 1
    return line


def parse_spec(doc: Any, source: str, nodes: yaml.Node | None = None) -> MigrationSpec:
    """Validate a loaded YAML document; `source` names it in errors, `nodes` (its composed
    YAML) gives each error its line."""
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
            elif err["type"] == "union_tag_invalid":
                message = f"unknown kind {err['ctx']['tag']!r}; use one of {', '.join(_SOURCE_TAGS)}"
            line = _yaml_line(err["loc"], nodes)
            at = f"line {line}: " if line is not None else ""
            lines.append(f"  {at}{_yaml_path(err['loc'], doc)}: {message}")
        raise SpecError(f"{source}: invalid migration spec\n" + "\n".join(lines)) from None


def load_spec(path: str | Path) -> MigrationSpec:
    """Read and validate one spec file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"{path}:{where} not valid YAML: {getattr(exc, 'problem', exc)}") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror}") from None
    # Composed again only to find the lines of errors; a spec is a few KiB.
    nodes = yaml.compose(text, Loader=yaml.SafeLoader) if isinstance(doc, dict) else None
    return parse_spec(doc, str(path), nodes)
