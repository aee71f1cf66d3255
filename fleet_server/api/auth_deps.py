"""Authentication and authorization as FastAPI dependencies: the Principal from an
`Authorization: Bearer` API token or the signed session cookie (with its CSRF check on
unsafe methods), `require(scope)` for routers and endpoints, and the 401/403 handlers
(with 422 answers for a number in the request that the database cannot hold, and
for invalid requests whose input JSON cannot echo: 1e400, bodies not in UTF-8)."""
from __future__ import annotations

import logging
import math
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy.exc import DataError
from starlette.concurrency import run_in_threadpool

from fleet_server.auth import sessions, tokens
from fleet_server.auth import users as user_svc
from fleet_server.auth.errors import Forbidden, NotAuthenticated
from fleet_server.auth.principal import Principal
from fleet_server.auth.scoping import require_scope

log = logging.getLogger(__name__)
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
MAX_FORM_BYTES = 64 * 1024


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def session_key(request: Request) -> bytes:
    key = getattr(request.app.state, "session_key", None)
    if key is None:
        key = request.app.state.session_key = sessions.load_secret(request.app.state.engine)
    return key


def _from_token(request: Request, token: str) -> Principal:
    engine = request.app.state.engine
    with engine.connect() as conn:
        found = tokens.authenticate(conn, token)
    if found is None:
        raise NotAuthenticated("the API token is unknown, expired or revoked")
    principal, due = found
    if due:
        with engine.begin() as conn:
            tokens.touch(conn, principal.token_id)
    return principal


def _from_session(request: Request) -> tuple[Principal, sessions.Session]:
    key = session_key(request)
    session = sessions.verify(key, request.cookies.get(sessions.COOKIE))
    if session is None:
        raise NotAuthenticated("log in first (POST /api/v1/auth/login or /login), or send an API token")
    with request.app.state.engine.connect() as conn:
        user = user_svc.get_user(conn, session.user_id)
    if user is None or not user.active:
        raise NotAuthenticated("the account of this session is disabled")
    return user_svc.principal_for(user, via="session"), session


async def _presented_csrf(request: Request) -> str | None:
    header = request.headers.get(sessions.CSRF_HEADER)
    if header:
        return header
    if request.headers.get("content-type", "").split(";")[0].strip() == "application/x-www-form-urlencoded":
        body = await request.body()      # cached on the request: the route reads it again
        if len(body) <= MAX_FORM_BYTES:
            return (parse_qs(body.decode("utf-8", "replace")).get(sessions.CSRF_FIELD) or [None])[0]
    return None


async def current_principal(request: Request) -> Principal:
    """Who calls. An API token is not an ambient credential, so only cookie-authenticated
    unsafe requests need the CSRF token (form field or X-CSRF-Token header)."""
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    ip = client_ip(request)
    if not request.app.state.settings.auth_required:
        principal = Principal.system(ip)
    else:
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            principal = (await run_in_threadpool(_from_token, request, auth[7:].strip())).at(ip)
        else:
            principal, session = await run_in_threadpool(_from_session, request)
            principal = principal.at(ip)
            key = session_key(request)
            request.state.csrf_token = sessions.csrf_token(key, session)
            if request.method not in SAFE_METHODS and not sessions.check_csrf(key, session,
                                                                             await _presented_csrf(request)):
                raise Forbidden("missing or wrong CSRF token (reload the page and try again)")
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def require(scope: str):
    """Depends(...) that lets the request through only with `scope`; for
    include_router(dependencies=[...]) or an endpoint's `dependencies=`."""
    def check(principal: PrincipalDep) -> Principal:
        require_scope(principal, scope)
        return principal
    check.__name__ = f"require_{scope.replace(':', '_')}"
    return Depends(check)


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", "")


async def _not_authenticated(request: Request, exc: NotAuthenticated):
    if _wants_html(request):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
    return JSONResponse({"detail": str(exc) or "not authenticated"}, status_code=401,
                        headers={"WWW-Authenticate": "Bearer"})


async def _forbidden(request: Request, exc: Forbidden):
    return JSONResponse({"detail": str(exc) or "forbidden"}, status_code=403)


async def _out_of_range(request: Request, exc: Exception):
    """An id or number past what the database column holds (an int over 2^63 on SQLite
    raises OverflowError, over the column's range on PostgreSQL a DataError): the
    request is wrong, not the server; found by tests/fleet_server/test_fuzz_server.py."""
    log.info("refused %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return JSONResponse({"detail": "a number or value in the request is out of range"}, status_code=422)


MAX_ECHO_CHARS = 1000
MAX_ECHO_DEPTH = 20


def _writable(value: Any, depth: int = 0) -> Any:
    """What FastAPI's 422 answer echoes back (the request's own input), made writable
    as JSON: a number like 1e400 became inf, which JSON has no form for; a body that is
    not UTF-8 stays bytes, which the default answer decodes strictly; a lone surrogate
    (\\ud83d) cannot be encoded; a deeply nested body overflows the stack. Each of these
    answered 500 (found by tests/fleet_server/test_fuzz_server.py). Long inputs are cut."""
    if depth > MAX_ECHO_DEPTH:
        return "..."
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value[:MAX_ECHO_CHARS * 4]).decode("utf-8", "replace")
    if isinstance(value, str):
        value = value if len(value) <= MAX_ECHO_CHARS else value[:MAX_ECHO_CHARS] + "..."
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_writable(k, depth + 1) if isinstance(k, str) else k: _writable(v, depth + 1)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_writable(v, depth + 1) for v in value]
    return value


async def _invalid_request(request: Request, exc: RequestValidationError):
    """FastAPI's own 422 answer, with the echoed input made writable (_writable)."""
    return JSONResponse({"detail": jsonable_encoder(_writable(list(exc.errors())))}, status_code=422)


def install(app: FastAPI) -> None:
    app.add_exception_handler(NotAuthenticated, _not_authenticated)
    app.add_exception_handler(Forbidden, _forbidden)
    app.add_exception_handler(OverflowError, _out_of_range)
    app.add_exception_handler(DataError, _out_of_range)
    app.add_exception_handler(RequestValidationError, _invalid_request)
