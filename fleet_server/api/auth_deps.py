"""Authentication and authorization as FastAPI dependencies: the Principal from an
`Authorization: Bearer` API token or the signed session cookie (with its CSRF check on
unsafe methods), `require(scope)` for routers and endpoints, and the 401/403 handlers."""
from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qs, quote

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from fleet_server.auth import sessions, tokens
from fleet_server.auth import users as user_svc
from fleet_server.auth.errors import Forbidden, NotAuthenticated
from fleet_server.auth.principal import Principal
from fleet_server.auth.scoping import require_scope

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


def install(app: FastAPI) -> None:
    app.add_exception_handler(NotAuthenticated, _not_authenticated)
    app.add_exception_handler(Forbidden, _forbidden)
