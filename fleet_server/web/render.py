"""The Jinja2 environment of the dashboards and the per-request context: the chosen
locale (and the cookie that keeps it), the language-switch link, the formatter."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from fleet_server.web.i18n import COOKIE, LOCALES, Formatter, negotiate

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
COOKIE_MAX_AGE_S = 365 * 86400

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))


def formatter(request: Request) -> Formatter:
    return Formatter(negotiate(request.query_params.get("lang"), request.cookies.get(COOKIE),
                               request.headers.get("accept-language")))


def page(request: Request, name: str, context: dict[str, Any], *, status_code: int = 200) -> HTMLResponse:
    fmt = formatter(request)
    other = next(x for x in LOCALES if x != fmt.locale)
    switched = request.url.include_query_params(lang=other)
    response = templates.TemplateResponse(request, name, {
        "fmt": fmt, "t": fmt.t, "locale": fmt.locale, "other_locale": other,
        "switch_url": f"{switched.path}?{switched.query}",
        # The signed-in user (logout link) and the session's CSRF token for every POST form.
        "principal": getattr(request.state, "principal", None),
        "csrf_token": getattr(request.state, "csrf_token", ""), **context}, status_code=status_code)
    response.headers["Vary"] = "Accept-Language, Cookie"
    if request.query_params.get("lang") in LOCALES:
        response.set_cookie(COOKIE, fmt.locale, max_age=COOKIE_MAX_AGE_S, samesite="lax", httponly=True)
    return response
