"""HTTP hardening for the API and the dashboards, as one plain ASGI middleware
(docs/security.md, "Hardening"):

- a request body size limit: a body over the limit is answered 413 without being read
  to its end, whether the client declared its length (Content-Length) or streams it
  (chunked); upload routes (registry CSV import, firmware bundles) have a larger limit;
- security headers on every response: Content-Security-Policy (`default-src 'self'`,
  `frame-ancestors 'none'`), X-Content-Type-Options, X-Frame-Options DENY,
  Referrer-Policy, Permissions-Policy, Cross-Origin-Opener-Policy, and
  Strict-Transport-Security when the request came over HTTPS.

A reusable rate limiter for logins and the like is fleet_server/ingest/ratelimit.py
(TokenBuckets)."""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MAX_BODY = 1024 * 1024            # JSON bodies and forms are a few KB
DEFAULT_MAX_UPLOAD = 32 * 1024 * 1024     # registry CSVs (a province school list), firmware bundles
# Routes that take files: they get the upload limit.
UPLOAD_PREFIXES = ("/api/v1/import/", "/api/v1/firmware/releases")

# The dashboards are server-rendered with no inline script or style, so the strict
# policy holds for them. FastAPI's /docs and /redoc pages load Swagger UI / ReDoc from
# a CDN and start them with an inline script: they get a policy that allows that.
PAGE_CSP = ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'self'; "
            "form-action 'self'; frame-ancestors 'none'")
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
            "font-src 'self' https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com "
            "https://cdn.redoc.ly; worker-src 'self' blob:; object-src 'none'; base-uri 'self'; "
            "frame-ancestors 'none'")
DOCS_PATHS = ("/docs", "/redoc")
HSTS = "max-age=31536000"

_COMMON = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), usb=(), serial=(), payment=()"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


def _plain(status: int, text: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = text.encode()
    return status, [(b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()), (b"connection", b"close")], body


class HardeningMiddleware:
    """app.add_middleware(HardeningMiddleware, max_body=..., max_upload=...)."""

    def __init__(self, app: ASGIApp, max_body: int = DEFAULT_MAX_BODY, max_upload: int = DEFAULT_MAX_UPLOAD,
                 upload_prefixes: Iterable[str] = UPLOAD_PREFIXES) -> None:
        self.app = app
        self.max_body = max_body
        self.max_upload = max_upload
        self.upload_prefixes = tuple(upload_prefixes)

    def limit_for(self, path: str) -> int:
        return self.max_upload if path.startswith(self.upload_prefixes) else self.max_body

    def headers_for(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        path = scope.get("path", "")
        docs = any(path == p or path.startswith(p + "/") for p in DOCS_PATHS)
        headers = [(b"content-security-policy", (DOCS_CSP if docs else PAGE_CSP).encode()), *_COMMON]
        if scope.get("scheme") == "https":
            headers.append((b"strict-transport-security", HSTS.encode()))
        return headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.headers_for(scope)
        limit = self.limit_for(scope.get("path", ""))
        started = False    # a response has begun (the app's, or our 413)
        answered = False   # we answered 413 ourselves: whatever the app sends is dropped

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if answered:
                return
            if message["type"] == "http.response.start":
                started = True
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in extra if k not in present]
            await send(message)

        async def reject(status: int, text: str) -> None:
            nonlocal answered
            code, headers, body = _plain(status, text)
            await send_with_headers({"type": "http.response.start", "status": code, "headers": headers})
            await send_with_headers({"type": "http.response.body", "body": body})
            answered = True

        declared = None
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    await reject(400, "bad Content-Length")
                    return
        if declared is not None and declared > limit:
            await reject(413, f"request body over {limit} bytes")
            return

        received = 0

        async def counting_receive() -> Message:
            # A streamed (chunked) body: answer 413 as soon as it passes the limit, then
            # tell the app the client is gone (frameworks turn exceptions raised while
            # reading a body into a 400 of their own, so none is raised here).
            nonlocal received
            if answered:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if not started:
                        await reject(413, f"request body over {limit} bytes")
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, counting_receive, send_with_headers)
