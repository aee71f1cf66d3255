"""Auth API: log in and out (session cookie), the caller's API tokens, users (operators)
and the audit log (operators; JSON or CSV). Thin: parse, authorize, call
fleet_server.auth, record the change in the audit log in the same transaction."""
from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field

from fleet_server.api.auth_deps import PrincipalDep, client_ip, require, session_key
from fleet_server.api.deps import ConnDep
from fleet_server.api.routes.metrics import FormatQ, csv_response
from fleet_server.auth import audit, sessions, throttle, tokens
from fleet_server.auth import users as user_svc
from fleet_server.auth.principal import AUDIT_READ, USERS_MANAGE, Principal
from fleet_server.db.auth_schema import ROLES

router = APIRouter(prefix="/api/v1", tags=["auth"])
Role = Literal["province", "city", "county", "school_admin", "technician", "operator"]
assert set(ROLES) == set(Role.__args__)


class Login(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


def login_throttle(request: Request) -> throttle.LoginThrottle:
    found = getattr(request.app.state, "login_throttle", None)
    if found is None:
        found = request.app.state.login_throttle = throttle.LoginThrottle.from_settings(request.app.state.settings)
    return found


def login(conn, request: Request, response: Response, username: str, password: str) -> dict[str, Any]:
    """Check the client address's login budget, then the password (with lockout), set
    the session cookie, audit the outcome. Shared by this API and the login page
    (fleet_server/web/auth_pages.py)."""
    ip = client_ip(request)
    limiter = login_throttle(request)
    wait_s = limiter.check(ip)
    if wait_s is not None:
        due, suppressed = limiter.audit_due(ip)
        if due:
            audit.record(conn, None, "login.throttled", ("address", limiter.key(ip)), ip=ip, actor=username,
                         detail={"retry_after_s": round(wait_s, 1), "refused_since_last_entry": suppressed})
            conn.commit()
        raise HTTPException(429, "too many logins from this address; try again later",
                            headers={"Retry-After": throttle.retry_after_header(wait_s)})
    try:
        user = user_svc.authenticate(conn, username, password)
    except user_svc.Locked as e:
        audit.record(conn, None, "login.locked", ("user", username), ip=ip, actor=username)
        conn.commit()
        raise HTTPException(429, str(e), headers={"Retry-After": str(max(1, int(e.until_s - time.time())))}) from None
    if user is None:
        audit.record(conn, None, "login.failure", ("user", username), ip=ip, actor=username)
        conn.commit()
        raise HTTPException(401, "wrong username or password")
    principal = user_svc.principal_for(user, via="session", ip=ip)
    audit.record(conn, principal, "login.success", ("user", user.id))
    conn.commit()
    key = session_key(request)
    cookie, session = sessions.issue(key, user.id)
    response.set_cookie(sessions.COOKIE, cookie, max_age=sessions.SESSION_S, httponly=True, samesite="lax",
                        secure=request.url.scheme == "https", path="/")
    return {"username": user.username, "role": user.role, "region_code": user.region_code,
            "school_id": user.school_id, "csrf_token": sessions.csrf_token(key, session)}


@router.post("/auth/login", responses={401: {"description": "wrong username or password"},
                                       429: {"description": "locked after repeated failures, or too many "
                                                            "logins from this address (Retry-After)"}})
def login_api(conn: ConnDep, request: Request, response: Response, body: Login) -> dict:
    """Start a web session: sets the `cf_session` cookie and returns the CSRF token that
    cookie-authenticated POST/PUT/DELETE requests must send as X-CSRF-Token. Five
    failures in a row lock the account for 15 minutes; each client address has a
    budget of attempts (settings login_address_burst / login_address_per_min)."""
    return login(conn, request, response, body.username, body.password)


@router.post("/auth/logout")
def logout(conn: ConnDep, principal: PrincipalDep, response: Response) -> dict:
    if principal.user_id is not None:
        audit.record(conn, principal, "logout", ("user", principal.user_id))
        conn.commit()
    response.delete_cookie(sessions.COOKIE, path="/")
    return {"logged_out": True}


@router.get("/auth/me")
def me(principal: PrincipalDep, request: Request) -> dict:
    return {"username": principal.username, "role": principal.role, "region_code": principal.region_code,
            "school_id": principal.school_id, "scopes": sorted(principal.scopes), "via": principal.via,
            "csrf_token": getattr(request.state, "csrf_token", None)}


# -- API tokens -----------------------------------------------------------------------

class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    scopes: list[str] | None = Field(None, description="default: every scope of the user's role")
    expires_days: float | None = Field(90, gt=0, le=tokens.MAX_DAYS, description="null: never expires")
    user_id: int | None = Field(None, description="operators: make it for another user")


def _token_owner(conn, principal: Principal, user_id: int | None) -> user_svc.User:
    if user_id is not None and user_id != principal.user_id:
        if not principal.has(USERS_MANAGE):
            raise HTTPException(403, "only operators manage other users' tokens")
        owner = user_svc.get_user(conn, user_id)
    else:
        if principal.user_id is None:
            raise HTTPException(422, "the system principal has no tokens; give user_id")
        owner = user_svc.get_user(conn, principal.user_id)
    if owner is None:
        raise HTTPException(404, f"no user {user_id}")
    return owner


@router.get("/auth/tokens")
def list_tokens(conn: ConnDep, principal: PrincipalDep, user_id: int | None = None) -> list[dict]:
    """The caller's tokens (operators: any user's with user_id, or all with user_id=0)."""
    if user_id == 0 and principal.has(USERS_MANAGE):
        return tokens.list_tokens(conn)
    return tokens.list_tokens(conn, _token_owner(conn, principal, user_id).id)


@router.post("/auth/tokens", status_code=201)
def create_token(conn: ConnDep, principal: PrincipalDep, body: TokenCreate) -> dict:
    """A new API token; the token itself is in this reply only (the server keeps its
    sha256). Send it as `Authorization: Bearer <token>`."""
    owner = _token_owner(conn, principal, body.user_id)
    try:
        scopes = tokens.parse_scopes(body.scopes, owner.role)
        # Nobody hands out more than they hold themselves.
        if not scopes <= principal.scopes:
            raise tokens.TokenError(f"you cannot grant {', '.join(sorted(scopes - principal.scopes))}")
        token, row = tokens.create_token(conn, owner, name=body.name, scopes=scopes, expires_days=body.expires_days)
    except tokens.TokenError as e:
        raise HTTPException(422, str(e)) from None
    audit.record(conn, principal, "token.create", ("token", row["id"]),
                 {"user": owner.username, "name": body.name, "scopes": row["scopes"], "expires_s": row["expires_s"]})
    conn.commit()
    return {**row, "token": token}


@router.delete("/auth/tokens/{token_id}")
def revoke_token(conn: ConnDep, principal: PrincipalDep, token_id: int) -> dict:
    row = tokens.get_token(conn, token_id)
    if row is None or (row["user_id"] != principal.user_id and not principal.has(USERS_MANAGE)):
        raise HTTPException(404, f"no token {token_id}")
    row = tokens.revoke_token(conn, token_id)
    audit.record(conn, principal, "token.revoke", ("token", token_id), {"user_id": row["user_id"], "name": row["name"]})
    conn.commit()
    return row


# -- users (operators) ----------------------------------------------------------------

class UserCreate(BaseModel):
    username: str = Field(min_length=2, max_length=64)
    role: Role
    password: str | None = Field(None, min_length=10, max_length=256, description="null: token-only account")
    region_code: int | None = Field(None, description="province / city / county users; optional for technicians")
    school_id: int | None = Field(None, description="school_admin users")


class UserChange(BaseModel):
    role: Role | None = None
    region_code: int | None = None
    school_id: int | None = None
    active: bool | None = None
    password: str | None = Field(None, min_length=10, max_length=256)


@router.get("/users", dependencies=[require(USERS_MANAGE)])
def list_users(conn: ConnDep) -> list[dict]:
    return [u.public() for u in user_svc.list_users(conn)]


@router.post("/users", status_code=201, dependencies=[require(USERS_MANAGE)])
def create_user(conn: ConnDep, principal: PrincipalDep, body: UserCreate) -> dict:
    try:
        user = user_svc.create_user(conn, body.username, body.role, password=body.password,
                                    region_code=body.region_code, school_id=body.school_id)
    except user_svc.UserError as e:
        raise HTTPException(409 if "exists" in str(e) else 422, str(e)) from None
    audit.record(conn, principal, "user.create", ("user", user.id),
                 {"username": user.username, "role": user.role, "region_code": user.region_code,
                  "school_id": user.school_id})
    conn.commit()
    return user.public()


@router.patch("/users/{user_id}", dependencies=[require(USERS_MANAGE)])
def change_user(conn: ConnDep, principal: PrincipalDep, user_id: int, body: UserChange) -> dict:
    """Change role and place, disable (active=false; its sessions and tokens stop
    working at once) or re-enable (also lifts a lockout), or set a new password."""
    given = body.model_fields_set
    place = bool({"role", "region_code", "school_id"} & given)
    try:
        user = user_svc.update_user(conn, user_id, role=body.role, region_code=body.region_code,
                                    school_id=body.school_id, active=body.active, password=body.password,
                                    place_given=place)
    except LookupError as e:
        raise HTTPException(404, str(e)) from None
    except user_svc.UserError as e:
        raise HTTPException(422, str(e)) from None
    detail = {k: getattr(body, k) for k in given if k != "password"}
    if "password" in given:
        detail["password"] = "changed"
    audit.record(conn, principal, "user.change", ("user", user_id), detail)
    conn.commit()
    return user.public()


# -- audit log (operators) ------------------------------------------------------------

def _ts(name: str, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise HTTPException(422, f"{name}: {value!r} is not an ISO 8601 time") from None


@router.get("/audit", response_model=None, dependencies=[require(AUDIT_READ)])
def list_audit(conn: ConnDep, actor: str | None = None,
               action: Annotated[str | None, Query(description="exact, or a prefix ending in '.' (device.)")] = None,
               target_kind: str | None = None, target_id: str | None = None,
               since: Annotated[str | None, Query(description="ISO 8601, inclusive")] = None,
               until: Annotated[str | None, Query(description="ISO 8601, exclusive")] = None,
               format: FormatQ = "json", limit: Annotated[int, Query(ge=1, le=1000)] = 100,
               offset: Annotated[int, Query(ge=0)] = 0) -> Any:
    """Who did what to which device, room, user or firmware, when and from where;
    newest first. CSV: every matching entry."""
    filters = {"actor": actor, "action": action, "target_kind": target_kind, "target_id": target_id,
               "since_s": _ts("since", since), "until_s": _ts("until", until)}
    if format == "csv":
        _, entries = audit.list_entries(conn, limit=None, offset=0, **filters)
        return csv_response(audit.csv_rows(entries), "audit.csv")
    total, entries = audit.list_entries(conn, limit=limit, offset=offset, **filters)
    return {"total": total, "limit": limit, "offset": offset, "items": entries}
