"""Password hashing: argon2id (argon2-cffi) when installed, else scrypt from hashlib
with RFC 7914 parameters. Both kinds verify, so a hash made by either keeps working."""
from __future__ import annotations

import hashlib
import hmac
import secrets

try:
    from argon2 import PasswordHasher
    from argon2.exceptions import InvalidHashError, VerificationError
    _ARGON2: PasswordHasher | None = PasswordHasher()   # RFC 9106 "low memory" profile
except ImportError:  # pragma: no cover - argon2-cffi is a dependency; scrypt is the fallback
    _ARGON2 = None

# RFC 7914 section 2: N = 2^15, r = 8, p = 1 (32 MiB, ~100 ms) for interactive logins.
_LOG2_N, _R, _P = 15, 8, 1
MIN_LENGTH = 10


def _scrypt(password: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=1 << log2_n, r=r, p=p, dklen=32,
                          maxmem=256 * 1024 * 1024)


def hash_password(password: str) -> str:
    if _ARGON2 is not None:
        return _ARGON2.hash(password)
    salt = secrets.token_bytes(16)
    return f"scrypt${_LOG2_N}${_R}${_P}${salt.hex()}${_scrypt(password, salt, _LOG2_N, _R, _P).hex()}"


def check_password(password: str, stored: str | None) -> bool:
    if not stored:
        return False
    if stored.startswith("$argon2"):
        if _ARGON2 is None:
            return False
        try:
            return _ARGON2.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False
    try:
        scheme, log2_n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        again = _scrypt(password, bytes.fromhex(salt), int(log2_n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(again.hex(), key)


def check_strength(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise ValueError(f"a password needs at least {MIN_LENGTH} characters")
