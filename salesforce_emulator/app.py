"""The ASGI application: routes, session checks, fault injection and the admin endpoints."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
            draws: _FaultDraws = self.emu.extensions["fault_draws"]
            if faults.error_503_rate > 0 and draws.draw("503", scope) < faults.error_503_rate:
                with self.emu.lock:
                    self.emu.unavailable_calls += 1
                await _bulk1_or_rest(
                    bulk1, 503, "ServerUnavailable", "SERVER_UNAVAILABLE", "Server temporarily unavailable."
                )(scope, receive, send)
                return
            if faults.timeout_rate > 0 and draws.draw("timeout", scope) < faults.timeout_rate:
                await self._lose_answer(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _lose_answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Do what the call asks, then drop the connection before the answer's body.

        The dangerous case for a client: the call took effect, and it cannot know. The status
        line goes out with a Content-Length the body never fills (so even an empty 201 stays
        incomplete, and a 204 goes out as 200); returning without the body makes the server close
        the connection.
        """
        start: dict[str, Any] = {}
        size = 0

        async def keep(message: Message) -> None:
            nonlocal size
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))

        await self.app(scope, receive, keep)
        with self.emu.lock:
            self.emu.lost_answers += 1
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        status = start.get("status", 200)
        await send(
            {
                "type": "http.response.start",
                # A 204 or 304 has no body by definition: the client would take the headers as the whole answer.
                "status": 200 if status in (204, 304) else status,
                "headers": [*headers, (b"content-length", str(size + 1).encode())],
            }
        )


# A path segment that is a record or job id (15 or 18 characters, with a digit): ids differ between runs.
_ID_SEGMENT = re.compile(r"^(?=.*\d)[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")


class _FaultDraws:
    """The draws of the rate faults (503s, lost answers).

    Without a seed they are random. With one, whether a call is hit depends only on the seed,
    the kind of fault, the call's method and path (ids left out) and how many such calls came
    before: not on how other calls interleave with it. A client's polling, whose count depends
    on timing, then cannot shift the faults of its uploads, and a seeded test sees the same
    faults on every run.
    """

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.counts: dict[tuple[str, str, str], int] = {}

    def reset(self) -> None:
        with self.emu.lock:
            self.counts.clear()

    def draw(self, kind: str, scope: Scope) -> float:
        seed = self.emu.faults.seed
        if seed is None:
            return self.emu.store.rng.random()
        path = "/".join("*" if _ID_SEGMENT.match(part) else part for part in scope["path"].split("/"))
        key = (kind, scope["method"], path)
        with self.emu.lock:
            self.counts[key] = n = self.counts.get(key, 0) + 1
        digest = hashlib.sha256(f"{seed}:{kind}:{key[1]}:{path}:{n}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64


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
        emu.unavailable_calls = 0
        emu.lost_answers = 0
    return JSONResponse({"reset": True})


async def admin_faults(request: Request) -> Response:
    emu: Emulator = request.app.state.emulator
    if request.method in {"PUT", "POST", "PATCH"}:
        try:
            changes = json.loads(await request.body() or b"{}")
            emu.set_faults(**changes)
            if "seed" in changes:
                emu.extensions["fault_draws"].reset()
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": f"bad fault settings: {exc}", "known": list(Faults().as_dict())}, 400)
    counters = {
        "api_calls": emu.api_calls,
        "delayed_calls": emu.delayed_calls,
        "unavailable_calls": emu.unavailable_calls,
        "lost_answers": emu.lost_answers,
    }
    return JSONResponse({**emu.faults.as_dict(), **counters})


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
    emu.extensions["fault_draws"] = _FaultDraws(emu)
    app.state.emulator = emu
    app.router.redirect_slashes = False
    return _Gate(app, emu)
