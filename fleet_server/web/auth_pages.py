"""The login page and logout for the dashboards: POST /login checks the password (with
the address throttle and the per-user lockout, fleet_server.auth), sets the session
cookie and goes back where the user was headed; the login form carries a double-submit
CSRF token (a random value in a cookie and in the form) since there is no session yet
to bind one to."""
from __future__ import annotations

import hmac
import secrets
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from fleet_server.api.auth_deps import PrincipalDep
from fleet_server.api.routes import auth as auth_routes
from fleet_server.auth import audit, sessions
from fleet_server.web.pages import form_fields
from fleet_server.web.render import page

router = APIRouter(include_in_schema=False)


def safe_next(target: str | None) -> str:
    """Only a path on this server (no open redirect to another site)."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def _login_page(request: Request, *, next_url: str, error: str | None = None, username: str | None = None,
                status_code: int = 200) -> HTMLResponse:
    token = secrets.token_urlsafe(16)
    response = page(request, "login.html", {"login_csrf": token, "next": next_url, "error": error,
                                            "username": username}, status_code=status_code)
    response.set_cookie(sessions.LOGIN_CSRF_COOKIE, token, max_age=3600, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/login")
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: Annotated[str | None, Query(max_length=500)] = None) -> HTMLResponse:
    return _login_page(request, next_url=safe_next(next))


@router.post("/login")
async def login_submit(request: Request):
    fields = await form_fields(request)
    next_url = safe_next(fields.get("next"))
    cookie = request.cookies.get(sessions.LOGIN_CSRF_COOKIE) or ""
    if not cookie or not hmac.compare_digest(cookie, fields.get("csrf_token", "")):
        return _login_page(request, next_url=next_url, status_code=403,
                           error="The form expired; please log in again. / 表单已过期，请重新登录。")
    username = fields.get("username", "")[:64]
    response = RedirectResponse(next_url, status_code=303)
    with request.app.state.engine.connect() as conn:
        try:
            auth_routes.login(conn, request, response, username, fields.get("password", ""))
        except HTTPException as e:
            if e.status_code == 401:
                message = "Wrong username or password. / 用户名或密码错误。"
            elif "address" in str(e.detail):
                message = f"{e.detail}. / 此地址登录尝试过多，请稍后再试。"
            else:
                message = f"{e.detail} / 登录失败次数过多，账户已暂时锁定。"
            page_ = _login_page(request, next_url=next_url, error=message, username=username,
                                status_code=e.status_code)
            for name, value in (e.headers or {}).items():     # Retry-After on a 429
                page_.headers[name] = value
            return page_
    response.delete_cookie(sessions.LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request, principal: PrincipalDep) -> RedirectResponse:
    """A POST with the session's CSRF token (a link could be triggered by another site)."""
    if principal.user_id is not None:
        with request.app.state.engine.begin() as conn:
            audit.record(conn, principal, "logout", ("user", principal.user_id))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(sessions.COOKIE, path="/")
    return response
