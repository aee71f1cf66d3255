"""Users, API tokens, the server's own signing secrets and the append-only audit log
(issue 7, docs/security.md "Users, roles and audit")."""
from sqlalchemy import (
    Boolean, CheckConstraint, Column, Float, ForeignKey, Index, Integer, String, Table, Text,
    UniqueConstraint,
)

from fleet_server.db.schema import metadata

ROLES = ("province", "city", "county", "school_admin", "technician", "operator")

users = Table(
    "users", metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("region_code", Integer, ForeignKey("regions.code", name="fk_users_region")),  # province/city/county
    Column("school_id", Integer, ForeignKey("schools.id", name="fk_users_school")),      # school_admin
    # argon2id ("$argon2id$...") or "scrypt$log2n$r$p$salt$key"; NULL = no web login
    # (a token-only account, e.g. a script's).
    Column("password_hash", String(200)),
    Column("active", Boolean, nullable=False, default=True),
    Column("failed_logins", Integer, nullable=False, default=0),
    Column("locked_until_s", Float),
    Column("created_s", Float, nullable=False),
    Column("last_login_s", Float),
    UniqueConstraint("username", name="uq_users_username"),
    CheckConstraint("role IN ('province', 'city', 'county', 'school_admin', 'technician', 'operator')",
                    name="ck_users_role"),
)

api_tokens = Table(
    "api_tokens", metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", name="fk_api_tokens_user"), nullable=False),
    Column("name", String(64), nullable=False),
    # sha256 of the token: a 256-bit random token needs no slow hash.
    Column("token_sha256", String(64), nullable=False),
    Column("scopes", Text, nullable=False),             # space-separated
    Column("created_s", Float, nullable=False),
    Column("expires_s", Float),                          # NULL = never
    Column("revoked_s", Float),
    Column("last_used_s", Float),
    UniqueConstraint("token_sha256", name="uq_api_tokens_sha256"),
    Index("ix_api_tokens_user_id", "user_id"),
)

# Secrets the server generates once and shares between its API processes (the session
# cookie signing key), so no operator has to make one up.
server_secrets = Table(
    "server_secrets", metadata,
    Column("name", String(32), primary_key=True),
    Column("value", String(128), nullable=False),
    Column("created_s", Float, nullable=False),
)

# Append-only: the 0009 migration adds triggers that refuse UPDATE and DELETE (and
# TRUNCATE on PostgreSQL). Actor columns are copies, not foreign keys, so a row
# outlives its user.
audit_log = Table(
    "audit_log", metadata,
    Column("id", Integer, primary_key=True),
    Column("at_s", Float, nullable=False),
    Column("actor", String(64), nullable=False),         # username, or "system"/"anonymous"
    Column("actor_id", Integer),
    Column("role", String(16)),
    Column("action", String(48), nullable=False),        # e.g. device.assign, login.failure
    Column("target_kind", String(16)),                   # device, room, school, user, token, firmware, alert, import
    Column("target_id", String(128)),
    Column("detail", Text),                              # JSON object
    Column("ip", String(64)),
    Index("ix_audit_log_at_s", "at_s"),
    Index("ix_audit_log_target", "target_kind", "target_id"),
)
