"""Users: create, look up, change, and check a password with lockout (5 failures in a
row lock the account for 15 minutes). Takes the connection; the caller commits."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from fleet_server.auth.passwords import check_password, check_strength, hash_password, needs_rehash
from fleet_server.auth.principal import REGION_ROLES, ROLE_SCOPES, Principal
from fleet_server.db.auth_schema import ROLES, users
from fleet_server.db.registry_schema import regions, schools

MAX_FAILURES = 5
LOCKOUT_S = 15 * 60
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{2,64}$")
# A hash to check against when the user does not exist, so a wrong name costs the
# same time as a wrong password (no user enumeration by timing).
_DUMMY_HASH: list[str] = []


class UserError(ValueError):
    """A user that cannot be created or changed as asked (a 422 or 409 in the API)."""


class Locked(Exception):
    def __init__(self, until_s: float) -> None:
        super().__init__(f"too many failed logins; locked until {time.strftime('%H:%M:%S', time.localtime(until_s))}")
        self.until_s = until_s


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: str
    region_code: int | None
    school_id: int | None
    active: bool
    locked_until_s: float | None
    created_s: float
    last_login_s: float | None
    has_password: bool

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "username": self.username, "role": self.role, "region_code": self.region_code,
                "school_id": self.school_id, "active": self.active, "locked_until_s": self.locked_until_s,
                "created_s": self.created_s, "last_login_s": self.last_login_s, "has_password": self.has_password}


def _user(row: Any) -> User:
    return User(row.id, row.username, row.role, row.region_code, row.school_id, bool(row.active),
                row.locked_until_s, row.created_s, row.last_login_s, row.password_hash is not None)


def _check_place(conn: Connection, role: str, region_code: int | None, school_id: int | None) -> None:
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}")
    if role in REGION_ROLES:
        if region_code is None or school_id is not None:
            raise UserError(f"a {role} user needs --region (a {role} code) and no school")
        level = conn.execute(select(regions.c.level).where(regions.c.code == region_code)).scalar_one_or_none()
        if level != role:
            raise UserError(f"{region_code} is not a {role} (GB/T 2260)" if level else f"no region {region_code}")
    elif role == "school_admin":
        if school_id is None or region_code is not None:
            raise UserError("a school_admin user needs --school (a school id) and no region")
        if conn.execute(select(schools.c.id).where(schools.c.id == school_id)).first() is None:
            raise UserError(f"no school {school_id}")
    elif role == "technician":
        if school_id is not None:
            raise UserError("a technician is confined to a region, not a school")
        if region_code is not None and conn.execute(
                select(regions.c.code).where(regions.c.code == region_code)).first() is None:
            raise UserError(f"no region {region_code}")
    elif region_code is not None or school_id is not None:
        raise UserError("an operator sees everything: no region or school")


def create_user(conn: Connection, username: str, role: str, *, password: str | None = None,
                region_code: int | None = None, school_id: int | None = None,
                now_s: float | None = None) -> User:
    if not _NAME.match(username):
        raise UserError("a username is 2-64 letters, digits or _ . @ -")
    _check_place(conn, role, region_code, school_id)
    if get_user_by_name(conn, username) is not None:
        raise UserError(f"user {username!r} exists")
    if password is not None:
        try:
            check_strength(password)
        except ValueError as e:
            raise UserError(str(e)) from None
    new_id = conn.execute(users.insert().values(
        username=username, role=role, region_code=region_code, school_id=school_id,
        password_hash=hash_password(password) if password is not None else None, active=True,
        failed_logins=0, created_s=time.time() if now_s is None else now_s)).inserted_primary_key[0]
    return get_user(conn, new_id)


def get_user(conn: Connection, user_id: int) -> User | None:
    row = conn.execute(select(users).where(users.c.id == user_id)).first()
    return None if row is None else _user(row)


def get_user_by_name(conn: Connection, username: str) -> User | None:
    row = conn.execute(select(users).where(users.c.username == username)).first()
    return None if row is None else _user(row)


def list_users(conn: Connection) -> list[User]:
    return [_user(r) for r in conn.execute(select(users).order_by(users.c.username))]


def update_user(conn: Connection, user_id: int, *, role: str | None = None, region_code: int | None = None,
                school_id: int | None = None, active: bool | None = None, password: str | None = None,
                place_given: bool = False) -> User:
    """Change a user. With role (or place_given), region_code/school_id are set as given."""
    user = get_user(conn, user_id)
    if user is None:
        raise LookupError(f"no user {user_id}")
    values: dict[str, Any] = {}
    if role is not None or place_given:
        role = role or user.role
        _check_place(conn, role, region_code, school_id)
        values.update(role=role, region_code=region_code, school_id=school_id)
    if active is not None:
        values["active"] = active
        if active:   # re-enabling also lifts a lockout
            values.update(failed_logins=0, locked_until_s=None)
    if password is not None:
        try:
            check_strength(password)
        except ValueError as e:
            raise UserError(str(e)) from None
        values.update(password_hash=hash_password(password), failed_logins=0, locked_until_s=None)
    if values:
        conn.execute(users.update().where(users.c.id == user_id).values(**values))
    return get_user(conn, user_id)


def authenticate(conn: Connection, username: str, password: str, *, now_s: float | None = None) -> User | None:
    """The user if the password is right. Counts failures; the fifth in a row locks the
    account for LOCKOUT_S (raises Locked, also while locked, even for the right
    password). The caller commits, whatever the outcome, so the count is kept."""
    now_s = time.time() if now_s is None else now_s
    row = conn.execute(select(users).where(users.c.username == username)).first()
    if row is None or not row.active or row.password_hash is None:
        if not _DUMMY_HASH:
            _DUMMY_HASH.append(hash_password("not-a-password"))
        check_password(password, _DUMMY_HASH[0])
        return None
    if row.locked_until_s is not None and row.locked_until_s > now_s:
        raise Locked(row.locked_until_s)
    if check_password(password, row.password_hash):
        values: dict[str, Any] = {"failed_logins": 0, "locked_until_s": None, "last_login_s": now_s}
        if needs_rehash(row.password_hash):
            # An older (scrypt) or weaker hash becomes today's, now that the password is at hand.
            values["password_hash"] = hash_password(password)
        conn.execute(users.update().where(users.c.id == row.id).values(**values))
        return get_user(conn, row.id)
    # A lock that has run out starts a fresh count.
    failures = (0 if row.locked_until_s is not None else row.failed_logins) + 1
    locked = now_s + LOCKOUT_S if failures >= MAX_FAILURES else None
    conn.execute(users.update().where(users.c.id == row.id)
                 .values(failed_logins=0 if locked else failures, locked_until_s=locked))
    if locked is not None:
        raise Locked(locked)
    return None


def principal_for(user: User, *, scopes: frozenset[str] | None = None, via: str, token_id: int | None = None,
                  ip: str | None = None) -> Principal:
    """The user's role decides what it may do; a token narrows that, never widens it."""
    allowed = ROLE_SCOPES[user.role]
    return Principal(user.id, user.username, user.role, region_code=user.region_code, school_id=user.school_id,
                     scopes=allowed if scopes is None else allowed & scopes, via=via, token_id=token_id, ip=ip)
