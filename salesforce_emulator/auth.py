"""Authentication: OAuth 2.0 token endpoint, SOAP login, and the session check on every API call."""

from __future__ import annotations

import hmac
import re
import time
from xml.sax.saxutils import escape

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .state import ORG_ID, USER_ID, Emulator, sf_error

_SOAP_NS = "urn:partner.soap.sforce.com"


def _same(a: str | None, b: str) -> bool:
    return a is not None and hmac.compare_digest(a.encode(), b.encode())


def _password_ok(emu: Emulator, username: str | None, password: str | None) -> bool:
    creds = emu.credentials
    if not _same(username, creds.username) or password is None:
        return False
    # Salesforce accepts the password with the security token appended.
    return _same(password, creds.password) or _same(password, creds.password + creds.security_token)


def _instance_url(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def session_of(emu: Emulator, request: Request) -> str | None:
    """The session id a request carries (REST bearer or the Bulk 1.0 header), if it is valid."""
    header = request.headers.get("authorization", "")
    token = None
    if header[:7].lower() == "bearer ":
        token = header[7:].strip()
    elif header[:6].lower() == "oauth ":
        token = header[6:].strip()
    else:
        token = request.headers.get("x-sfdc-session")
    if token and token in emu.sessions:
        return token
    return None


def invalid_session() -> JSONResponse:
    return sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid")


async def oauth_token(request: Request) -> Response:
    emu: Emulator = request.app.state.emulator
    form = await request.form()
    grant = form.get("grant_type")
    creds = emu.credentials
    client_id = form.get("client_id")
    client_secret = form.get("client_secret")
    if grant not in {"password", "client_credentials"}:
        return JSONResponse(
            {"error": "unsupported_grant_type", "error_description": "grant type not supported"}, status_code=400
        )
    if not _same(str(client_id) if client_id else None, creds.client_id):
        return JSONResponse({"error": "invalid_client_id", "error_description": "client identifier invalid"}, 400)
    secret_given = grant == "client_credentials" or client_secret is not None
    if secret_given and not _same(str(client_secret) if client_secret else None, creds.client_secret):
        return JSONResponse({"error": "invalid_client", "error_description": "invalid client credentials"}, 400)
    if grant == "password" and not _password_ok(emu, str(form.get("username") or ""), str(form.get("password") or "")):
        return JSONResponse({"error": "invalid_grant", "error_description": "authentication failure"}, 400)
    token = emu.new_session(creds.username)
    base = _instance_url(request)
    return JSONResponse(
        {
            "access_token": token,
            "instance_url": base,
            "id": f"{base}/id/{ORG_ID}/{USER_ID}",
            "token_type": "Bearer",
            "issued_at": str(int(time.time() * 1000)),
            "signature": "ZW11bGF0b3Itc2lnbmF0dXJl",
        }
    )


def _xml_value(body: str, tag: str) -> str | None:
    m = re.search(rf"<(?:\w+:)?{tag}>(.*?)</(?:\w+:)?{tag}>", body, re.S)
    if not m:
        return None
    text = m.group(1)
    for ent, ch in (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&apos;", "'"), ("&amp;", "&")):
        text = text.replace(ent, ch)
    return text


async def soap_login(request: Request) -> Response:
    emu: Emulator = request.app.state.emulator
    version = request.path_params["version"]
    body = (await request.body()).decode("utf-8", "replace")
    if not _password_ok(emu, _xml_value(body, "username"), _xml_value(body, "password")):
        fault = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:sf="urn:fault.partner.soap.sforce.com">'
            "<soapenv:Body><soapenv:Fault><faultcode>sf:INVALID_LOGIN</faultcode>"
            "<faultstring>INVALID_LOGIN: Invalid username, password, security token; or user locked out."
            "</faultstring><detail><sf:LoginFault><sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode>"
            "<sf:exceptionMessage>Invalid username, password, security token; or user locked out."
            "</sf:exceptionMessage></sf:LoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
        )
        return Response(fault, status_code=500, media_type="text/xml")
    token = emu.new_session(emu.credentials.username)
    base = _instance_url(request)
    ok = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        f'xmlns="{_SOAP_NS}"><soapenv:Body><loginResponse><result>'
        f"<metadataServerUrl>{base}/services/Soap/m/{version}/{ORG_ID[:15]}</metadataServerUrl>"
        "<passwordExpired>false</passwordExpired><sandbox>true</sandbox>"
        f"<serverUrl>{base}/services/Soap/u/{version}/{ORG_ID[:15]}</serverUrl>"
        f"<sessionId>{escape(token)}</sessionId><userId>{USER_ID}</userId>"
        f"<userInfo><organizationId>{ORG_ID}</organizationId><userName>{escape(emu.credentials.username)}"
        "</userName></userInfo></result></loginResponse></soapenv:Body></soapenv:Envelope>"
    )
    return Response(ok, media_type="text/xml")


async def identity(request: Request) -> Response:
    emu: Emulator = request.app.state.emulator
    if session_of(emu, request) is None:
        return Response("Bad_OAuth_Token", status_code=403)
    return JSONResponse(
        {
            "id": f"{_instance_url(request)}/id/{ORG_ID}/{USER_ID}",
            "user_id": USER_ID,
            "organization_id": ORG_ID,
            "username": emu.credentials.username,
            "active": True,
        }
    )


def routes() -> list[Route]:
    return [
        Route("/services/oauth2/token", oauth_token, methods=["POST"]),
        Route("/services/Soap/u/{version}", soap_login, methods=["POST"]),
        Route("/id/{org}/{user}", identity, methods=["GET"]),
    ]
