"""Login throttling by client address (docs/security.md, "Users, roles and audit"): a
token bucket per address in front of the per-user lockout, on the API login and the
login page alike; a refused attempt gets 429 with Retry-After, is audited (at most once
a minute per address), and costs no password hash and no lockout count. An IPv6 client
counts by its /64. Tested on a running server (SQLite and PostgreSQL), and over ::1."""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from fleet_server.auth.throttle import AUDIT_EVERY_S, LoginThrottle, address_key, retry_after_header
from fleet_server.db.auth_schema import users
from fleet_server.settings import Settings
from tests.utils.postgres import Postgres
from tests.utils.services import FleetServer, needs_ipv6

PASSWORD = "a-long-enough-password"
BURST = 4


def test_address_key_counts_ipv4_by_address_and_ipv6_by_its_64():
    assert address_key("10.1.2.3") == "10.1.2.3"
    assert address_key("10.1.2.3") != address_key("10.1.2.4")
    a, b = address_key("2001:db8:1:2::1"), address_key("2001:db8:1:2:ffff:1:2:3")
    assert a == b == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != a                           # the next /64
    assert address_key("2001:DB8:1:2:0:0:0:1") == a                       # however it is written
    assert address_key("::ffff:10.1.2.3") == "10.1.2.3"                    # IPv4-mapped
    assert address_key("fe80::1%eth0") == "fe80::/64"                      # zone id dropped
    assert address_key("::1", ipv6_prefix=128) == "::1/128"
    assert address_key(None) == "unknown" and address_key("not an address").startswith("other:")


def test_the_bucket_refuses_beyond_the_burst_and_refills_at_the_rate():
    t = LoginThrottle(per_min=60, burst=3)                  # one a second after the burst
    assert [t.check("2001:db8::1", now=100.0) for _ in range(3)] == [None, None, None]
    wait = t.check("2001:db8::2", now=100.0)                # same /64: same budget
    assert wait is not None and 0.9 < wait <= 1.0
    assert t.check("2001:db8:0:1::1", now=100.0) is None    # another /64 has its own
    assert t.check("10.0.0.1", now=100.0) is None
    assert t.check("2001:db8::3", now=101.01) is None       # refilled one
    assert t.check("2001:db8::3", now=101.02) is not None
    assert LoginThrottle(per_min=0, burst=1).check("10.0.0.1") is None    # 0: off
    assert retry_after_header(0.2) == "1" and retry_after_header(9.1) == "10"


def test_a_throttled_address_is_audited_once_a_minute_with_the_count_refused():
    t = LoginThrottle(per_min=1, burst=1)
    assert t.audit_due("10.0.0.1", now=0.0) == (True, 0)
    assert t.audit_due("10.0.0.1", now=1.0) == (False, 0)
    assert t.audit_due("10.0.0.1", now=2.0) == (False, 0)
    assert t.audit_due("10.0.0.2", now=2.0) == (True, 0)
    assert t.audit_due("10.0.0.1", now=AUDIT_EVERY_S + 0.5) == (True, 2)


@pytest.fixture(params=["sqlite", "postgresql"])
def throttled_server(request, mosquitto, tmp_path) -> Iterator[FleetServer]:
    """A server whose addresses have BURST logins, then one every 10 s."""
    pg: Postgres | None = None
    if request.param == "postgresql":
        pg = request.getfixturevalue("postgres")
        db_name = f"throttle_{uuid.uuid4().hex[:12]}"
        db = pg.create_database(db_name)
    else:
        db = f"sqlite:///{tmp_path}/fleet.db"
    srv = FleetServer(Settings(db=db, mqtt=mosquitto.url, ingest=False, login_address_burst=BURST,
                               login_address_per_min=6, ingest_client_id=f"x-{uuid.uuid4().hex[:8]}")).start()
    yield srv
    srv.stop()
    if pg is not None:
        pg.drop_database(db_name)


def _api_login(srv, username: str, password: str) -> httpx.Response:
    with srv.client() as c:
        return c.post("/api/v1/auth/login", json={"username": username, "password": password})


def _page_login(srv, username: str, password: str) -> httpx.Response:
    with srv.client() as browser:
        page = browser.get("/login").text
        token = page.split('name="csrf_token" value="')[1].split('"')[0]
        return browser.post("/login", data={"csrf_token": token, "username": username, "password": password,
                                            "next": "/"}, follow_redirects=False)


def test_password_spraying_from_one_address_is_throttled_on_api_and_page(throttled_server):
    srv = throttled_server
    srv.add_user("alice", "operator", password=PASSWORD)
    # A few passwords over several accounts: the per-user lockout never trips...
    codes = [_api_login(srv, name, f"guess-{i}").status_code
             for i, name in enumerate(["alice", "bob", "carol", "dave"])]
    assert codes == [401] * BURST
    # ...but the address has used its budget: refused, even with the right password.
    r = _api_login(srv, "alice", PASSWORD)
    assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 10, (r.status_code, r.headers)
    assert "address" in r.json()["detail"]
    page = _page_login(srv, "alice", PASSWORD)                  # the login page shares the budget
    assert page.status_code == 429 and 1 <= int(page.headers["retry-after"]) <= 10
    assert "此地址登录尝试过多" in page.text and "cf_session" not in page.headers.get("set-cookie", "")
    for _ in range(3):
        assert _api_login(srv, "eve", "x" * 12).status_code == 429
    # Throttled attempts reach no password check: alice's lockout count is still 1 (the
    # per-user lockout itself, five in a row, is test_auth.py's).
    with srv.app.state.engine.connect() as conn:
        failed = conn.execute(select(users.c.failed_logins).where(users.c.username == "alice")).scalar_one()
    assert failed == 1
    # Audited once (not once per refused attempt), with the address.
    entries = srv.get("/api/v1/audit", params={"action": "login.throttled"})["items"]
    assert len(entries) == 1
    e = entries[0]
    assert e["ip"] == "127.0.0.1" and e["target_kind"] == "address" and e["target_id"] == "127.0.0.1"
    assert e["actor"] == "alice" and 0 < e["detail"]["retry_after_s"] <= 10.0
    # The bucket refills (one every 10 s here): after Retry-After the right password works.
    time.sleep(int(_api_login(srv, "alice", PASSWORD).headers["retry-after"]) + 0.3)
    r = _api_login(srv, "alice", PASSWORD)
    assert r.status_code == 200, r.text
    actions = [x["action"] for x in reversed(srv.get("/api/v1/audit", params={"actor": "alice"})["items"])]
    assert actions == ["login.failure", "login.throttled", "login.success"]


@needs_ipv6
def test_an_ipv6_client_is_throttled_and_audited_by_its_address(mosquitto, tmp_path):
    srv = FleetServer(Settings(db=f"sqlite:///{tmp_path}/fleet.db", mqtt=mosquitto.url, ingest=False,
                                 login_address_burst=2, login_address_per_min=1, login_ipv6_prefix=64,
                                 ingest_client_id=f"x-{uuid.uuid4().hex[:8]}"), host="::1").start()
    try:
        assert [_api_login(srv, "nobody", "guess-guess").status_code for _ in range(2)] == [401, 401]
        r = _api_login(srv, "nobody", "guess-guess")
        assert r.status_code == 429 and 30 <= int(r.headers["retry-after"]) <= 60
        entry = srv.get("/api/v1/audit", params={"action": "login.throttled"})["items"][0]
        assert entry["ip"] == "::1" and entry["target_id"] == "::/64"
    finally:
        srv.stop()
