"""The ASGI application: routes, session checks, fault injection and the admin endpoints."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from . import auth, bulk1, bulk2, rest
from .schema import OrgSchema
from .state import Credentials, Emulator, Faults, sf_error
from .store import RequestError, Store

# Paths that are the Salesforce API proper: they need a session, count against limits and
# are subject to injected faults. Auth and the admin endpoints are not.
_API_PREFIXES = ("/services/data/v", "/services/async/")


class _Gate:
    """ASGI middleware: trailing-slash folding, session check, call counting and faults."""

    def __init__(self, app: ASGIApp, emu: Emulator) -> None:
        self.app = app
        self.emu = emu

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        # Salesforce treats /sobjects/ and /sobjects alike; Starlette would redirect instead.
        if len(path) > 1 and path.endswith("/"):
            scope = {**scope, "path": path.rstrip("/")}
            path = scope["path"]
        if path.startswith(_API_PREFIXES):
            request = Request(scope)
            faults = self.emu.faults
            bulk1 = path.startswith("/services/async/")
            if auth.session_of(self.emu, request) is None:
                await _bulk1_or_rest(
                    bulk1, 401, "InvalidSessionId", "INVALID_SESSION_ID", "Session expired or invalid"
                )(scope, receive, send)
                return
            calls = self.emu.count_call()
            if faults.latency_ms > 0:
                with self.emu.lock:
                    self.emu.delayed_calls += 1
                await asyncio.sleep(faults.latency_ms / 1000)
            if faults.request_limit is not None and calls > faults.request_limit:
                await _bulk1_or_rest(
                    bulk1, 403, "ExceededQuota", "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."
                )(scope, receive, send)
                return
            if faults.error_503_rate > 0 and self.emu.store.rng.random() < faults.error_503_rate:
                await _bulk1_or_rest(
                    bulk1, 503, "ServerUnavailable", "SERVER_UNAVAILABLE", "Server temporarily unavailable."
                )(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _bulk1_or_rest(bulk1: bool, status: int, exception_code: str, error_code: str, message: str) -> Response:
    if bulk1:
        return JSONResponse({"exceptionCode": exception_code, "exceptionMessage": message}, status_code=status)
    return sf_error(status, error_code, message)


# ---------------------------------------------------------------- admin endpoints


async def admin_health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def admin_reset(request: Request) -> Response:
    emu: Emulator = request.app.state.emulator
    # Bulk workers stop first, so a batch in flight cannot write into the freshly wiped store.
    for ext in emu.extensions.values():
        reset = getattr(ext, "reset", None)
        if reset is not None:
            reset()
    # Faults off first: the reset re-creates the seed records, which an injected fault must not hit.
    emu.set_faults(**Faults().as_dict())
    emu.store.reset()
    with emu.lock:
        emu.api_calls = 0
        emu.delayed_calls = 0
    return JSONResponse({"reset": True})


async def admin_faults(request: Request) -> Response:
    emu: Emulator = request.app.state.emulator
    if request.method in {"PUT", "POST", "PATCH"}:
        try:
            changes = json.loads(await request.body() or b"{}")
            emu.set_faults(**changes)
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": f"bad fault settings: {exc}", "known": list(Faults().as_dict())}, 400)
    return JSONResponse({**emu.faults.as_dict(), "api_calls": emu.api_calls, "delayed_calls": emu.delayed_calls})


async def admin_export(request: Request) -> Response:
    emu: Emulator = request.app.state.emulator
    obj = emu.schema.get(request.path_params["sobject"])
    if obj is None:
        return JSONResponse({"error": f"unknown sObject {request.path_params['sobject']}"}, 404)
    include_deleted = request.query_params.get("include_deleted", "true").lower() == "true"
    return JSONResponse({"sobject": obj.name, "records": emu.store.export(obj, include_deleted)})


def _admin_routes() -> list[Route]:
    return [
        Route("/__emulator/health", admin_health, methods=["GET"]),
        Route("/__emulator/reset", admin_reset, methods=["POST"]),
        Route("/__emulator/faults", admin_faults, methods=["GET", "PUT", "POST", "PATCH"]),
        Route("/__emulator/export/{sobject}", admin_export, methods=["GET"]),
    ]


async def _request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return sf_error(exc.status, exc.error_code, exc.message)


def create_app(
    schema: OrgSchema,
    *,
    db_path: str | None = None,
    credentials: Credentials | None = None,
    faults: Faults | None = None,
    max_upload_bytes: int | None = None,
    seed: int | None = None,
) -> Any:
    """Build the emulator app for an org schema, storing records in memory or in `db_path`."""
    emu = Emulator(schema=schema, store=Store(schema, db_path, seed=seed), credentials=credentials or Credentials())
    if max_upload_bytes is not None:
        emu.max_upload_bytes = max_upload_bytes
    emu.set_faults(**(faults or Faults()).as_dict())
    routes = [*auth.routes(), *rest.routes(), *bulk2.routes(emu), *bulk1.routes(emu), *_admin_routes()]
    app = Starlette(routes=routes, exception_handlers={RequestError: _request_error})
    app.state.emulator = emu
    app.router.redirect_slashes = False
    return _Gate(app, emu)
