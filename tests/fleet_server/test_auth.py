"""Login, sessions, CSRF, lockout, API tokens and the audit log on a running server
(SQLite and PostgreSQL): anonymous requests are refused, a session cookie works only
with its CSRF token on writes, tokens are scoped, expire and can be revoked, five
failed logins lock an account, and the audit log records changes and refuses edits."""
from __future__ import annotations

import hashlib
import time
from contextlib import closing
import uuid

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError

from fleet_server.auth.principal import READ
from fleet_server.db.auth_schema import api_tokens, audit_log, users
from fleet_server.settings import Settings
from tests.utils.registry_samples import ROOMS, SCHOOLS
from tests.utils.services import FleetServer

PASSWORD = "a-long-enough-password"
DEVICE = "cf-0000a0000001"


def _seed(server) -> dict[str, int]:
    for kind, text in (("schools", SCHOOLS), ("rooms", ROOMS)):
        r = server.http.post(f"/api/v1/import/{kind}", content=text.encode(), headers={"content-type": "text/csv"})
        assert r.status_code == 200, r.text
    school = next(s for s in server.get("/api/v1/schools")["items"] if s["code"] == "S1")
    return {r["code"]: r["id"] for r in server.get(f"/api/v1/schools/{school['id']}/rooms")}


def _login(server, username="alice", password=PASSWORD):
    client = server.client()
    r = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    return client, r


def test_api_refuses_anonymous_requests_but_health_and_metrics_stay_open(server):
    with server.client() as anon:
        r = anon.get("/api/v1/devices")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert anon.get("/api/v1/schools").status_code == 401
        assert anon.put(f"/api/v1/devices/{DEVICE}/room", json={"room_id": None}).status_code == 401
        assert anon.get("/api/v1/health").status_code == 200
        assert anon.get("/metrics").status_code == 200
        # A page sends the browser to the login page and back afterwards.
        r = anon.get("/fleet?offset=0", headers={"accept": "text/html"}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Ffleet%3Foffset%3D0"
        assert anon.get("/login").status_code == 200
        assert anon.get("/api/v1/devices", headers={"authorization": "Bearer cft_nope"}).status_code == 401


def test_login_sets_a_session_cookie_and_stores_only_an_argon2_hash(server):
    server.add_user("alice", "operator", password=PASSWORD)
    client, r = _login(server)
    with closing(client):
        assert r.status_code == 200, r.text
        assert r.json()["role"] == "operator" and r.json()["csrf_token"]
        cookie = r.headers["set-cookie"]
        assert "cf_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
        me = client.get("/api/v1/auth/me").json()
        assert me["username"] == "alice" and me["via"] == "session" and READ in me["scopes"]
        assert client.get("/api/v1/devices").status_code == 200
        # A tampered cookie is no session.
        value = client.cookies["cf_session"]
        client.cookies.set("cf_session", value[:-2] + ("AA" if not value.endswith("AA") else "BB"))
        assert client.get("/api/v1/devices").status_code == 401
    with server.app.state.engine.connect() as conn:
        stored = conn.execute(select(users.c.password_hash).where(users.c.username == "alice")).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    _, wrong = _login(server, password="not-the-password")
    assert wrong.status_code == 401
    _, nobody = _login(server, username="nobody")
    assert nobody.status_code == 401


def test_five_failed_logins_lock_the_account_for_fifteen_minutes(server):
    server.add_user("alice", "operator", password=PASSWORD)
    codes = [_login(server, password=f"wrong-{i}")[1].status_code for i in range(5)]
    assert codes == [401, 401, 401, 401, 429]
    # Locked: even the right password is refused, with a Retry-After of ~15 min.
    _, r = _login(server)
    assert r.status_code == 429 and 800 < int(r.headers["retry-after"]) <= 900
    with server.app.state.engine.begin() as conn:
        conn.execute(update(users).where(users.c.username == "alice").values(locked_until_s=time.time() - 1))
    client, r = _login(server)
    client.close()
    assert r.status_code == 200
    entries = server.get("/api/v1/audit", params={"actor": "alice"})["items"]
    actions = [e["action"] for e in reversed(entries)]
    assert actions == ["login.failure"] * 4 + ["login.locked", "login.locked", "login.success"]
    assert all(e["ip"] == "127.0.0.1" for e in entries)


def test_cookie_writes_need_the_csrf_token_and_tokens_do_not(server):
    rooms = _seed(server)
    server.add_user("alice", "operator", password=PASSWORD)
    client, r = _login(server)
    csrf = r.json()["csrf_token"]
    with closing(client):
        body = {"room_id": rooms["A101"]}
        r = client.put(f"/api/v1/devices/{DEVICE}/room", json=body)
        assert r.status_code == 403 and "CSRF" in r.json()["detail"]
        assert client.put(f"/api/v1/devices/{DEVICE}/room", json=body,
                          headers={"x-csrf-token": ("y" if csrf[0] == "x" else "x") + csrf[1:]}).status_code == 403
        r = client.put(f"/api/v1/devices/{DEVICE}/room", json=body, headers={"x-csrf-token": csrf})
        assert r.status_code == 200, r.text
        # The dashboard's form: the hidden csrf_token field is in the page and required.
        page = client.get(f"/fleet/devices/{DEVICE}").text
        assert f'name="csrf_token" value="{csrf}"' in page
        form = {"room_id": str(rooms["A102"])}
        r = client.post(f"/fleet/devices/{DEVICE}/room", data=form, follow_redirects=False)
        assert r.status_code == 403
        r = client.post(f"/fleet/devices/{DEVICE}/room", data={**form, "csrf_token": csrf}, follow_redirects=False)
        assert r.status_code == 303 and "error" not in r.headers["location"]
        assert server.device(DEVICE)["room"]["code"] == "A102"
        # Logging out needs it too, and ends the session in this client.
        assert client.post("/logout", data={}, follow_redirects=False).status_code == 403
        r = client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert client.get("/api/v1/devices").status_code == 401
    # A bearer token is not sent by browsers on their own: no CSRF token needed.
    r = server.http.put(f"/api/v1/devices/{DEVICE}/room", json={"room_id": rooms["A101"]})
    assert r.status_code == 200


def test_login_page_logs_in_and_refuses_a_form_without_its_csrf_cookie(server):
    server.add_user("alice", "operator", password=PASSWORD)
    with server.client() as browser:
        page = browser.get("/login?next=/fleet").text
        token = page.split('name="csrf_token" value="')[1].split('"')[0]
        assert browser.cookies["cf_login_csrf"] == token
        r = browser.post("/login", data={"csrf_token": "forged", "username": "alice", "password": PASSWORD,
                                         "next": "/fleet"}, follow_redirects=False)
        assert r.status_code == 403 and "cf_session" not in r.headers.get("set-cookie", "")
        # Each rendering of the form comes with a fresh token (cookie and field).
        assert token not in r.text
        token = r.text.split('name="csrf_token" value="')[1].split('"')[0]
        r = browser.post("/login", data={"csrf_token": token, "username": "alice", "password": "wrong-password",
                                         "next": "/fleet"}, follow_redirects=False)
        assert r.status_code == 401 and "Wrong username or password" in r.text
        token = r.text.split('name="csrf_token" value="')[1].split('"')[0]
        r = browser.post("/login", data={"csrf_token": token, "username": "alice", "password": PASSWORD,
                                         "next": "https://evil.example/"}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"     # no open redirect
        assert browser.get("/fleet").status_code == 200
        assert 'id="logout"' in browser.get("/fleet").text


def test_tokens_are_scoped_expire_and_can_be_revoked(server):
    rooms = _seed(server)
    server.add_user("alice", "technician")
    read_only = server.token_for("alice", scopes=frozenset({READ}))
    full = server.token_for("alice")
    with server.client(read_only) as c:
        assert c.get("/api/v1/devices").status_code == 200
        assert c.put(f"/api/v1/devices/{DEVICE}/room", json={"room_id": rooms["A101"]}).status_code == 403
    with server.client(full) as c:
        assert c.put(f"/api/v1/devices/{DEVICE}/room", json={"room_id": rooms["A101"]}).status_code == 200
        # Its own tokens: created through the API, never beyond its role.
        r = c.post("/api/v1/auth/tokens", json={"name": "script", "scopes": ["users:manage"]})
        assert r.status_code == 422
        r = c.post("/api/v1/auth/tokens", json={"name": "script", "scopes": ["read"], "expires_days": 1})
        assert r.status_code == 201, r.text
        made = r.json()
        assert made["token"].startswith("cft_") and made["scopes"] == ["read"]
        assert {t["name"] for t in c.get("/api/v1/auth/tokens").json()} == {"tests", "script"}
    with server.app.state.engine.connect() as conn:
        hashes = conn.execute(select(api_tokens.c.token_sha256)).scalars().all()
        last_used = conn.execute(select(api_tokens.c.last_used_s).where(api_tokens.c.name == "tests")).scalars().all()
    assert made["token"] not in hashes and all(len(h) == 64 for h in hashes)
    assert all(t is not None for t in last_used[1:])          # the technician's tokens were used
    with server.client(made["token"]) as c:
        assert c.get("/api/v1/devices").status_code == 200
        assert c.delete(f"/api/v1/auth/tokens/{made['id']}").status_code == 200     # revokes itself
        assert c.get("/api/v1/devices").status_code == 401
    with server.app.state.engine.begin() as conn:
        conn.execute(update(api_tokens).where(api_tokens.c.token_sha256.is_not(None),
                                              api_tokens.c.scopes == "read").values(expires_s=time.time() - 1))
    with server.client(read_only) as c:
        assert c.get("/api/v1/devices").status_code == 401       # expired
    # Disabling the user stops every token of it at once.
    alice = next(u for u in server.get("/api/v1/users") if u["username"] == "alice")
    assert server.http.patch(f"/api/v1/users/{alice['id']}", json={"active": False}).status_code == 200
    with server.client(full) as c:
        assert c.get("/api/v1/devices").status_code == 401


def test_audit_log_records_changes_and_is_exported_only_to_operators(server):
    rooms = _seed(server)
    r = server.http.put(f"/api/v1/devices/{DEVICE}/room", json={"room_id": rooms["A101"]})
    assert r.status_code == 200
    r = server.http.post(f"/api/v1/devices/{DEVICE}/commands", json={"op": "identify"})
    assert r.status_code == 202, r.text
    r = server.http.post("/api/v1/users", json={"username": "carol", "role": "county", "region_code": 330106,
                                                "password": PASSWORD})
    assert r.status_code == 201, r.text
    page = server.get("/api/v1/audit")
    actions = [e["action"] for e in reversed(page["items"])]
    assert actions == ["registry.import", "registry.import", "device.assign", "device.command", "user.create"]
    assign = next(e for e in page["items"] if e["action"] == "device.assign")
    assert assign["actor"] == "test-operator" and assign["role"] == "operator" and assign["ip"] == "127.0.0.1"
    assert (assign["target_kind"], assign["target_id"]) == ("device", DEVICE)
    assert assign["detail"]["room_id"] == rooms["A101"] and assign["detail"]["from_room_id"] is None
    assert server.get("/api/v1/audit", params={"action": "device."})["total"] == 2
    assert server.get("/api/v1/audit", params={"target_kind": "user"})["items"][0]["detail"]["username"] == "carol"
    r = server.http.get("/api/v1/audit", params={"format": "csv", "action": "device.command"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.lstrip("\ufeff").splitlines()
    assert lines[0].startswith("id,at,actor,actor_id,role,action,target_kind,target_id,detail,ip")
    assert len(lines) == 2 and DEVICE in lines[1] and "identify" in lines[1]
    carol_token = server.token_for("carol")
    with server.client(carol_token) as c:
        assert c.get("/api/v1/audit").status_code == 403


def test_audit_log_rows_cannot_be_updated_or_deleted(server):
    server.add_user("alice", "operator", password=PASSWORD)
    _login(server)[0].close()
    engine = server.app.state.engine
    with engine.connect() as conn:
        before = conn.execute(select(audit_log)).all()
    assert [r.action for r in before] == ["login.success"]
    for statement in (update(audit_log).values(actor="mallory"), audit_log.delete()):
        with pytest.raises(DBAPIError, match="append-only"):
            with engine.begin() as conn:
                conn.execute(statement)
    with engine.connect() as conn:
        assert conn.execute(select(audit_log)).all() == before


def test_a_server_with_auth_required_off_serves_anonymous_requests(tmp_path):
    """The setting a throwaway test server may use; `serve` keeps the default (on)."""
    assert Settings().auth_required is True
    srv = FleetServer(Settings(db=f"sqlite:///{tmp_path}/fleet.db", ingest=False, auth_required=False,
                               mqtt="mqtt://127.0.0.1:1", ingest_client_id=f"x-{uuid.uuid4().hex[:6]}")).start()
    try:
        assert srv.token is None
        with srv.client() as anon:
            assert anon.get("/api/v1/devices").status_code == 200
            assert anon.get("/api/v1/auth/me").json()["username"] == "system"
    finally:
        srv.stop()


def test_cli_creates_the_first_operator_and_a_token_printed_once(tmp_path):
    from typer.testing import CliRunner

    from fleet_server.auth import tokens
    from fleet_server.cli import app
    from fleet_server.db.engine import make_engine

    db = f"sqlite:///{tmp_path}/fleet.db"
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    runner = CliRunner()
    r = runner.invoke(app, ["users", "add", "--role", "operator", "admin", "--password-file", str(secret), "--db", db])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["users", "add", "--role", "county", "--region", "330106", "xihu", "--db", db], input="short\nshort\n")
    assert r.exit_code != 0 and "at least 10 characters" in r.output
    r = runner.invoke(app, ["tokens", "create", "--user", "admin", "--scope", "read", "--scope", "audit:read",
                            "--expires-days", "7", "--db", db])
    assert r.exit_code == 0, r.output
    token = r.stdout.strip().splitlines()[-1]
    engine = make_engine(db)
    try:
        with engine.connect() as conn:
            principal, _ = tokens.authenticate(conn, token)
            assert principal.username == "admin" and principal.scopes == {"read", "audit:read"}
            stored = conn.execute(select(users.c.password_hash)).scalar_one()
            entries = conn.execute(select(audit_log.c.action, audit_log.c.actor)).all()
        assert stored.startswith("$argon2id$")
        assert [e.action for e in entries] == ["user.create", "token.create"]
        assert all(e.actor.startswith("cli:") for e in entries)
    finally:
        engine.dispose()


def _old_scrypt_hash(secret: str, log2_n: int, salt: bytes) -> str:
    """The stored form both former hashing modules wrote (auth/passwords.py without
    argon2, security/credentials.py always), computed here without the code under test."""
    key = hashlib.scrypt(secret.encode(), salt=salt, n=1 << log2_n, r=8, p=1, dklen=32, maxmem=256 * 1024 * 1024)
    return f"scrypt${log2_n}$8$1${salt.hex()}${key.hex()}"


def test_one_hashing_module_checks_passwords_and_device_secrets_of_either_form():
    from fleet_server.auth import passwords
    from fleet_server.security import credentials

    device_hash = _old_scrypt_hash("s3cret-device", 14, b"\x01" * 16)
    assert credentials.check_secret is passwords.check and credentials.hash_secret is passwords.hash_secret
    assert credentials.classify(device_hash, "s3cret-device") is credentials.Verdict.OK
    assert credentials.classify(device_hash, "s3cret-devicf") is credentials.Verdict.WRONG
    assert credentials.classify(credentials.REVOKED, "revoked") is credentials.Verdict.REVOKED
    assert not passwords.check("revoked", credentials.REVOKED)
    assert passwords.hash_secret("s3cret-device", b"\x01" * 16) == device_hash      # same form as before
    assert passwords.check(PASSWORD, passwords.hash_password(PASSWORD))
    assert passwords.check(PASSWORD, _old_scrypt_hash(PASSWORD, 15, b"\x02" * 16))
    assert not passwords.check(PASSWORD, "scrypt$30$8$1$00$00")                      # absurd cost: refused
    assert not passwords.check(PASSWORD, "md5$x") and not passwords.check("", device_hash)
    assert passwords.needs_rehash(device_hash) and not passwords.needs_rehash(passwords.hash_password(PASSWORD))


def test_a_password_stored_as_scrypt_logs_in_and_is_rehashed_as_argon2(server):
    server.add_user("alice", "operator", password=PASSWORD)
    old = _old_scrypt_hash(PASSWORD, 15, b"\x03" * 16)
    with server.app.state.engine.begin() as conn:
        conn.execute(update(users).where(users.c.username == "alice").values(password_hash=old))
    _, wrong = _login(server, password="not-the-password")
    assert wrong.status_code == 401
    with server.app.state.engine.connect() as conn:
        assert conn.execute(select(users.c.password_hash).where(users.c.username == "alice")).scalar_one() == old
    client, r = _login(server)
    client.close()
    assert r.status_code == 200, r.text
    with server.app.state.engine.connect() as conn:
        stored = conn.execute(select(users.c.password_hash).where(users.c.username == "alice")).scalar_one()
    assert stored.startswith("$argon2id$")
    client, r = _login(server)
    client.close()
    assert r.status_code == 200
