"""Web sessions: a signed cookie (HMAC-SHA256, stdlib) naming the user, a random
session id and an expiry; the CSRF token of a session is an HMAC of its id
(synchronizer token, OWASP CSRF cheat sheet), put in every form and checked on every
cookie-authenticated POST/PUT/PATCH/DELETE. The signing key lives in server_secrets."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from fleet_server.db.auth_schema import server_secrets

COOKIE = "cf_session"
LOGIN_CSRF_COOKIE = "cf_login_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SESSION_S = 12 * 3600      # a working day; then log in again


@dataclass(frozen=True)
class Session:
    user_id: int
    sid: str
    expires_s: float


def load_secret(engine: Engine, name: str = "session") -> bytes:
    """The signing key, made on first use and shared by every API process."""
    with engine.begin() as conn:
        value = conn.execute(select(server_secrets.c.value).where(server_secrets.c.name == name)).scalar()
        if value is None:
            try:
                with conn.begin_nested():
                    value = secrets.token_hex(32)
                    conn.execute(server_secrets.insert().values(name=name, value=value, created_s=time.time()))
            except IntegrityError:       # another process made it first
                value = conn.execute(select(server_secrets.c.value).where(server_secrets.c.name == name)).scalar_one()
    return bytes.fromhex(value)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, purpose: str, data: str) -> str:
    return _b64(hmac.new(key, f"{purpose}:{data}".encode(), hashlib.sha256).digest())


def issue(key: bytes, user_id: int, *, now_s: float | None = None) -> tuple[str, Session]:
    now_s = time.time() if now_s is None else now_s
    session = Session(user_id, secrets.token_urlsafe(16), now_s + SESSION_S)
    payload = _b64(json.dumps({"u": user_id, "s": session.sid, "e": int(session.expires_s)}).encode())
    return f"{payload}.{_mac(key, 'session', payload)}", session


def verify(key: bytes, cookie: str | None, *, now_s: float | None = None) -> Session | None:
    if not cookie or cookie.count(".") != 1 or len(cookie) > 512:
        return None
    payload, mac = cookie.split(".")
    if not hmac.compare_digest(mac, _mac(key, "session", payload)):
        return None
    try:
        data = json.loads(_unb64(payload))
        session = Session(int(data["u"]), str(data["s"]), float(data["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    if session.expires_s <= (time.time() if now_s is None else now_s):
        return None
    return session


def csrf_token(key: bytes, session: Session) -> str:
    return _mac(key, "csrf", session.sid)


def check_csrf(key: bytes, session: Session, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(presented, csrf_token(key, session))
