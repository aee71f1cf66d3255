"""Per-device MQTT secrets on the server side: issue, check, rotate, revoke. Only an
scrypt hash of each secret is stored (device_credentials); the secret itself is shown
once, to whoever asked for it (the technician's register call, or a rotate call)."""
from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from pathlib import Path

from sqlalchemy import Connection, select

from fleet_server.db.provisioning_schema import device_credentials

# RFC 7914 parameters: N = 2^14, r = 8, p = 1 (16 MiB, ~50 ms), 16-byte salt, 32-byte key.
_SCRYPT_LOG2_N, _SCRYPT_R, _SCRYPT_P = 14, 8, 1
SECRET_BYTES = 24        # 192 bits of randomness (the issue asks for >= 128)
# Stored in place of a hash when a device's credentials are revoked: it matches no
# secret (check_secret only accepts scrypt), and the row, with its hardware and
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


def hash_secret(secret: str, salt: bytes | None = None, log2_n: int = _SCRYPT_LOG2_N,
                r: int = _SCRYPT_R, p: int = _SCRYPT_P) -> str:
    salt = salt or secrets.token_bytes(16)
    key = hashlib.scrypt(secret.encode(), salt=salt, n=1 << log2_n, r=r, p=p, dklen=32)
    return f"scrypt${log2_n}${r}${p}${salt.hex()}${key.hex()}"


def check_secret(secret: str, stored: str) -> bool:
    """Constant-time comparison of the recomputed hash with the stored one."""
    try:
        scheme, log2_n, r, p, salt, _ = stored.split("$")
        if scheme != "scrypt":
            return False
        again = hash_secret(secret, bytes.fromhex(salt), int(log2_n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(again, stored)


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
