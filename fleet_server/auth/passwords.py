"""Secret hashing, the one module for it: people's passwords (users) and machine-made
secrets (devices' MQTT secrets, fleet_server.security.credentials) are hashed and
checked here, and both kinds of stored hash verify through the same check().

Two strengths, one format family:
- a password someone chose: argon2id (argon2-cffi, RFC 9106 "low memory" profile), or
  scrypt with N = 2^15 when argon2-cffi is missing (RFC 7914 section 2, ~100 ms);
- a device secret: 192 random bits, so no guessing to slow down, and the embedded broker
  checks it at every connect: scrypt with N = 2^14, r = 8, p = 1 (16 MiB, ~50 ms).

Stored forms: `$argon2id$...` (argon2's own PHC string) and
`scrypt$<log2 N>$<r>$<p>$<salt hex>$<key hex>` (both former modules wrote exactly this,
so every hash stored before the merge still verifies). A password hash that is weaker
than today's (scrypt, or argon2 with older parameters) is replaced at the next
successful login (needs_rehash, fleet_server.auth.users.authenticate)."""
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
PASSWORD_SCRYPT = (15, 8, 1)
# Random device secrets: N = 2^14, r = 8, p = 1 (16 MiB, ~50 ms).
SECRET_SCRYPT = (14, 8, 1)
MIN_LENGTH = 10
_SALT_BYTES = 16
_KEY_BYTES = 32
_MAXMEM = 256 * 1024 * 1024     # hashlib's default (32 MiB) is too small for N = 2^15, r = 8


def _scrypt(secret: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=1 << log2_n, r=r, p=p, dklen=_KEY_BYTES, maxmem=_MAXMEM)


def hash_secret(secret: str, salt: bytes | None = None, log2_n: int = SECRET_SCRYPT[0],
                r: int = SECRET_SCRYPT[1], p: int = SECRET_SCRYPT[2]) -> str:
    """An scrypt hash in the stored form (device secrets; passwords without argon2)."""
    salt = salt or secrets.token_bytes(_SALT_BYTES)
    return f"scrypt${log2_n}${r}${p}${salt.hex()}${_scrypt(secret, salt, log2_n, r, p).hex()}"


def hash_password(password: str) -> str:
    if _ARGON2 is not None:
        return _ARGON2.hash(password)
    return hash_secret(password, None, *PASSWORD_SCRYPT)


def check(secret: str | None, stored: str | None) -> bool:
    """Whether `secret` matches a stored hash of either form (constant-time compare).
    Anything else stored (None, the `revoked` marker, garbage) matches nothing."""
    if not secret or not stored:
        return False
    if stored.startswith("$argon2"):
        if _ARGON2 is None:
            return False
        try:
            return _ARGON2.verify(stored, secret)
        except (VerificationError, InvalidHashError):
            return False
    try:
        scheme, log2_n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt" or not (1 <= int(log2_n) <= 20 and 1 <= int(r) <= 32 and 1 <= int(p) <= 16):
            return False
        again = _scrypt(secret, bytes.fromhex(salt), int(log2_n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(again.hex(), key.lower())


# The names each former module had; both are the same check.
check_password = check
check_secret = check


def needs_rehash(stored: str | None) -> bool:
    """A password hash that today's hash_password would not make (checked after a
    successful login, when the password is at hand to hash again)."""
    if not stored:
        return False
    if _ARGON2 is None:
        return not stored.startswith("scrypt$") or stored.split("$")[1:4] != [str(x) for x in PASSWORD_SCRYPT]
    if not stored.startswith("$argon2"):
        return True
    try:
        return _ARGON2.check_needs_rehash(stored)
    except (InvalidHashError, ValueError):
        return True


def check_strength(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise ValueError(f"a password needs at least {MIN_LENGTH} characters")
