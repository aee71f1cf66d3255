"""API tokens for scripts and the provisioning CLI: 256 random bits shown once, stored
as their sha256; each has scopes (narrowing its user's role), an expiry, can be revoked,
and records when it was last used."""
from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

from sqlalchemy import Connection, select

from fleet_server.auth import users as user_svc
from fleet_server.auth.principal import ALL_SCOPES, ROLE_SCOPES, Principal
from fleet_server.db.auth_schema import api_tokens

PREFIX = "cft_"
MAX_DAYS = 3650
# last_used_s is written at most this often per token: a busy script would otherwise
# turn every read into a write.
LAST_USED_EVERY_S = 60.0


class TokenError(ValueError):
    pass


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_scopes(text: str | list[str] | None, role: str) -> frozenset[str]:
    """Scopes asked for, checked against the role (None/empty = everything the role has)."""
    if text is None or text == "" or text == []:
        return ROLE_SCOPES[role]
    wanted = set(text.replace(",", " ").split()) if isinstance(text, str) else set(text)
    unknown = wanted - set(ALL_SCOPES)
    if unknown:
        raise TokenError(f"unknown scope {', '.join(sorted(unknown))}; scopes are {', '.join(ALL_SCOPES)}")
    beyond = wanted - ROLE_SCOPES[role]
    if beyond:
        raise TokenError(f"a {role} cannot hold {', '.join(sorted(beyond))}")
    return frozenset(wanted)


def _public(row: Any) -> dict[str, Any]:
    return {"id": row.id, "user_id": row.user_id, "name": row.name, "scopes": row.scopes.split(),
            "created_s": row.created_s, "expires_s": row.expires_s, "revoked_s": row.revoked_s,
            "last_used_s": row.last_used_s}


def create_token(conn: Connection, user: user_svc.User, *, name: str, scopes: frozenset[str] | None = None,
                 expires_days: float | None = 90, now_s: float | None = None) -> tuple[str, dict[str, Any]]:
    """(the token, shown this once; its public row)."""
    now_s = time.time() if now_s is None else now_s
    if not 1 <= len(name) <= 64:
        raise TokenError("a token name is 1-64 characters")
    if expires_days is not None and not 0 < expires_days <= MAX_DAYS:
        raise TokenError(f"expires_days must be 1..{MAX_DAYS} (or none)")
    scopes = ROLE_SCOPES[user.role] if scopes is None else scopes
    token = PREFIX + secrets.token_urlsafe(32)          # 256 bits
    token_id = conn.execute(api_tokens.insert().values(
        user_id=user.id, name=name, token_sha256=digest(token), scopes=" ".join(sorted(scopes)),
        created_s=now_s, expires_s=None if expires_days is None else now_s + expires_days * 86400
    )).inserted_primary_key[0]
    return token, get_token(conn, token_id)


def get_token(conn: Connection, token_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(api_tokens).where(api_tokens.c.id == token_id)).first()
    return None if row is None else _public(row)


def list_tokens(conn: Connection, user_id: int | None = None) -> list[dict[str, Any]]:
    stmt = select(api_tokens).order_by(api_tokens.c.id)
    if user_id is not None:
        stmt = stmt.where(api_tokens.c.user_id == user_id)
    return [_public(r) for r in conn.execute(stmt)]


def revoke_token(conn: Connection, token_id: int, *, now_s: float | None = None) -> dict[str, Any] | None:
    now_s = time.time() if now_s is None else now_s
    conn.execute(api_tokens.update().where(api_tokens.c.id == token_id, api_tokens.c.revoked_s.is_(None))
                 .values(revoked_s=now_s))
    return get_token(conn, token_id)


def authenticate(conn: Connection, token: str, *, now_s: float | None = None) -> tuple[Principal, bool] | None:
    """(principal, last_used due for an update) for a live token of an active user;
    None for an unknown, expired or revoked token."""
    now_s = time.time() if now_s is None else now_s
    if not token.startswith(PREFIX) or len(token) > 128:
        return None
    row = conn.execute(select(api_tokens).where(api_tokens.c.token_sha256 == digest(token))).first()
    if row is None or row.revoked_s is not None or (row.expires_s is not None and row.expires_s <= now_s):
        return None
    user = user_svc.get_user(conn, row.user_id)
    if user is None or not user.active:
        return None
    principal = user_svc.principal_for(user, scopes=frozenset(row.scopes.split()), via="token", token_id=row.id)
    return principal, row.last_used_s is None or now_s - row.last_used_s >= LAST_USED_EVERY_S


def touch(conn: Connection, token_id: int, now_s: float | None = None) -> None:
    conn.execute(api_tokens.update().where(api_tokens.c.id == token_id)
                 .values(last_used_s=time.time() if now_s is None else now_s))
