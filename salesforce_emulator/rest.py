"""REST API: versions, limits, describe, records, upsert by external id, sObject Collections, query."""

from __future__ import annotations

import json
import secrets
import threading
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .ids import to_18
from .schema import ObjectDef, describe_basic, describe_global, describe_object
from .soql import SoqlError, compile_query, record_json
from .state import Emulator, sf_error
from .store import RequestError, RowResult
from .values import json_value

COLLECTION_LIMIT = 200
QUERY_BATCH = 2000
_FIRST_VERSION = 31


def _emu(request: Request) -> Emulator:
    return request.app.state.emulator


def _version(request: Request) -> str:
    return request.path_params["version"]


def _object(request: Request) -> ObjectDef | Response:
    emu = _emu(request)
    obj = emu.schema.get(request.path_params["sobject"])
    if obj is None:
        return sf_error(404, "NOT_FOUND", "The requested resource does not exist")
    return obj


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw or b"null")
    except ValueError as exc:
        raise RequestError("JSON_PARSER_ERROR", f"Unexpected character: {exc}") from exc


def flatten_record(record: dict[str, Any]) -> dict[str, Any]:
    """A REST record body as store columns: nested parent references become ``Rel.ExtField``."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key == "attributes":
            continue
        if isinstance(value, dict):
            for sub_key, sub_value in value.items():
                if sub_key != "attributes":
                    out[f"{key}.{sub_key}"] = sub_value
        else:
            out[key] = value
    return out


def _result_json(result: RowResult, *, upsert: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"id": result.id, "success": result.success}
    if upsert and result.success:
        body["created"] = result.created
    body["errors"] = [e.as_json() for e in result.errors]
    return body


def _row_error_response(result: RowResult) -> Response:
    return JSONResponse(
        [{"message": e.message, "errorCode": e.status_code, "fields": e.fields} for e in result.errors],
        status_code=400,
    )


def record_body(emu: Emulator, obj: ObjectDef, stored: dict[str, Any], version: str, fields: list[str] | None):
    body: dict[str, Any] = {
        "attributes": {"type": obj.name, "url": f"/services/data/v{version}/sobjects/{obj.name}/{stored['Id']}"}
    }
    names = fields or list(obj.fields)
    for name in names:
        f = obj.field(name)
        if f is None:
            raise RequestError("INVALID_FIELD", f"No such column '{name}' on entity '{obj.name}'")
        body[f.name] = json_value(f, stored.get(f.name))
    return body


# ---------------------------------------------------------------- discovery


async def versions(request: Request) -> Response:
    emu = _emu(request)
    latest = int(float(emu.api_version))
    return JSONResponse(
        [
            {"label": f"Emulated Release {v}", "url": f"/services/data/v{v}.0", "version": f"{v}.0"}
            for v in range(_FIRST_VERSION, latest + 1)
        ]
    )


async def resources(request: Request) -> Response:
    v = _version(request)
    names = ["sobjects", "query", "queryAll", "limits", "composite", "jobs"]
    return JSONResponse({n: f"/services/data/v{v}/{n}" for n in names})


async def limits(request: Request) -> Response:
    emu = _emu(request)
    daily = emu.faults.request_limit if emu.faults.request_limit is not None else emu.daily_api_limit
    return JSONResponse(
        {
            "DailyApiRequests": {"Max": daily, "Remaining": max(daily - emu.api_calls, 0)},
            "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
            "DailyBulkV2QueryFileStorageMB": {"Max": 976562, "Remaining": 976562},
            "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000},
            "DataStorageMB": {"Max": 1024, "Remaining": 1024},
        }
    )


async def global_describe(request: Request) -> Response:
    emu = _emu(request)
    return JSONResponse(describe_global(emu.schema, _version(request)))


async def sobject_basic(request: Request) -> Response:
    obj = _object(request)
    if isinstance(obj, Response):
        return obj
    if request.method == "POST":
        return await create_record(request, obj)
    return JSONResponse(describe_basic(_emu(request).schema, obj, _version(request)))


async def sobject_describe(request: Request) -> Response:
    obj = _object(request)
    if isinstance(obj, Response):
        return obj
    return JSONResponse(describe_object(_emu(request).schema, obj, _version(request)))


# ---------------------------------------------------------------- records


async def create_record(request: Request, obj: ObjectDef) -> Response:
    emu = _emu(request)
    body = await _json_body(request)
    if not isinstance(body, dict):
        return sf_error(400, "JSON_PARSER_ERROR", "Cannot deserialize instance of sObject from a non-object value")
    result = emu.store.write("insert", obj, [flatten_record(body)])[0]
    if not result.success:
        return _row_error_response(result)
    return JSONResponse(_result_json(result), status_code=201)


async def record(request: Request) -> Response:
    obj = _object(request)
    if isinstance(obj, Response):
        return obj
    emu = _emu(request)
    record_id = request.path_params["record_id"]
    rid = to_18(record_id)
    stored = emu.store.get(obj, rid) if rid else None
    if stored is None or stored["IsDeleted"]:
        if stored is not None and request.method == "DELETE":
            return sf_error(404, "ENTITY_IS_DELETED", "entity is deleted")
        return sf_error(404, "NOT_FOUND", "The requested resource does not exist")
    if request.method == "GET":
        fields = request.query_params.get("fields")
        wanted = [f.strip() for f in fields.split(",")] if fields else None
        return JSONResponse(record_body(emu, obj, stored, _version(request), wanted))
    if request.method == "PATCH":
        body = await _json_body(request)
        if not isinstance(body, dict):
            return sf_error(400, "JSON_PARSER_ERROR", "Cannot deserialize instance of sObject")
        row = flatten_record(body)
        row["Id"] = rid
        result = emu.store.write("update", obj, [row])[0]
        return Response(status_code=204) if result.success else _row_error_response(result)
    result = emu.store.write("delete", obj, [{"Id": rid}])[0]
    return Response(status_code=204) if result.success else _row_error_response(result)


async def by_external_id(request: Request) -> Response:
    obj = _object(request)
    if isinstance(obj, Response):
        return obj
    emu = _emu(request)
    field_name = request.path_params["field"]
    value = request.path_params["value"]
    f = obj.field(field_name)
    if f is None or not (f.external_id or f.name == "Id"):
        return sf_error(
            404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {field_name}"
        )
    version = _version(request)
    if request.method == "PATCH":
        body = await _json_body(request)
        if not isinstance(body, dict):
            return sf_error(400, "JSON_PARSER_ERROR", "Cannot deserialize instance of sObject")
        row = flatten_record(body)
        if any(k.lower() == f.name.lower() for k in row):
            return sf_error(
                400,
                "INVALID_FIELD",
                f"The {f.name} field should not be specified in the sobject data.",
            )
        row[f.name] = value
        matches = emu.store.find_by(obj, f, value)
        if len(matches) > 1:
            urls = [f"/services/data/v{version}/sobjects/{obj.name}/{m}" for m in matches]
            return JSONResponse(urls, status_code=300)
        result = emu.store.write("upsert", obj, [row], external_id=f.name)[0]
        if not result.success:
            return _row_error_response(result)
        return JSONResponse(_result_json(result, upsert=True), status_code=201 if result.created else 200)
    matches = emu.store.find_by(obj, f, value)
    if not matches:
        return sf_error(404, "NOT_FOUND", "The requested resource does not exist")
    if len(matches) > 1:
        urls = [f"/services/data/v{version}/sobjects/{obj.name}/{m}" for m in matches]
        return JSONResponse(urls, status_code=300)
    if request.method == "DELETE":
        result = emu.store.write("delete", obj, [{"Id": matches[0]}])[0]
        return Response(status_code=204) if result.success else _row_error_response(result)
    stored = emu.store.get(obj, matches[0])
    assert stored is not None
    fields = request.query_params.get("fields")
    wanted = [x.strip() for x in fields.split(",")] if fields else None
    return JSONResponse(record_body(emu, obj, stored, version, wanted))


# ---------------------------------------------------------------- sObject Collections


def _too_many() -> Response:
    return sf_error(
        400, "EXCEEDED_ID_LIMIT", f"Maximum number of records allowed in a collection is {COLLECTION_LIMIT}"
    )


async def collections(request: Request) -> Response:
    emu = _emu(request)
    if request.method == "DELETE":
        ids = [i for i in request.query_params.get("ids", "").split(",") if i]
        all_or_none = request.query_params.get("allOrNone", "false").lower() == "true"
        if len(ids) > COLLECTION_LIMIT:
            return _too_many()
        return JSONResponse(_delete_ids(emu, ids, all_or_none))
    body = await _json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        return sf_error(400, "JSON_PARSER_ERROR", "The request body needs a 'records' array")
    records = body["records"]
    if len(records) > COLLECTION_LIMIT:
        return _too_many()
    op = "insert" if request.method == "POST" else "update"
    groups: list[tuple[Any, ObjectDef, list[dict[str, Any]], None]] = []
    for rec in records:
        sobject = (rec.get("attributes") or {}).get("type") if isinstance(rec, dict) else None
        obj = emu.schema.get(sobject or "")
        if obj is None:
            return sf_error(400, "INVALID_TYPE", f"sObject type '{sobject}' is not supported.")
        if groups and groups[-1][1] is obj:
            groups[-1][2].append(flatten_record(rec))
        else:
            groups.append((op, obj, [flatten_record(rec)], None))
    results = emu.store.write_groups(groups, all_or_none=bool(body.get("allOrNone")))
    return JSONResponse([_result_json(r) for r in results])


def _delete_ids(emu: Emulator, ids: list[str], all_or_none: bool) -> list[dict[str, Any]]:
    groups: list[tuple[Any, ObjectDef, list[dict[str, Any]], None]] = []
    malformed: dict[int, dict[str, Any]] = {}
    order: list[int] = []
    for i, raw in enumerate(ids):
        rid = to_18(raw)
        obj = emu.schema.by_prefix(rid) if rid else None
        if obj is None:
            malformed[i] = {
                "id": raw,
                "success": False,
                "errors": [{"statusCode": "MALFORMED_ID", "message": f"malformed id {raw}", "fields": []}],
            }
            continue
        order.append(i)
        if groups and groups[-1][1] is obj:
            groups[-1][2].append({"Id": rid})
        else:
            groups.append(("delete", obj, [{"Id": rid}], None))
    if malformed and all_or_none:
        groups = []
    results = iter(emu.store.write_groups(groups, all_or_none=all_or_none)) if groups else iter(())
    out = []
    for i in range(len(ids)):
        if i in malformed:
            out.append(malformed[i])
        elif not groups:
            out.append(
                {
                    "id": None,
                    "success": False,
                    "errors": [
                        {
                            "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                            "message": "Record rolled back because not all records were valid and the request "
                            "was using AllOrNone header",
                            "fields": [],
                        }
                    ],
                }
            )
        else:
            res = next(results)
            body = _result_json(res)
            if body["id"] is None and res.success is False:
                body["id"] = None
            out.append(body)
    return out


async def collection_upsert(request: Request) -> Response:
    obj = _object(request)
    if isinstance(obj, Response):
        return obj
    emu = _emu(request)
    body = await _json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        return sf_error(400, "JSON_PARSER_ERROR", "The request body needs a 'records' array")
    records = body["records"]
    if len(records) > COLLECTION_LIMIT:
        return _too_many()
    results = emu.store.write(
        "upsert",
        obj,
        [flatten_record(r) for r in records],
        external_id=request.path_params["field"],
        all_or_none=bool(body.get("allOrNone")),
    )
    return JSONResponse([_result_json(r, upsert=True) for r in results])


async def collection_retrieve(request: Request) -> Response:
    obj = _object(request)
    if isinstance(obj, Response):
        return obj
    emu = _emu(request)
    if request.method == "POST":
        body = await _json_body(request) or {}
        ids, fields = body.get("ids", []), body.get("fields", [])
    else:
        ids = [i for i in request.query_params.get("ids", "").split(",") if i]
        fields = [f for f in request.query_params.get("fields", "").split(",") if f]
    if len(ids) > 2000:
        return sf_error(400, "EXCEEDED_ID_LIMIT", "Maximum number of ids allowed is 2000")
    out: list[Any] = []
    for raw in ids:
        rid = to_18(raw)
        stored = emu.store.get(obj, rid) if rid else None
        out.append(
            None if stored is None or stored["IsDeleted"] else record_body(emu, obj, stored, _version(request), fields)
        )
    return JSONResponse(out)


# ---------------------------------------------------------------- query


class QueryCursors:
    """Materialised query results, paged by nextRecordsUrl like Salesforce's server-side cursors."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cursors: dict[str, tuple[Any, list[tuple[Any, ...]]]] = {}

    def put(self, cq: Any, rows: list[tuple[Any, ...]]) -> str:
        locator = "01g5g" + secrets.token_hex(6).upper()
        with self.lock:
            # Keep memory bounded: Salesforce expires idle cursors too.
            if len(self.cursors) > 200:
                self.cursors.pop(next(iter(self.cursors)))
            self.cursors[locator] = (cq, rows)
        return locator

    def get(self, locator: str) -> tuple[Any, list[tuple[Any, ...]]] | None:
        with self.lock:
            return self.cursors.get(locator)


def _cursors(emu: Emulator) -> QueryCursors:
    return emu.extensions.setdefault("query_cursors", QueryCursors())


def _batch_size(request: Request) -> int:
    options = request.headers.get("sforce-query-options", "")
    for part in options.split(","):
        key, _, value = part.partition("=")
        if key.strip().lower() == "batchsize" and value.strip().isdigit():
            return min(max(int(value), 200), QUERY_BATCH)
    return QUERY_BATCH


def _page(request: Request, endpoint: str, locator: str, cq: Any, rows: list[tuple[Any, ...]], start: int):
    version = _version(request)
    size = _batch_size(request)
    chunk = rows[start : start + size]
    done = start + size >= len(rows)
    body: dict[str, Any] = {"totalSize": len(rows), "done": done}
    if not done:
        body["nextRecordsUrl"] = f"/services/data/v{version}/{endpoint}/{locator}-{start + size}"
    body["records"] = [record_json(cq, row, version) for row in chunk]
    return JSONResponse(body)


async def query(request: Request) -> Response:
    emu = _emu(request)
    endpoint = "queryAll" if request.url.path.rstrip("/").endswith("queryAll") else "query"
    soql = request.query_params.get("q")
    if not soql:
        return sf_error(400, "MALFORMED_QUERY", "A query string is required (parameter q)")
    try:
        cq = compile_query(soql, emu.schema, include_deleted=endpoint == "queryAll")
    except SoqlError as exc:
        return sf_error(400, exc.error_code, exc.message)
    rows = emu.store.execute(cq.sql, cq.params)
    if cq.is_count:
        return JSONResponse({"totalSize": rows[0][0] if rows else 0, "done": True, "records": []})
    locator = _cursors(emu).put(cq, rows) if len(rows) > _batch_size(request) else ""
    return _page(request, endpoint, locator, cq, rows, 0)


async def query_more(request: Request) -> Response:
    emu = _emu(request)
    endpoint = "queryAll" if "/queryAll/" in request.url.path else "query"
    locator, _, start = request.path_params["locator"].rpartition("-")
    cursor = _cursors(emu).get(locator)
    if cursor is None or not start.isdigit():
        return sf_error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
    cq, rows = cursor
    return _page(request, endpoint, locator, cq, rows, int(start))


def routes() -> list[Route]:
    base = "/services/data/v{version}"
    return [
        Route("/services/data", versions, methods=["GET"]),
        Route(base, resources, methods=["GET"]),
        Route(f"{base}/limits", limits, methods=["GET"]),
        Route(f"{base}/sobjects", global_describe, methods=["GET"]),
        Route(f"{base}/sobjects/{{sobject}}", sobject_basic, methods=["GET", "POST"]),
        Route(f"{base}/sobjects/{{sobject}}/describe", sobject_describe, methods=["GET"]),
        Route(f"{base}/sobjects/{{sobject}}/{{record_id}}", record, methods=["GET", "PATCH", "DELETE"]),
        Route(
            f"{base}/sobjects/{{sobject}}/{{field}}/{{value:path}}",
            by_external_id,
            methods=["GET", "PATCH", "DELETE"],
        ),
        Route(f"{base}/composite/sobjects", collections, methods=["POST", "PATCH", "DELETE"]),
        Route(f"{base}/composite/sobjects/{{sobject}}", collection_retrieve, methods=["GET", "POST"]),
        Route(f"{base}/composite/sobjects/{{sobject}}/{{field}}", collection_upsert, methods=["PATCH"]),
        Route(f"{base}/query", query, methods=["GET"]),
        Route(f"{base}/queryAll", query, methods=["GET"]),
        Route(f"{base}/query/{{locator}}", query_more, methods=["GET"]),
        Route(f"{base}/queryAll/{{locator}}", query_more, methods=["GET"]),
    ]
