"""Per-device MQTT secrets on the server side: issue, check, rotate, revoke. Only an
scrypt hash of each secret is stored (device_credentials, hashed by
fleet_server.auth.passwords); the secret itself is shown once, to whoever asked for it
(the technician's register call, or a rotate call)."""
from __future__ import annotations

import enum
import secrets
from pathlib import Path

from sqlalchemy import Connection, select

from fleet_server.auth.passwords import check_secret, hash_secret
from fleet_server.db.provisioning_schema import device_credentials

# Hashing is fleet_server.auth.passwords' (scrypt N = 2^14, r = 8, p = 1 for these
# random secrets); hash_secret / check_secret stay importable from here.
SECRET_BYTES = 24        # 192 bits of randomness (the issue asks for >= 128)
# Stored in place of a hash when a device's credentials are revoked: it matches no
# secret (it is no hash form check_secret knows), and the row, with its hardware and
# firmware, stays. A rotate or a new registration issues a working secret again.
REVOKED = "revoked"


class Verdict(enum.Enum):
    OK = "ok"
    UNKNOWN = "unknown"        # no credentials were ever issued to this device
    REVOKED = "revoked"
    WRONG = "wrong_password"


class NotRegistered(LookupError):
    """The device has no credentials (it was never registered)."""


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def stored_hash(conn: Connection, device_id: str) -> str | None:
    return conn.execute(select(device_credentials.c.password_hash)
                        .where(device_credentials.c.device_id == device_id)).scalar()


def classify(stored: str | None, secret: str | None) -> Verdict:
    if stored is None:
        return Verdict.UNKNOWN
    if stored == REVOKED:
        return Verdict.REVOKED
    return Verdict.OK if secret and check_secret(secret, stored) else Verdict.WRONG


def verify(conn: Connection, device_id: str, secret: str | None) -> Verdict:
    return classify(stored_hash(conn, device_id), secret)


def rotate(conn: Connection, device_id: str, *, now_s: float) -> str:
    """A new secret replaces the old one (which stops working); returned once."""
    if stored_hash(conn, device_id) is None:
        raise NotRegistered(f"device {device_id} has no credentials; register it first")
    secret = new_secret()
    conn.execute(device_credentials.update().where(device_credentials.c.device_id == device_id)
                 .values(password_hash=hash_secret(secret), issued_s=now_s))
    return secret


def revoke(conn: Connection, device_id: str, *, now_s: float) -> None:
    if stored_hash(conn, device_id) is None:
        raise NotRegistered(f"device {device_id} has no credentials; register it first")
    conn.execute(device_credentials.update().where(device_credentials.c.device_id == device_id)
                 .values(password_hash=REVOKED, issued_s=now_s))


def read_secret_file(path: str | Path, what: str) -> str:
    """A secret from a file (first line, surrounding whitespace dropped): secrets are never
    taken from the command line, where `ps` shows them, nor written to logs."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"cannot read the {what} file {p}: {e.strerror or e}") from None
    secret = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not secret:
        raise ValueError(f"the {what} file {p} is empty")
    return secret


# check_secret / hash_secret are fleet_server.auth.passwords', re-exported for the
# provisioning code that imports them from here.
__all__ = ["REVOKED", "SECRET_BYTES", "NotRegistered", "Verdict", "check_secret", "classify", "hash_secret",
           "new_secret", "read_secret_file", "revoke", "rotate", "stored_hash", "verify"]
