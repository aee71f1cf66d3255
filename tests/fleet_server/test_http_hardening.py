"""HTTP hardening (docs/security.md, "Hardening"): request body limits answered 413, and
security headers on every response of the real app, under a real uvicorn."""
from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import uuid

import httpx
import pytest

from fleet_server.security.http import DOCS_CSP, PAGE_CSP, HardeningMiddleware
from fleet_server.settings import Settings
from tests.utils.services import FleetServer

HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


@pytest.fixture(scope="module")
def app_server(mosquitto, tmp_path_factory):
    """The real app on SQLite (no ingest: these tests are about HTTP), with a small body limit."""
    db = tmp_path_factory.mktemp("hardening") / "fleet.db"
    settings = Settings(db=f"sqlite:///{db}", mqtt=mosquitto.url, ingest=False, max_request_bytes=4096,
                        max_upload_bytes=64 * 1024, ingest_client_id=f"ingest-{uuid.uuid4().hex[:8]}")
    srv = FleetServer(settings).start()
    yield srv
    srv.stop()


def _check_common(r: httpx.Response) -> None:
    for k, v in HEADERS.items():
        assert r.headers.get(k) == v, (r.request.url, k, r.headers.get(k))
    assert "camera=()" in r.headers["permissions-policy"]
    assert "strict-transport-security" not in r.headers   # plain HTTP: HSTS only over HTTPS


@pytest.mark.parametrize("path", ["/", "/api/v1/health", "/metrics", "/api/v1/devices/cf-000000000000",
                                  "/no/such/page", "/static/dashboard.css"])
def test_every_response_carries_the_security_headers(app_server, path):
    r = app_server.http.get(path)
    _check_common(r)
    csp = r.headers["content-security-policy"]
    assert csp == PAGE_CSP
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp


def test_api_docs_get_a_policy_that_lets_swagger_ui_load(app_server):
    r = app_server.http.get("/docs")
    _check_common(r)
    assert r.headers["content-security-policy"] == DOCS_CSP
    assert "https://cdn.jsdelivr.net" in DOCS_CSP and "frame-ancestors 'none'" in DOCS_CSP


def test_a_declared_body_over_the_limit_is_refused_413_before_it_is_read(app_server):
    r = app_server.http.post("/api/v1/auth/login", content=b"x" * 5000,
                             headers={"content-type": "application/json"})
    assert r.status_code == 413 and "4096" in r.text
    _check_common(r)


def test_a_body_under_the_limit_reaches_the_route(app_server):
    # The login route reads and validates the body: 422 is its answer to a bad one.
    r = app_server.http.post("/api/v1/auth/login", json={"username": "", "pad": "x" * 3000})
    assert r.status_code == 422 and "username" in r.text


def test_upload_routes_have_the_larger_upload_limit(app_server):
    # Declared lengths: over max_request_bytes but under max_upload_bytes passes the
    # middleware (the route itself then wants a login); over max_upload_bytes does not.
    body = b"code,name\n" + b"x" * 10_000
    r = app_server.http.post("/api/v1/import/schools", content=body, headers={"content-type": "text/csv"})
    assert r.status_code != 413
    r = app_server.http.post("/api/v1/import/schools", content=b"x" * (65 * 1024),
                             headers={"content-type": "text/csv"})
    assert r.status_code == 413


def test_a_streamed_body_without_length_is_cut_off_at_the_limit(app_server):
    """Chunked transfer: no Content-Length to check first; the middleware counts."""
    host, port = "127.0.0.1", app_server.port
    with socket.create_connection((host, port), timeout=5) as s:
        # The login route reads its body (an import would first want a login).
        s.sendall(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"y" * 8192
        try:
            for _ in range(4):       # 32 KB > the 4 KB body limit
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            s.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass                     # the server may close as soon as it has answered
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_middleware_counts_streamed_bodies_and_leaves_small_ones_alone():
    """The middleware alone around an echo app: the body the app sees is the client's."""
    seen: list[bytes] = []

    async def echo(scope, receive, send):
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        seen.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-content-type-options", b"app")]})
        await send({"type": "http.response.body", "body": body})

    app = HardeningMiddleware(echo, max_body=1000)

    async def run(chunks: list[bytes]) -> tuple[int, dict, bytes]:
        msgs = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
        out: list[dict] = []

        async def receive():
            return msgs.pop(0)

        async def send(m):
            out.append(m)

        scope = {"type": "http", "method": "POST", "path": "/x", "headers": [], "scheme": "https"}
        await app(scope, receive, send)
        return out[0]["status"], dict(out[0]["headers"]), b"".join(m.get("body", b"") for m in out[1:])

    status, headers, body = in_fresh_loop(run([b"a" * 600, b"b" * 300]))
    assert status == 200 and body == b"a" * 600 + b"b" * 300 and seen[-1] == body
    # The app's own header wins; ours fill in the rest; HTTPS adds HSTS.
    assert headers[b"x-content-type-options"] == b"app"
    assert headers[b"x-frame-options"] == b"DENY" and headers[b"strict-transport-security"].startswith(b"max-age=")
    status, _, body = in_fresh_loop(run([b"a" * 600, b"b" * 600]))
    assert status == 413 and b"1000" in body


def in_fresh_loop(coro):
    """asyncio.run in a thread of its own: the session's Playwright (browser tests) keeps
    an event loop running in the main thread."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result(30)
