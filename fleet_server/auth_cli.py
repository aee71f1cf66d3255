"""`campusfleet users ...` and `campusfleet tokens ...`: create the first operator and
other users, and API tokens for scripts and the provisioning CLI. Passwords come from a
prompt or a file, never from an argument (it would show in `ps` and shell history).
Every change is written to the audit log as `cli:<os user>`."""
from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated

import typer

from fleet_server.auth import audit, tokens
from fleet_server.auth import users as user_svc
from fleet_server.auth.principal import ALL_SCOPES, Principal
from fleet_server.db.auth_schema import ROLES

users_app = typer.Typer(help="Web and API users, their roles and passwords.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens (scoped, expiring, revocable).", no_args_is_help=True)
DbOpt = Annotated[str | None, typer.Option("--db", help="SQLAlchemy database URL (default sqlite:///./var/campusfleet.db)")]
PasswordFileOpt = Annotated[Path | None, typer.Option(
    "--password-file", help="read the password from this file's first line (default: prompt)", exists=True,
    dir_okay=False)]


def attach(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")
    app.add_typer(tokens_app, name="tokens")


def _engine(db: str | None):
    from fleet_server.cli import _settings
    from fleet_server.db.engine import make_engine, migrate
    from fleet_server.registry.service import load_regions
    engine = make_engine(_settings(db=db).db)
    migrate(engine)
    with engine.begin() as conn:
        load_regions(conn)    # users name their region; the server loads them at start too
    return engine


def _cli_principal() -> Principal:
    return Principal(None, f"cli:{getpass.getuser()}"[:64], "operator", scopes=frozenset(ALL_SCOPES), via="cli")


def _password(password_file: Path | None) -> str:
    if password_file is not None:
        lines = password_file.read_text(encoding="utf-8").splitlines()
        return lines[0] if lines else ""
    return typer.prompt("password", hide_input=True, confirmation_prompt=True)


@users_app.command("add")
def users_add(name: Annotated[str, typer.Argument(help="username")],
              role: Annotated[str, typer.Option("--role", help=" | ".join(ROLES))],
              region: Annotated[int | None, typer.Option("--region", help="GB/T 2260 code (province/city/county "
                                                         "users; optional for technicians)")] = None,
              school: Annotated[int | None, typer.Option("--school", help="school id (school_admin)")] = None,
              password_file: PasswordFileOpt = None,
              no_password: Annotated[bool, typer.Option("--no-password", help="token-only account (scripts)")] = False,
              db: DbOpt = None) -> None:
    """Create a user. The first operator: `campusfleet users add --role operator admin`."""
    password = None if no_password else _password(password_file)
    engine = _engine(db)
    try:
        with engine.begin() as conn:
            user = user_svc.create_user(conn, name, role, password=password, region_code=region, school_id=school)
            audit.record(conn, _cli_principal(), "user.create", ("user", user.id),
                         {"username": name, "role": role, "region_code": region, "school_id": school})
    except user_svc.UserError as e:
        raise typer.BadParameter(str(e)) from None
    finally:
        engine.dispose()
    typer.echo(f"user {user.username} ({user.role}) created, id {user.id}")


@users_app.command("list")
def users_list(db: DbOpt = None) -> None:
    engine = _engine(db)
    with engine.connect() as conn:
        for u in user_svc.list_users(conn):
            place = f"region {u.region_code}" if u.region_code else f"school {u.school_id}" if u.school_id else "all"
            typer.echo(f"{u.id:>4}  {u.username:<24} {u.role:<13} {place:<16} "
                       f"{'active' if u.active else 'disabled'}")
    engine.dispose()


@users_app.command("passwd")
def users_passwd(name: str, password_file: PasswordFileOpt = None, db: DbOpt = None) -> None:
    """Set a new password (also lifts a lockout)."""
    password = _password(password_file)
    _change(name, db, "user.password", password=password)


@users_app.command("disable")
def users_disable(name: str, db: DbOpt = None) -> None:
    """Disable a user: its sessions and tokens stop working at once."""
    _change(name, db, "user.disable", active=False)


@users_app.command("enable")
def users_enable(name: str, db: DbOpt = None) -> None:
    """Enable a user again (also lifts a lockout)."""
    _change(name, db, "user.enable", active=True)


def _change(name: str, db: str | None, action: str, **change) -> None:
    engine = _engine(db)
    try:
        with engine.begin() as conn:
            user = user_svc.get_user_by_name(conn, name)
            if user is None:
                raise typer.BadParameter(f"no user {name!r}")
            user_svc.update_user(conn, user.id, **change)
            audit.record(conn, _cli_principal(), action, ("user", user.id), {"username": name})
    except user_svc.UserError as e:
        raise typer.BadParameter(str(e)) from None
    finally:
        engine.dispose()
    typer.echo(f"{name}: {action.split('.')[1]} done")


@tokens_app.command("create")
def tokens_create(user: Annotated[str, typer.Option("--user", help="whose token")],
                  scope: Annotated[list[str] | None, typer.Option(
                      "--scope", help=f"repeatable; default every scope of the role: {', '.join(ALL_SCOPES)}")] = None,
                  expires_days: Annotated[float, typer.Option("--expires-days", min=0,
                                                              help="0 = never expires")] = 90,
                  name: Annotated[str, typer.Option("--name", help="what it is for")] = "cli",
                  db: DbOpt = None) -> None:
    """Create an API token and print it once (the server keeps only its sha256)."""
    engine = _engine(db)
    try:
        with engine.begin() as conn:
            owner = user_svc.get_user_by_name(conn, user)
            if owner is None:
                raise typer.BadParameter(f"no user {user!r}")
            scopes = tokens.parse_scopes(scope, owner.role)
            token, row = tokens.create_token(conn, owner, name=name, scopes=scopes,
                                             expires_days=expires_days or None)
            audit.record(conn, _cli_principal(), "token.create", ("token", row["id"]),
                         {"user": user, "name": name, "scopes": row["scopes"], "expires_s": row["expires_s"]})
    except tokens.TokenError as e:
        raise typer.BadParameter(str(e)) from None
    finally:
        engine.dispose()
    typer.echo(f"token {row['id']} for {user} ({' '.join(row['scopes'])}); shown once, keep it safe:", err=True)
    typer.echo(token)


@tokens_app.command("list")
def tokens_list(user: Annotated[str | None, typer.Option("--user")] = None, db: DbOpt = None) -> None:
    engine = _engine(db)
    with engine.connect() as conn:
        owner_id = None
        if user is not None:
            owner = user_svc.get_user_by_name(conn, user)
            if owner is None:
                raise typer.BadParameter(f"no user {user!r}")
            owner_id = owner.id
        for t in tokens.list_tokens(conn, owner_id):
            state = "revoked" if t["revoked_s"] else "live"
            typer.echo(f"{t['id']:>4}  user {t['user_id']:<4} {t['name']:<20} {state:<8} {' '.join(t['scopes'])}")
    engine.dispose()


@tokens_app.command("revoke")
def tokens_revoke(token_id: int, db: DbOpt = None) -> None:
    engine = _engine(db)
    with engine.begin() as conn:
        row = tokens.revoke_token(conn, token_id)
        if row is None:
            raise typer.BadParameter(f"no token {token_id}")
        audit.record(conn, _cli_principal(), "token.revoke", ("token", token_id), {"user_id": row["user_id"]})
    engine.dispose()
    typer.echo(f"token {token_id} revoked")
